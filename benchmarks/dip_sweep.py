"""Compare DIP settings by their curves: where the EMA output peaks, how high, and how fast it gets there.

Tuning discipline (bdn.data.polyu_split): run it on PolyU's training split (or Train400), never on CC. Rerun with the
same --out, it resumes: fits already in <out>/per_image.csv are read back, so the command also reprints the tables.

    python benchmarks/dip_sweep.py --images Canon5D2_5_160_6400_bicycle_10 ... --num-iter 2500 \
        --config seed --config light=net_type:skip_light --config img=input_base:image

A config is NAME[=KEY:VALUE[,KEY:VALUE...]] over DipConfig's fields; 'seed' alone is DipConfig() (the seed's
run_BDN defaults); `init:PATH` starts from a learned initialisation (bdn dip-init); a NetSpec field reshapes the
named net (`channels_down:64/64/64/64/64`, `upsample_mode:nearest`, `need1x1_up:False`). Each image is the centre crop
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
from bdn.devices import pick_device
from bdn.dip.config import DipConfig
from bdn.dip.fit import fit_dip
from bdn.dip.init import config_for_init, load_init
from bdn.dip.nets import NetSpec, net_spec
from bdn.metrics import psnr
from bdn.noise import estimate_noise_level
from bdn.report import write_table
from bdn.tensors import to_chw

CHECKPOINTS = (100, 200, 300, 500, 750, 1000, 1500, 2000, 3000)


def parse_config(text: str) -> tuple[str, DipConfig, dict | None]:
    """NAME=KEY:VALUE,... -> (name, config, init weights or None); the key 'init' names a learned initialisation,
    which also fixes the net and input it was learned for (other keys override the rest)."""
    name, _, body = text.partition("=")
    fields = {field.name: field.type for field in dataclasses.fields(DipConfig)}
    net_fields = {field.name for field in dataclasses.fields(NetSpec)}
    values: dict[str, object] = {}
    net_values: dict[str, object] = {}
    init = None
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition(":")
        if key == "init":
            init = raw
        elif key in net_fields:
            net_values[key] = tuple(int(v) for v in raw.split("/")) if key.startswith("channels") else parse_value(raw)
        elif key not in fields:
            raise SystemExit(f"config {name}: DipConfig has no field {key!r}")
        else:
            values[key] = None if raw == "None" else parse_value(raw)
    config = DipConfig(**values)
    if net_values:
        config.net_type = dataclasses.replace(net_spec(config.net_type), **net_values)
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
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="also print, per image, config A's peak and its iteration against B's (e.g. bf16 against fp32)",
    )
    parser.add_argument(
        "--reference",
        help="a config whose peak the others race to: adds, per config, the mean iteration at which the EMA output "
        "first comes within 0.3 dB of the reference's peak on the same image, and where the noise rule stops",
    )
    parser.add_argument("--out", type=Path, default=Path("results/dip_sweep"))
    args = parser.parse_args()
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = {pair.name: pair for pair in dataset_pairs("PolyU")}
    args.out.mkdir(parents=True, exist_ok=True)
    curves, rows = [], []
    if (args.out / "per_image.csv").exists():  # a rerun resumes: fits already measured are read back, not redone
        rows = pd.read_csv(args.out / "per_image.csv").to_dict("records")
        curves = [pd.read_csv(args.out / "curves.csv")]
    done = {(row["config"], row["image"]) for row in rows}
    for name, config, init_state in map(parse_config, args.config):
        config.num_iter = args.num_iter
        for image in args.images:
            if (name, image) in done:
                continue
            noisy, clean = load_pair(pairs[image])
            noisy, clean = centre_crop(noisy, args.crop), centre_crop(clean, args.crop)
            residuals: list[torch.Tensor] = []
            noisy_t = to_chw(noisy, device=device)[None]

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
                "precision": result.precision,
            }
            row.update({f"at_{c}": at.get(c) for c in CHECKPOINTS if c <= args.num_iter})
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
            # Written after every fit, so a sweep cut short keeps what it measured.
            pd.concat(curves).to_csv(args.out / "curves.csv", index=False)
            pd.DataFrame(rows).to_csv(args.out / "per_image.csv", index=False)
    wanted = [text.partition("=")[0] for text in args.config]
    per_image = pd.DataFrame(rows)
    per_image = per_image[per_image.config.isin(wanted) & per_image.image.isin(args.images)]
    summary = per_image.drop(columns=["image", "precision"]).groupby("config", sort=False).mean().reset_index()
    summary["gain_at_peak"] = summary.peak - summary.noisy
    if args.reference:
        race = reach_and_stop(pd.concat(curves), args.reference)
        summary = summary.merge(race.groupby("config", sort=False).mean(numeric_only=True).reset_index(), on="config")
    write_table(summary, args.out / "summary")
    print(summary.to_markdown(index=False, floatfmt=".2f"))
    if args.compare:
        print(compare(per_image, *args.compare).to_markdown(index=False, floatfmt=".3f"))


def reach_and_stop(curves: pd.DataFrame, reference: str, within: float = 0.3) -> pd.DataFrame:
    """Per config and image: the first iteration within `within` dB of the reference config's peak on that image
    (NaN if never), and the noise rule's stop (the first iteration whose residual reaches the estimated sigma,
    factor 1) with its PSNR minus the reference's peak."""
    peaks = curves[curves.config == reference].groupby("image").psnr.max()
    rows = []
    for (config, image), curve in curves.groupby(["config", "image"], sort=False):
        if image not in peaks:
            continue
        curve = curve.sort_values("iteration")
        near = curve.iteration[curve.psnr >= peaks[image] - within]
        fired = curve[curve.residual <= curve.sigma_estimate]
        stop = fired.iloc[0] if len(fired) else curve.iloc[-1]
        rows.append(
            {
                "config": config,
                "image": image,
                f"iter_within_{within}": near.iloc[0] if len(near) else float("nan"),
                "noise_stop_iter": stop.iteration,
                "noise_stop_vs_ref_peak": stop.psnr - peaks[image],
            }
        )
    return pd.DataFrame(rows)


def compare(per_image: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Per image: each config's peak PSNR and peak iteration, and the difference of the peaks (first - second)."""
    table = per_image.pivot(index="image", columns="config", values=["peak", "peak_iter"])
    rows = pd.DataFrame(
        {
            "image": table.index,
            f"peak {first}": table["peak", first].to_numpy(),
            f"peak {second}": table["peak", second].to_numpy(),
            f"peak iter {first}": table["peak_iter", first].to_numpy(),
            f"peak iter {second}": table["peak_iter", second].to_numpy(),
        }
    )
    rows["difference"] = rows[f"peak {first}"] - rows[f"peak {second}"]
    return rows


if __name__ == "__main__":
    main()
