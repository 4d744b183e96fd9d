"""Where DIP fits peak: per image of `bdn run` folders, the best snapshot and what stopping earlier would cost.

    python benchmarks/dip_peaks.py --runs full=results/biqan_data/skip64_train_full \
        crops=results/biqan_data/skip64_c256 --at 1500 3000 4500 6000 --out results/dip_peaks

The question it answers: how many iterations should a fit be allowed (the cap)? For every finished image
(`bdn.dip.runfolder.read_run`: snapshots and their 8-bit PSNR against the clean image), one row:
- `pixels`, the snapshot's height x width (the cap may have to grow with the image);
- `peak_psnr` and `peak_iteration`, the best snapshot of the whole fit;
- `best@N` for each `--at` N, the best snapshot at or before N (empty where the fit stopped before N), and
  `loss@N` = peak_psnr - best@N, what a cap of N iterations would lose with a perfect judge;
- `first_within`, the first snapshot within `--within` dB (default 0.1) of the peak: the least cap that would have
  cost no more than that.
Per run, a mean row. Writes <out>/peaks.csv and <out>/peaks.md (with the command).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.cli.options import OneLineParser, named_path
from bdn.errors import BdnError

PROG = "benchmarks/dip_peaks.py"
ITERATION_COLUMNS = ("peak_iteration", "first_within")


def image_row(curve: pd.DataFrame, at: Sequence[int], within: float) -> dict:
    """One image's figures from its snapshots: `curve` has columns iteration and psnr, in iteration order."""
    iterations, psnr = curve["iteration"].to_numpy(), curve["psnr"].to_numpy(dtype=np.float64)
    best = int(np.argmax(psnr))  # the first of equal ones, as the oracle chooses
    row = {"peak_psnr": psnr[best], "peak_iteration": int(iterations[best])}
    for cap in at:
        reached = iterations <= cap
        # A fit that ended before the cap has no figure there: a cap it never ran to says nothing about it.
        value = psnr[reached].max() if reached.any() and iterations[-1] >= cap else np.nan
        row[f"best@{cap}"] = value
        row[f"loss@{cap}"] = psnr[best] - value
    row["first_within"] = int(iterations[np.argmax(psnr >= psnr[best] - within)])
    return row


def run_table(name: str, run: Path, at: Sequence[int], within: float) -> pd.DataFrame:
    """The rows of one run folder's finished images."""
    from bdn.dip.runfolder import read_run
    from bdn.io import read_image

    iterates = [it for it in read_run(run) if it.psnr is not None]
    if not iterates:
        raise BdnError(f"{run}: no finished image with a clean reference (nothing to measure)")
    frame = pd.DataFrame([(it.image, it.iteration, it.psnr, it.path) for it in iterates])
    frame.columns = ["image", "iteration", "psnr", "path"]
    rows = []
    for image, curve in frame.groupby("image", sort=True):
        height, width = read_image(curve["path"].iloc[-1])[0].shape[:2]
        rows.append({"run": name, "image": image, "pixels": f"{height}x{width}", **image_row(curve, at, within)})
    return pd.DataFrame(rows)


def with_means(table: pd.DataFrame) -> pd.DataFrame:
    """The table with a mean row after each run's images (means over the images with a figure; iterations
    rounded)."""
    parts = []
    for name, group in table.groupby("run", sort=False):
        mean = group.drop(columns=["run", "image", "pixels"]).mean(numeric_only=True).to_dict()
        for column in ITERATION_COLUMNS:  # iterations stay whole numbers, the table readable
            mean[column] = round(mean[column])
        parts += [group, pd.DataFrame([{"run": name, "image": f"mean of {len(group)}", "pixels": "", **mean}])]
    return pd.concat(parts, ignore_index=True)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Where DIP fits peak, and what a cap on the iterations would cost.")
    parser.add_argument("--runs", nargs="+", type=named_path, required=True, help="NAME=RUN_FOLDER (bdn run's output)")
    parser.add_argument(
        "--at", nargs="+", type=int, default=[1500, 3000, 4500, 6000], help="caps to price (iterations)"
    )
    parser.add_argument("--within", type=float, default=0.1, help="dB of the peak for first_within (default 0.1)")
    parser.add_argument("--out", type=Path, default=Path("results/dip_peaks"), help="folder for peaks.csv / .md")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if any(cap < 1 for cap in args.at) or args.within < 0:
            raise BdnError("--at takes iterations >= 1 and --within a level >= 0 dB")
        table = with_means(pd.concat([run_table(name, run, args.at, args.within) for name, run in args.runs]))
    except BdnError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    from bdn.io import atomic_write_text
    from bdn.report import markdown_table

    command = " ".join(shlex.quote(a) for a in ["python", PROG, *(sys.argv[1:] if argv is None else argv)])
    text = f"{markdown_table(table, floatfmt='.2f')}\n\nCommand: `{command}` ({datetime.date.today().isoformat()})\n"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "peaks.csv", table.to_csv(index=False))
    atomic_write_text(args.out / "peaks.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
