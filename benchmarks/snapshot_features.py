"""Per-snapshot statistics of run_BDN output folders: what the judges look at, one row per snapshot.

    python benchmarks/snapshot_features.py \
        --runs CC=results/run_cc PolyU-train=results/run_polyu_train \
        --noisy CC=../shared/data/CC/real PolyU-train=.devdata/dip/polyu_train/real \
        --scores CC=results/test_biqan_cc/scores.csv PolyU-train=results/test_biqan_polyu_train/scores.csv \
        --out results/snapshot_stats.csv.gz

The snapshots of a full-size CC run weigh 1.3 GB and stay where they were made (a lent GPU); this table (a few
hundred kB) comes back, and benchmarks/judge_tuning.py replays the judges from it. For every finished image
(`bdn.dip.runfolder.read_run`) and every snapshot, in the order of the iterations:
- `psnr`: the snapshot's PSNR against the clean image as the run recorded it (the oracle's figure);
- `mse_noisy`: mean((x - noisy)^2) on [0, 1] images, the noise judge's residual (the noisy image centre-cropped to
  the snapshot, as run_BDN's --crop cut it), and `sigma`: bdn.noise.estimate_noise_level of that noisy crop;
- `var<W>`: ES-WMV's windowed variance over the W snapshots ending at this one (bdn.dip.judges.WMVJudge's figure:
  the mean over the window of each image's mean squared difference to the window's mean), empty before W;
- `biqan_mean`, `biqan_std`: test_BIQAN's scores of the snapshot (`--scores`, its scores.csv), where given, and
  `scored_by` (`--scored-by`): which BIQAN gave them. `--scored-only` leaves out the images the scores do not
  cover (a fit that finished between the scoring and this call).

`--merge` keeps the rows of the images already in `--out` that this call does not make, so that one table grows
across machines that each hold only some of the runs (benchmarks/judges_pipeline.sh keep commits it); it refuses to
mix scores of two BIQANs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.cli.options import OneLineParser, named_path
from bdn.errors import BdnError

PROG = "benchmarks/snapshot_features.py"
WINDOWS = (3, 5, 10, 25)
COLUMNS = ("dataset", "image", "iteration", "psnr", "mse_noisy", "sigma")


def window_variances(stack: np.ndarray, window: int) -> np.ndarray:
    """WMV's variance of the `window` snapshots ending at each one (NaN before the first full window)."""
    flat = stack.reshape(len(stack), -1).astype(np.float64)
    out = np.full(len(stack), np.nan)
    for end in range(window - 1, len(stack)):
        out[end] = float(np.mean(np.var(flat[end - window + 1 : end + 1], axis=0)))
    return out


def image_rows(job: tuple[str, str, list, Path | None, tuple[int, ...]]) -> pd.DataFrame:
    """The rows of one image: job = (dataset, image, [(iteration, path, psnr)], noisy file or None, windows)."""
    from bdn.data import centre_crop
    from bdn.io import read_image
    from bdn.noise import estimate_noise_level

    dataset, image, snapshots, noisy_file, windows = job
    stack = np.stack([read_image(path)[0] for _, path, _ in snapshots])
    table = pd.DataFrame(
        {
            "dataset": dataset,
            "image": image,
            "iteration": [i for i, _, _ in snapshots],
            "psnr": [np.nan if p is None else p for _, _, p in snapshots],
        }
    )
    mse, sigma = np.nan, np.nan
    if noisy_file is not None:
        noisy = centre_crop(read_image(noisy_file)[0], max(stack.shape[1:3]))
        if noisy.shape != stack.shape[1:]:
            raise BdnError(f"{noisy_file}: {noisy.shape} after the centre crop, the snapshots are {stack.shape[1:]}")
        mse = np.mean((stack.astype(np.float64) - noisy) ** 2, axis=(1, 2, 3) if stack.ndim == 4 else (1, 2))
        sigma = estimate_noise_level(noisy)
    table["mse_noisy"], table["sigma"] = mse, sigma
    for window in windows:
        table[f"var{window}"] = window_variances(stack, window)
    return table


def jobs(dataset: str, run: Path, noisy: Path | None, windows: tuple[int, ...]) -> list[tuple]:
    from bdn.dip.runfolder import partner_images, read_run
    from bdn.names import NOISY_SUFFIX

    by_image: dict[str, list] = {}
    for it in read_run(run):
        by_image.setdefault(it.image, []).append((it.iteration, it.path, it.psnr))
    noisy_files = {} if noisy is None else partner_images(noisy, sorted(by_image), NOISY_SUFFIX)
    if noisy is not None and len(noisy_files) < len(by_image):
        missing = sorted(set(by_image) - set(noisy_files))
        raise BdnError(f"{noisy}: no noisy image for {missing[0]} ({len(missing)} of {len(by_image)} missing)")
    return [(dataset, name, rows, noisy_files.get(name), windows) for name, rows in sorted(by_image.items())]


