"""Training steps per second of the feed-forward models on this CPU, in float32 and in bf16 (`train.precision`).

    python benchmarks/train_speed.py --threads 2 --out results/train_speed

Each model is built as `bdn train` builds it and trained on random 64x64 grey patches (batch 32: the size of the
shipped runs' patches) with Adam and the MSE loss, exactly the step bdn/train.py takes: forward (under autocast for
bf16, channels-last), loss in float32, backward, gradient clipping, Adam. Median of `--repeats` timed steps after
two warm-ups. Writes <out>/table.md and table.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import torch

from bdn.cli.options import OneLineParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from biqan_speed import median_seconds  # noqa: E402  (one timing rule for the speed benchmarks)

MODELS = ("resnet_5x5_bn_3x3", "sparse_resnet_5x5_bn_3x3", "gp3_resnet_5x5_bn_3x3", "unet", "mwcnn")


def steps_per_second(name: str, precision: str, patch: int, batch: int, repeats: int) -> float:
    from bdn.models import build_model

    torch.manual_seed(0)
    bf16 = precision == "bf16"
    layout = torch.channels_last if bf16 else torch.contiguous_format
    net = build_model(name, 1).train().to(memory_format=layout)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    clean = torch.rand(batch, 1, patch, patch)
    noisy = (clean + 0.1 * torch.randn_like(clean)).contiguous(memory_format=layout)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(noisy)
        loss = torch.nn.functional.mse_loss(out.float(), clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()

    return 1.0 / median_seconds(step, repeats)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="benchmarks/train_speed.py", description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/train_speed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        fp32 = steps_per_second(name, "fp32", args.patch, args.batch, args.repeats)
        bf16 = steps_per_second(name, "bf16", args.patch, args.batch, args.repeats)
        rows.append({"model": name, "fp32_steps_per_s": fp32, "bf16_steps_per_s": bf16, "speed_up": bf16 / fp32})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    from bdn.report import write_table

    write_table(table, Path(args.out) / "table", floatfmt=".2f")
    print(table.to_markdown(index=False, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
