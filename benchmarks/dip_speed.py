"""DIP's cost on this machine: seconds per iteration, GFLOP/s, peak memory and the seed setup's time to its peak.

The seed's time-to-peak = its iterations to the peak of the EMA output (machine-independent; recorded from a long
run in benchmarks/records/dip_seed_peaks_h100.csv by benchmarks/dip_seed_curves.py) x its seconds per iteration
measured here, in this run, as the seed ran it: float32, PyTorch's default memory layout ('seed_fp32'). The
'default' rows time what `bdn denoise --method dip` fits, 'polyu_masked' the shipped start's blind-spot fit;
benchmarks/dip_default.py measures them end to end on the same images.

    python benchmarks/dip_speed.py --threads 2 --out results/dip_speed

A case is NET:SIZE[:PRECISION[:nchw]] (precision fp32, bf16 or auto; nchw keeps PyTorch's default layout, as the
seed's code did). Each is timed in a fresh process, so its peak memory (ru_maxrss) is its own: one fit of
`warmup + timed` iterations on a noisy CC crop, the median time between iterations after the warm-up.
GFLOP/s counts the convolutions' multiply-adds (x2) forward and backward (x3, the input layer's x2) per second of
the whole step, against 1,415 GFLOP/s of a lone bf16 3x3 convolution 128->128 at 256x256 forward + backward here.
The estimated memory (bdn.dip.memory.fit_bytes, what DIP's tiling decides by) stands beside the measured peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

RECORD = Path(__file__).parent / "records" / "dip_seed_peaks_h100.csv"
# "default" is what `bdn denoise --method dip` fits (bdn.dip.denoise.prepare); "polyu_masked" the shipped start's
# blind-spot fit (prepare(init="polyu_masked")).
CASES = [
    "skip:256:fp32:nchw",
    "skip:512:fp32:nchw",
    "skip:256:fp32",
    "skip:256:bf16",
    "skip:512:bf16",
    "default:256:fp32",
    "default:256:bf16",
    "default:512:bf16",
]
CC_IMAGE = "d800_iso3200_2"


def conv_flops(net, channels: int, size: int) -> float:
    """Forward and backward FLOPs of the net's convolutions for one size x size step (the first layer has no
    input gradient)."""
    import torch

    total, first = 0.0, True
    hooks = []

    def count(module, inputs, output) -> None:
        nonlocal total, first
        macs = output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        total += 2 * macs * (2 if first else 3)
        first = False

    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            hooks.append(module.register_forward_hook(count))
    with torch.no_grad():
        net(torch.zeros(1, net.scales[0].down[0].in_channels, size, size))
    for hook in hooks:
        hook.remove()
    return total


def time_one(case: str, threads: int, warmup: int, timed: int) -> dict:
    import dataclasses

    import torch

    from bdn.bench import peak_rss_mb
    from bdn.data import centre_crop, dataset_pairs, load_pair
    from bdn.dip.config import DipConfig
    from bdn.dip.fit import fit_dip
    from bdn.dip.memory import fit_bytes
    from bdn.dip.nets import build_net

    parts = case.split(":")
    net_type, size = parts[0], int(parts[1])
    precision = parts[2] if len(parts) > 2 else "auto"
    layout = parts[3] if len(parts) > 3 else "auto"
    torch.set_num_threads(threads)
    pair = next(p for p in dataset_pairs("CC") if p.name == CC_IMAGE)
    noisy = centre_crop(load_pair(pair)[0], size)
    stamps: list[float] = []

    def stamp(iteration: int, frame) -> None:
        stamps.append(time.perf_counter())

    config, init_state = DipConfig(net_type=net_type, num_iter=warmup + timed), None
    if net_type in ("default", "polyu_masked"):
        from bdn.dip.denoise import prepare

        init = "polyu_masked" if net_type == "polyu_masked" else None
        job = prepare(noisy, iterations=warmup + timed, **({"init": init} if init else {}))
        config, init_state = job.config, job.init_state
    config = dataclasses.replace(config, precision=precision, channels_last=False if layout == "nchw" else None)
    result = fit_dip(noisy, None, config, device="cpu", progress=False, on_iteration=stamp, init_state=init_state)
    intervals = sorted(b - a for a, b in zip(stamps[warmup - 1 : -1], stamps[warmup:], strict=True))
    seconds = intervals[len(intervals) // 2]  # the median: robust to a stray slow iteration
    depth = config.input_depth if config.input_base == "noise" else 3
    flops = conv_flops(build_net(config.net_type, depth, 3), 3, size)
    estimate = fit_bytes(config.net_type, size, size, 3, depth, result.precision)
    return {
        "case": case,
        "net_type": net_type,
        "size": size,
        "precision": result.precision,
        "layout": layout,
        "threads": threads,
        "sec_per_iter": seconds,
        "gflops": flops / seconds / 1e9,
        "peak_mb": peak_rss_mb(),
        "estimated_fit_mb": estimate / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timed", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("results/dip_speed"))
    parser.add_argument("--cases", nargs="+", metavar="CASE", help="only these (e.g. default:256:bf16 skip:256)")
    parser.add_argument("--worker", metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(time_one(args.worker, args.threads, args.warmup, args.timed)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    speeds = []
    for case in args.cases or CASES:
        command = [sys.executable, __file__, "--worker", case, "--threads", str(args.threads)]
        command += ["--warmup", str(args.warmup), "--timed", str(args.timed)]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        speeds.append(json.loads(output.strip().splitlines()[-1]))
        print(speeds[-1], flush=True)
    speed = pd.DataFrame(speeds)
    peaks = pd.read_csv(RECORD).query("net_type == 'skip'")
    peaks["size"] = peaks.image.str.endswith("_full").map({True: 512, False: 256})
    seed = speed[(speed.net_type == "skip") & (speed.precision == "fp32") & (speed.layout == "nchw")]
    table = peaks.merge(seed.drop(columns="net_type"), on="size")
    table["seed_time_to_peak_s"] = table.peak_iteration * table.sec_per_iter
    args.out.mkdir(parents=True, exist_ok=True)
    speed.to_csv(args.out / "speed.csv", index=False)
    table.to_csv(args.out / "time_to_peak.csv", index=False)
    print(speed.to_markdown(index=False, floatfmt=".3f"))
    print(table.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
