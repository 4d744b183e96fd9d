"""Compare DIP settings by their curves: where the EMA output peaks, how high, and how fast it gets there.

Tuning discipline (SPEC.md item 6): run it on PolyU's training split (or Train400), never on CC.

    python benchmarks/dip_sweep.py --images Canon5D2_5_160_6400_bicycle_10 ... --num-iter 2500 \
        --config seed --config light=net_type:skip_light --config img=input_base:image

A config is NAME[=KEY:VALUE[,KEY:VALUE...]] over DipConfig's fields; 'seed' alone is DipConfig() (the seed's
run_BDN defaults); `init:PATH` starts from a learned initialisation (bdn dip-init). Each image is the centre crop
(--crop, 256) of a PolyU pair. Writes <out>/curves.csv (every config, image and iteration, with the EMA output's
residual std against the noisy image and the blind noise estimate, from which the 'noise' judge's stops can be
replayed) and <out>/summary.csv/.md (per config: mean peak PSNR, mean iteration of the peak, mean PSNR at fixed
iterations, seconds per iteration on the device used).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import pandas as pd
import torch

from bdn.cli import parse_value
from bdn.data import centre_crop, dataset_pairs, load_pair
from bdn.dip.fit import DipConfig, fit_dip, pick_device
from bdn.dip.init import config_for_init, load_init
from bdn.metrics import psnr
from bdn.noise import estimate_noise_level
from bdn.report import write_table

CHECKPOINTS = (100, 200, 300, 500, 750, 1000, 1500, 2000, 3000)


def parse_config(text: str) -> tuple[str, DipConfig, dict | None]:
    """NAME=KEY:VALUE,... -> (name, config, init weights or None); the key 'init' names a learned initialisation,
    which also fixes the net and input it was learned for (other keys override the rest)."""
    name, _, body = text.partition("=")
    fields = {field.name: field.type for field in dataclasses.fields(DipConfig)}
    values: dict[str, object] = {}
    init = None
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition(":")
        if key == "init":
            init = raw
        elif key not in fields:
            raise SystemExit(f"config {name}: DipConfig has no field {key!r}")
        else:
            values[key] = None if raw == "None" else parse_value(raw)
    config = DipConfig(**values)
    if init is None:
        return name, config, None
    state, metadata = load_init(init)
    return name, dataclasses.replace(config_for_init(metadata, config), **values), state


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
    for name, config, init_state in map(parse_config, args.config):
        config.num_iter = args.num_iter
        for image in args.images:
            noisy, clean = load_pair(pairs[image])
            noisy, clean = centre_crop(noisy, args.crop), centre_crop(clean, args.crop)
            residuals: list[torch.Tensor] = []
            noisy_t = torch.from_numpy(noisy).permute(2, 0, 1)[None].to(device)

            def residual(iteration: int, frame, noisy_t=noisy_t, residuals=residuals) -> None:
                # The EMA output's distance to the noisy image (std, 0-255): what the 'noise' judge compares.
                residuals.append(torch.sqrt(torch.mean((frame.ema_tensor - noisy_t) ** 2)) * 255.0)

            start = time.perf_counter()
            result = fit_dip(
                noisy, clean, config, device=device, init_state=init_state, progress=False, on_iteration=residual
            )
            seconds = time.perf_counter() - start
            curve = pd.DataFrame(result.history)[["iteration", "psnr"]].assign(config=name, image=image)
            curve["residual"] = torch.stack(residuals).tolist()
            curve["sigma_estimate"] = estimate_noise_level(noisy)
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
