"""Issue 19, item 1: every shipped feed-forward model and the official BF-DnCNN in fp32 and in bf16 on the CPU.

Two tables, written to --out (markdown, with the command, machine and date):

- accuracy: mean PSNR on Set12 at sigma 25 (Gaussian noise from bdn.noise.add_noise, seed 0 per image, not
  clipped; outputs clipped) of each model run as `bdn denoise` runs it (grey weights where shipped, a colour model
  on three equal channels) in fp32 (the torch engine's folded form) and in bf16 (bdn.models.fast.bf16_form), and
  the difference. A model whose bf16 mean is more than 0.02 dB under its fp32 one belongs in
  bdn.models.fast.FP32_ONLY (so precision=auto keeps fp32 for it).
- speed: median seconds of 3 (after a warm-up) for one 512x512 noisy grey image (camera) and one colour image
  (astronaut), and GFLOP/s (FLOPs counted as benchmarks/bf_models.py counts them), at --threads, for each
  model's grey and colour weights (a kind it does not ship runs as `bdn denoise` runs it: per channel, or on
  three equal channels) in fp32: torch (folded, channels-last) and onnxruntime, the faster of which is what fp32
  means below, and bf16.

Pause other CPU work while timing. Example, in parts (this machine's DIP jobs paused a few minutes at a time;
--prepare records the ONNX files first, --rows collects the parts' speed rows):

    python benchmarks/models_speed.py --prepare
    python benchmarks/models_speed.py --skip speed --out results/models_bf16/accuracy.md
    pkill -STOP -f "bdn run --dataset"; python benchmarks/models_speed.py --skip accuracy --kinds grey \\
        --rows results/models_bf16/speed.jsonl --out results/models_bf16/speed.md; pkill -CONT -f "bdn run --dataset"
"""

from __future__ import annotations

import argparse
import gc
import platform
import shlex
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

ANCHOR = "official BF-DnCNN 0-55"
SIZE = 512
SIGMA = 25.0
LIMIT_DB = 0.02


def shipped_models() -> list[str]:
    from bdn.tensorfile import shipped_files

    return sorted({key.rsplit("_", 1)[0] for key in shipped_files("model_")})


def load(model: str, channels: int, anchors: Path):
    """(net, the channels it takes, its registry entry) as `bdn denoise` picks them for `channels`."""
    from bf_models import load_anchor

    from bdn.models import get_model_spec
    from bdn.models.run import _net_for

    if model == ANCHOR:
        return load_anchor("bias_free_0-55", anchors), 1, get_model_spec("bf_dncnn")
    net, takes = _net_for(model, channels, None)
    return net.eval(), takes, get_model_spec(model)


def form(net, takes: int, label: str):
    """The form `label` ('fp32 torch', 'fp32 onnxruntime' or 'bf16') of `net`; None where onnxruntime fails."""
    from bdn.models.fast import bf16_form, fast_form, onnx_form

    if label == "fp32 torch":
        return fast_form(net, takes)
    if label == "bf16":
        return bf16_form(net, takes)
    try:
        return onnx_form(net, takes)
    except Exception as error:  # a model the exporter cannot record: timed without it
        print(f"  onnxruntime: {error}", file=sys.stderr)
        return None


def accuracy(models: list[str], anchors: Path, limit: int | None) -> list[dict]:
    from bf_models import apply_net

    from bdn.data import clean_images, dataset_path
    from bdn.io import read_image
    from bdn.metrics import psnr
    from bdn.noise import add_noise

    cases = []
    for path in clean_images(dataset_path("Set12"))[:limit]:
        clean = read_image(path)[0]
        cases.append((clean, add_noise(clean, "gaussian", SIGMA, seed=0)))
    rows = []
    for model in models:
        net, takes, spec = load(model, 1, anchors)
        found = {label: form(net, takes, label) for label in ("fp32 torch", "bf16")}
        scores = {}
        for label in ("fp32 torch", "bf16"):
            outs = [np.clip(apply_net(found[label], noisy, takes, spec), 0, 1) for _, noisy in cases]
            scores[label] = float(np.mean([psnr(clean, out) for (clean, _), out in zip(cases, outs, strict=True)]))
        diff = scores["bf16"] - scores["fp32 torch"]
        rows.append(
            {
                "model": model,
                "weights": "grey" if takes == 1 else "colour",
                "fp32 dB": scores["fp32 torch"],
                "bf16 dB": scores["bf16"],
                "bf16 - fp32": diff,
                "within 0.02": abs(diff) <= LIMIT_DB,
            }
        )
        print(rows[-1], flush=True)
    return rows


def image(channels: int) -> np.ndarray:
    from bf_models import _speed_image

    noisy = _speed_image(channels, SIZE)
    return noisy[..., 0] if channels == 1 else noisy


