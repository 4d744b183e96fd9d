"""DIP's cost on this machine: seconds per iteration, peak memory and the seed setup's time to its best image.

The seed's time-to-peak = its iterations to the peak of the EMA output (machine-independent; recorded from a long
run in benchmarks/records/dip_seed_peaks_h100.csv by benchmarks/dip_seed_curves.py) x its seconds per iteration
measured here, in this run. The 'default' rows time what `bdn denoise --method dip` fits, 'polyu_masked' the
shipped start's blind-spot fit; benchmarks/dip_default.py measures them end to end on the same images.

    python benchmarks/dip_speed.py --threads 2 --out results/dip_speed

Each (net, size) is timed in a fresh process, so its peak memory (ru_maxrss) is its own: one fit of
`warmup + timed` iterations on a noisy CC crop, the median time between iterations after the warm-up.
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
CASES = [("skip", 256), ("skip", 512), ("skip_light", 256), ("skip_light", 512), ("default", 256), ("default", 512)]
CC_IMAGE = "d800_iso3200_2"


def time_one(net_type: str, size: int, threads: int, warmup: int, timed: int) -> dict:
    import torch

    from bdn.bench import peak_rss_mb
    from bdn.data import centre_crop, dataset_pairs, load_pair
    from bdn.dip.fit import DipConfig, fit_dip

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
    fit_dip(noisy, None, config, device="cpu", progress=False, on_iteration=stamp, init_state=init_state)
    intervals = sorted(b - a for a, b in zip(stamps[warmup - 1 : -1], stamps[warmup:], strict=True))
    return {
        "net_type": net_type,
        "size": size,
        "threads": threads,
        "sec_per_iter": intervals[len(intervals) // 2],  # the median: robust to a stray slow iteration
        "peak_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timed", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("results/dip_speed"))
    parser.add_argument("--cases", nargs="+", metavar="NET:SIZE", help="only these (e.g. default:256 skip:256)")
    parser.add_argument("--worker", nargs=2, metavar=("NET", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(time_one(args.worker[0], int(args.worker[1]), args.threads, args.warmup, args.timed)))
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    speeds = []
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.cases] if args.cases else CASES
    for net_type, size in cases:
        command = [sys.executable, __file__, "--worker", net_type, str(size), "--threads", str(args.threads)]
        command += ["--warmup", str(args.warmup), "--timed", str(args.timed)]
        output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        speeds.append(json.loads(output.strip().splitlines()[-1]))
        print(speeds[-1], flush=True)
    speed = pd.DataFrame(speeds)
    peaks = pd.read_csv(RECORD)
    peaks["size"] = peaks.image.str.endswith("_full").map({True: 512, False: 256})
    table = peaks.merge(speed, on=["net_type", "size"])
    table["seed_time_to_peak_s"] = table.peak_iteration * table.sec_per_iter
    args.out.mkdir(parents=True, exist_ok=True)
    speed.to_csv(args.out / "speed.csv", index=False)
    table.to_csv(args.out / "time_to_peak.csv", index=False)
    print(speed.to_markdown(index=False, floatfmt=".3f"))
    print(table.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
