"""The seed's DIP setup run to its peak: iterations to the best EMA image on the CC images of issue 3's table.

The seed's run_BDN defaults (DipConfig() in bdn.dip.fit: the 128-channel skip net, input depth 32, uniform input
noise x 0.1 plus 8.5/255 Gaussian perturbation each iteration, 8.5/255 fresh noise on the reference, Adam 1e-2,
EMA 0.99, fall-back on an 8 dB collapse) on 256x256 centre crops (rows and columns 128:384) of five CC images and on
one full 512x512 CC image. It records each fit's curve and where the EMA output peaks. The iterations to the peak
do not depend on the machine, so a GPU run gives them in minutes; `benchmarks/dip_speed.py` multiplies them by the
seconds per iteration measured on the CPU for the seed's time-to-peak.

    python benchmarks/dip_seed_curves.py --device cuda --num-iter 3500 --out results/dip_seed_curves

Writes <out>/<image>.csv (iteration, loss, psnr_ema, psnr_raw) and <out>/summary.csv/.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from bdn.data import dataset_pairs, load_pair
from bdn.devices import pick_device
from bdn.dip.config import DipConfig
from bdn.dip.fit import fit_dip
from bdn.metrics import psnr
from bdn.report import write_table

CROP_IMAGES = ["d800_iso3200_2", "5dmark3_iso3200_1", "d600_iso3200_1", "d800_iso1600_1", "d800_iso6400_1"]
FULL_IMAGES = ["d800_iso3200_2"]
CROP = slice(128, 384)


def cases(crops: list[str], fulls: list[str]):
    pairs = {pair.name: pair for pair in dataset_pairs("CC")}
    for name in crops:
        noisy, clean = load_pair(pairs[name])
        yield f"{name}_c256", noisy[CROP, CROP], clean[CROP, CROP]
    for name in fulls:
        noisy, clean = load_pair(pairs[name])
        yield f"{name}_full", noisy, clean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-iter", type=int, default=3500)
    parser.add_argument("--out", type=Path, default=Path("results/dip_seed_curves"))
    parser.add_argument("--crops", nargs="*", default=CROP_IMAGES)
    parser.add_argument("--fulls", nargs="*", default=FULL_IMAGES)
    parser.add_argument("--net-type", default="skip")
    args = parser.parse_args()
    device = pick_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, noisy, clean in cases(args.crops, args.fulls):
        config = DipConfig(net_type=args.net_type, num_iter=args.num_iter, show_iter=100, save_iter=50, seed=0)
        start = time.perf_counter()
        result = fit_dip(noisy, clean, config, device=device, progress=False, label=label)
        seconds = time.perf_counter() - start
        curve = pd.DataFrame(result.history)[["iteration", "loss", "psnr", "psnr_raw"]]
        curve = curve.rename(columns={"psnr": "psnr_ema"})
        curve.to_csv(args.out / f"{label}.csv", index=False)
        peak = curve.loc[curve.psnr_ema.idxmax()]
        at = curve.set_index("iteration").psnr_ema
        rows.append(
            {
                "image": label,
                "noisy_psnr": psnr(clean, noisy),
                "peak_psnr": peak.psnr_ema,
                "peak_iteration": int(peak.iteration),
                "psnr_at_1000": at.get(1000),
                "psnr_at_3000": at.get(3000),
                "psnr_last": curve.psnr_ema.iloc[-1],
                "fallbacks": len(result.fallbacks),
                "sec_per_iter": seconds / result.iterations,
                "device": str(device),
            }
        )
        print(rows[-1], flush=True)
    write_table(pd.DataFrame(rows), args.out / "summary")
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