def prepare(models: list[str], anchors: Path, kinds: tuple[int, ...]) -> None:
    """Record every ONNX file the speed table needs (seconds each, kept in bdn's cache), so timing does not."""
    for model in models:
        for channels in kinds if model != ANCHOR else [k for k in kinds if k == 1]:
            net, takes, _ = load(model, channels, anchors)
            form(net, takes, "fp32 onnxruntime")


def speed(models: list[str], anchors: Path, kinds: tuple[int, ...], rows_file: Path | None = None) -> list[dict]:
    """The speed rows; with `rows_file` (JSON lines) each row is appended as measured and the rows returned are
    all the file holds (the last for each model and image), so a table can be measured in parts."""
    import json

    import torch
    from bf_models import apply_net, flops_per_pixel

    rows = []
    for model in models:
        for channels in kinds if model != ANCHOR else [k for k in kinds if k == 1]:
            net, takes, spec = load(model, channels, anchors)
            x = image(channels)
            flops = flops_per_pixel(net, takes) * SIZE * SIZE * (channels if takes == 1 else 1)
            row = {
                "model": model,
                "image": "grey" if channels == 1 else "colour",
                "weights": ("grey", "colour")[takes // 3],
            }
            # One form at a time, onnxruntime last and dropped after: its idle threads spin for a while after each
            # run and took the CPU from the torch forms timed beside it (bf16 measured 3x slower that way).
            for label in ("fp32 torch", "bf16", "fp32 onnxruntime"):
                run = form(net, takes, label)
                if run is None:
                    continue
                seconds = []
                with torch.inference_mode():
                    for _ in range(4):
                        start = time.perf_counter()
                        apply_net(run, x, takes, spec)
                        seconds.append(time.perf_counter() - start)
                row[f"{label} s"] = float(np.median(seconds[1:]))
                del run
                gc.collect()
            fp32 = min(v for k, v in row.items() if k.startswith("fp32"))
            row["fp32 GFLOP/s"] = flops / fp32 / 1e9
            row["bf16 GFLOP/s"] = flops / row["bf16 s"] / 1e9
            row["bf16 speed-up"] = fp32 / row["bf16 s"]
            rows.append(row)
            print(row, flush=True)
            if rows_file is not None:
                with rows_file.open("a") as out:
                    out.write(json.dumps(row) + "\n")
    if rows_file is None:
        return rows
    found = {}
    for line in rows_file.read_text().splitlines():
        row = json.loads(line)
        found[row["model"], row["image"]] = row
    return list(found.values())


def table(rows: list[dict], floatfmt: str = ".3g") -> str:
    import pandas as pd

    return pd.DataFrame(rows).to_markdown(index=False, floatfmt=floatfmt)


def main(argv: list[str] | None = None) -> int:
    import torch
    from bf_models import anchor_folder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", help="model names (default: every shipped one and the official)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--anchors", default=None, help="folder of the official BF-DnCNN weights")
    parser.add_argument("--skip", choices=("accuracy", "speed"), action="append", default=[])
    parser.add_argument("--kinds", nargs="+", choices=("grey", "colour"), default=["grey", "colour"])
    parser.add_argument("--prepare", action="store_true", help="only record the ONNX files, then stop")
    parser.add_argument("--limit", type=int, default=None, help="first N Set12 images")
    parser.add_argument("--rows", type=Path, default=None, help="JSON lines the speed rows are added to")
    parser.add_argument("--out", type=Path, default=None, help="markdown file for the tables")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    anchors = anchor_folder(args.anchors)
    models = args.models or [*shipped_models(), *([ANCHOR] if anchors.is_dir() else [])]
    from bdn.dip.precision import bf16_supported

    kinds = tuple(1 if kind == "grey" else 3 for kind in args.kinds)
    if args.prepare:
        prepare(models, anchors, kinds)
        return 0

    lines = [
        "# Feed-forward models in fp32 and bf16 on the CPU (issue 19, item 1)",
        "",
        f"Date: {datetime.now().isoformat(timespec='seconds')}  ",
        f"Command: `python {shlex.join(['benchmarks/models_speed.py', *(argv or sys.argv[1:])])}`  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, threads {args.threads}, "
        f"bf16 native: {bf16_supported(torch.device('cpu'))}, Python {platform.python_version()}, torch "
        f"{torch.__version__}",
        "",
    ]
    if "accuracy" not in args.skip:
        lines += [
            f"## accuracy: Set12, sigma {SIGMA:g}, mean PSNR",
            "",
            table(accuracy(models, anchors, args.limit), ".3f"),
            "",
        ]
    if "speed" not in args.skip:
        lines += [
            f"## speed: seconds per {SIZE}x{SIZE} image, GFLOP/s (fp32: the faster of torch and onnxruntime)",
            "",
            table(speed(models, anchors, kinds, args.rows)),
            "",
        ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
