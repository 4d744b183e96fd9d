"""Compare DIP settings by their curves: where the EMA output peaks, how high, and how fast it gets there.

Tuning discipline (SPEC.md item 6): run it on PolyU's training split (or Train400), never on CC.

    python benchmarks/dip_sweep.py --images Canon5D2_5_160_6400_bicycle_10 ... --num-iter 2500 \
        --config seed --config light=net_type:skip_light --config img=input_base:image

A config is NAME[=KEY:VALUE[,KEY:VALUE...]] over DipConfig's fields; 'seed' alone is DipConfig() (the seed's
run_BDN defaults). Each image is the 256x256 centre crop of a PolyU pair. Writes <out>/curves.csv (every config,
image and iteration) and <out>/summary.csv/.md (per config: mean peak PSNR, mean iteration of the peak, mean PSNR
at fixed iterations, seconds per iteration on the device used).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd

from bdn.cli import parse_value
from bdn.data import centre_crop, dataset_pairs, load_pair
from bdn.dip.fit import DipConfig, fit_dip, pick_device
from bdn.metrics import psnr
from bdn.report import write_table

CHECKPOINTS = (100, 200, 300, 500, 750, 1000, 1500, 2000, 3000)


def parse_config(text: str) -> tuple[str, DipConfig]:
    name, _, body = text.partition("=")
    fields = {field.name: field.type for field in dataclasses.fields(DipConfig)}
    values: dict[str, object] = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition(":")
        if key not in fields:
            raise SystemExit(f"config {name}: DipConfig has no field {key!r}")
        values[key] = None if raw == "None" else parse_value(raw)
    return name, DipConfig(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", nargs="+", required=True, help="PolyU ids (training split)")
    parser.add_argument("--config", action="append", required=True)
    parser.add_argument("--num-iter", type=int, default=2500)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/dip_sweep"))
    args = parser.parse_args()
    device = pick_device(args.device)
    pairs = {pair.name: pair for pair in dataset_pairs("PolyU")}
    args.out.mkdir(parents=True, exist_ok=True)
    curves, rows = [], []
    for name, config in map(parse_config, args.config):
        config.num_iter = args.num_iter
        for image in args.images:
            noisy, clean = load_pair(pairs[image])
            noisy, clean = centre_crop(noisy, args.crop), centre_crop(clean, args.crop)
            start = time.perf_counter()
            result = fit_dip(noisy, clean, config, device=device, progress=False)
            seconds = time.perf_counter() - start
            curve = pd.DataFrame(result.history)[["iteration", "psnr"]].assign(config=name, image=image)
            curves.append(curve)
            peak = curve.loc[curve.psnr.idxmax()]
            at = curve.set_index("iteration").psnr
            row = {
                "config": name,
                "image": image,
                "noisy": psnr(clean, noisy),
                "peak": peak.psnr,
                "peak_iter": int(peak.iteration),
                "sec_per_iter": seconds / result.iterations,
            }
            row.update({f"at_{c}": at.get(c) for c in CHECKPOINTS if c <= args.num_iter})
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    pd.concat(curves).to_csv(args.out / "curves.csv", index=False)
    per_image = pd.DataFrame(rows)
    per_image.to_csv(args.out / "per_image.csv", index=False)
    summary = per_image.drop(columns="image").groupby("config", sort=False).mean().reset_index()
    summary["gain_at_peak"] = summary.peak - summary.noisy
    write_table(summary, args.out / "summary")
    print(summary.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