def with_scores(table: pd.DataFrame, dataset: str, scores: Path) -> pd.DataFrame:
    """test_BIQAN's mean and std of each snapshot joined on (image, iteration); every snapshot must have one."""
    given = pd.read_csv(scores)[["image", "iteration", "mean", "std"]]
    given = given.rename(columns={"mean": "biqan_mean", "std": "biqan_std"})
    part = table[table["dataset"] == dataset].drop(columns=["biqan_mean", "biqan_std"], errors="ignore")
    joined = part.merge(given, on=["image", "iteration"], how="left")
    if joined["biqan_mean"].isna().any():
        first = joined[joined["biqan_mean"].isna()].iloc[0]
        raise BdnError(f"{scores}: no score for {first['image']} at iteration {first['iteration']}")
    return joined


def merged(table: pd.DataFrame, kept: Path) -> pd.DataFrame:
    """`table` and the rows of `kept` (an earlier table) for images that `table` does not hold."""
    earlier = pd.read_csv(kept)
    if "scored_by" in earlier and "scored_by" in table:
        theirs, ours = set(earlier["scored_by"].dropna()), set(table["scored_by"].dropna())
        if theirs and ours and theirs != ours:
            raise BdnError(
                f"{kept}: its BIQAN scores are by {', '.join(sorted(theirs))}, these by {', '.join(sorted(ours))}: "
                "score every run with one BIQAN, or write a new table"
            )
    made = pd.MultiIndex.from_frame(table[["dataset", "image"]])
    keep = ~pd.MultiIndex.from_frame(earlier[["dataset", "image"]]).isin(made)
    both = pd.concat([earlier[keep], table], ignore_index=True)
    return both.sort_values(["dataset", "image", "iteration"], kind="stable", ignore_index=True)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--runs", nargs="+", type=named_path, required=True, metavar="NAME=FOLDER", help="run_BDN output folders")
    add("--noisy", nargs="*", type=named_path, default=[], metavar="NAME=FOLDER", help="noisy images the runs fitted")
    add("--scores", nargs="*", type=named_path, default=[], metavar="NAME=FILE", help="test_BIQAN scores.csv files")
    add("--windows", nargs="+", type=int, default=list(WINDOWS), help="WMV windows, in snapshots")
    add("--scored-by", default=None, help="which BIQAN gave --scores (a column, scored_by)")
    add(
        "--scored-only",
        action="store_true",
        help="only the images --scores scored (a fit that finished after the scoring waits for the next call)",
    )
    add("--merge", action="store_true", help="keep the rows of --out's other images (a table grown across machines)")
    add("--workers", type=int, default=2, help="processes (one image each at a time)")
    add("--out", type=Path, default=Path("results/snapshot_stats.csv.gz"), help="the table (.csv or .csv.gz)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        names = [name for name, _ in args.runs]
        for option, pairs in (("--noisy", args.noisy), ("--scores", args.scores)):
            unknown = [name for name, _ in pairs if name not in names]
            if unknown:
                raise BdnError(f"{option} {unknown[0]}=...: no --runs {unknown[0]}=FOLDER")
        if any(w < 2 for w in args.windows) or args.workers < 1:
            raise BdnError("--windows must be >= 2 and --workers >= 1")
        noisy, scores = dict(args.noisy), dict(args.scores)
        work = [job for name, run in args.runs for job in jobs(name, run, noisy.get(name), tuple(args.windows))]
        if args.scored_only:
            covered = {name: set(pd.read_csv(path)["image"]) for name, path in scores.items()}
            work = [job for job in work if job[0] not in covered or job[1] in covered[job[0]]]
        with ProcessPoolExecutor(args.workers) as pool:
            table = pd.concat(list(pool.map(image_rows, work)), ignore_index=True)
        for name, path in scores.items():
            scored = with_scores(table, name, path)
            if args.scored_by:
                scored["scored_by"] = args.scored_by
            table = pd.concat([table[table["dataset"] != name], scored], ignore_index=True)
        if args.merge and args.out.is_file():
            table = merged(table, args.out)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        gzip = "gzip" if args.out.suffix == ".gz" else None
        table.to_csv(partial, index=False, float_format="%.7g", compression=gzip)
        partial.replace(args.out)
    except BdnError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    print(f"{len(table)} snapshots of {table.groupby(['dataset', 'image']).ngroups} images -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
