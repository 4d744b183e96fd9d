"""BIQAN's speed on this machine: training steps and scoring, in the layouts and precisions worth trying.

    python benchmarks/biqan_speed.py --threads 2 --out results/biqan_speed

MobileNetV3-small (the default architecture), batches of `--batch` 224x224 crops, Adam, EMD loss, as
biqan/train.py trains it; scoring = a forward pass in eval mode without gradients. Variants:
- `nchw fp32`: the input as it comes (what BIQAN ran before 2026-12-05);
- `channels-last fp32`: the input made channels-last inside `Biqan.forward` (what it runs now on the CPU);
- `channels-last bf16`: the same under torch.autocast("cpu", bfloat16) (where the CPU has it).
Each figure is the median of `--repeats` timed steps after two warm-ups. Writes <out>/table.md and table.csv.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from bdn.cli.options import OneLineParser


def _forward_nchw(model, x: torch.Tensor) -> torch.Tensor:
    """Biqan.forward without the channels-last conversion (the layout before it)."""
    x = (x - model.mean) / model.std
    x = F.adaptive_avg_pool2d(model.features(x), 1).flatten(1)
    return torch.softmax(model.classifier(x), dim=1)


def median_seconds(step, repeats: int) -> float:
    """Seconds a call of `step` takes: the median of `repeats` timed calls after two warm-ups."""
    step()
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(batch: int, repeats: int) -> pd.DataFrame:
    from biqan.model import build_biqan, emd_loss

    torch.manual_seed(0)
    model = build_biqan()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(batch, 3, 224, 224)
    target = torch.softmax(torch.randn(batch, 10), dim=1)
    variants = {
        "nchw fp32": (lambda inputs: _forward_nchw(model, inputs), False),
        "channels-last fp32": (model, False),
        "channels-last bf16": (model, True),
    }
    rows = []
    for name, (forward, bf16) in variants.items():

        def train_step(forward=forward, bf16=bf16) -> None:
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                p = forward(x)
            loss = emd_loss(p.float(), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def score_step(forward=forward, bf16=bf16) -> None:
            model.eval()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                forward(x)

        train = median_seconds(train_step, repeats)
        score = median_seconds(score_step, repeats)
        rows.append(
            {
                "variant": name,
                "train_s_per_step": train,
                "train_images_per_s": batch / train,
                "score_images_per_s": batch / score,
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="benchmarks/biqan_speed.py", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/biqan_speed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = measure(args.batch, args.repeats)
    from bdn.report import write_table

    out = Path(args.out)
    write_table(table, out / "table", floatfmt=".3f")
    print(table.to_markdown(index=False, floatfmt=".3f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
