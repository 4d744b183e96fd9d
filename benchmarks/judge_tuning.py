"""The judges tuned on PolyU's training split, then measured with those settings on the test sets.

    python benchmarks/judge_tuning.py --stats benchmarks/records/judges_h100_snapshots.csv.gz \
        --tune PolyU-train --out results/judge_tuning

Reads benchmarks/snapshot_features.py's table (one row per DIP snapshot: recorded PSNR, the noise judge's residual
and noise estimate, WMV's windowed variances, BIQAN's scores) and replays each judge at snapshot granularity, as
`bdn.judge_run` replays a run folder offline (the same rules as bdn.dip.judges: NoiseJudge fires at the first
residual <= (factor x sigma / 255)^2 and keeps that snapshot; WMVJudge keeps the newest snapshot of the
least-variance window and stops after `patience` variance updates with no new minimum; BiqanJudge keeps the highest
(optionally low-pass filtered) score after the first `start_index` snapshots). Gap = the image's best snapshot PSNR
minus the chosen one's.

Each judge family's grid is swept on the `--tune` dataset only; the setting with the least mean gap there (ties:
the least worst gap, then the first in the grid) is the tuned one, and the other datasets are measured with it and
with nothing else. Patience and BIQAN's start are given in iterations and turned into snapshots by each dataset's
snapshot spacing; WMV's window is in snapshots (the table's var<W> columns). Fixed rows need no tuning: the last
snapshot (no judge: what the iteration cap alone gives), the noise rule as `bdn denoise` runs it (factor 1), WMV as
bdn ships it tuned (`TUNED_WMV`), the seed's test_BIQAN recipe (start_index 40 snapshots, smoothing 0.8) and the
shipped default (start_index 40, none). With BIQAN's scores, summary.md also gives
their rank correlation (Spearman) with PSNR over each image's snapshots, per dataset. `--until N` replays the
snapshots at or before iteration N only, as if the fits had stopped there.

Writes <out>/sweep.csv (every setting x dataset), <out>/summary.csv and <out>/summary.md.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.cli.options import OneLineParser, whole
from bdn.errors import BdnError

PROG = "benchmarks/judge_tuning.py"
NOISE_FACTORS = tuple(round(0.7 + 0.05 * k, 2) for k in range(13))  # 0.70 .. 1.30
PATIENCES = (100, 200, 300, 500, 1000, math.inf)  # iterations; inf: the least variance of the whole run
STARTS = (0, 200, 400, 600, 800, 1000, 1200)  # iterations
SMOOTHS = (None, 0.8)


# --- the judges, replayed on one image's snapshots (a table sorted by iteration) -----------------------------------


def noise_choice(g: pd.DataFrame, factor: float) -> int:
    threshold = (factor * float(g["sigma"].iloc[0]) / 255.0) ** 2
    fired = np.nonzero(g["mse_noisy"].to_numpy() <= threshold)[0]
    return int(fired[0]) if len(fired) else len(g) - 1


def wmv_choice(g: pd.DataFrame, window: int, patience: int | float) -> int:
    """WMVJudge's own minimum-and-patience rule (bdn.dip.judges.MinTracker) over the table's variances."""
    from bdn.dip.judges import MinTracker

    track = MinTracker(len(g) + 1 if math.isinf(patience) else int(patience), sync_every=1)
    for index, value in enumerate(g[f"var{window}"].to_numpy()):
        if np.isnan(value):  # before the first full window: no variance yet
            continue
        track.add(index, float(value))
        if track.stopped:
            break
    return len(g) - 1 if track.best_iteration is None else track.best_iteration


def biqan_choice(g: pd.DataFrame, start_index: int, smooth: float | None) -> int:
    """biqan.select's own rule: the highest (optionally filtered) score after the first `start_index` snapshots."""
    from biqan.select import pick, smooth_scores

    return pick(smooth_scores(g["biqan_mean"].to_numpy(dtype=np.float64), smooth), start_index)[0]


# --- sweeping ---------------------------------------------------------------------------------------------------


def _step(g: pd.DataFrame) -> int:
    """The snapshot spacing in iterations (save_iter)."""
    steps = np.diff(g["iteration"].to_numpy())
    return int(np.median(steps)) if len(steps) else 1


def _snapshots(iterations: float, step: int) -> int | float:
    return iterations if math.isinf(iterations) else max(1, math.ceil(iterations / step))


def candidates(stats: pd.DataFrame) -> list[tuple[str, str, Callable[[pd.DataFrame], int]]]:
    """(family, settings, choose(image table) -> row index) for every setting of every grid."""
    from bdn.dip.judges import TUNED_WMV

    out = [("last snapshot", "none (the cap)", lambda g: len(g) - 1)]
    out.append(("noise as bdn's default", "factor 1.00 (bdn denoise's stop)", lambda g: noise_choice(g, 1.0)))
    out += [("noise", f"factor {f:.2f}", lambda g, f=f: noise_choice(g, f)) for f in NOISE_FACTORS]
    windows = sorted(int(c[3:]) for c in stats.columns if c.startswith("var") and c[3:].isdigit())
    window, patience = TUNED_WMV["window"], TUNED_WMV["patience"]
    if window in windows:  # patience in snapshots: TUNED_WMV watches every 20th EMA output, one a snapshot
        label = f"window {window} snapshots, patience {patience} snapshots (TUNED_WMV)"
        out.append(("wmv as shipped", label, lambda g: wmv_choice(g, window, patience)))
    for w, p in itertools.product(windows, PATIENCES):
        label = f"window {w} snapshots, patience {'none' if math.isinf(p) else f'{p} iterations'}"
        out.append(("wmv", label, lambda g, w=w, p=p: wmv_choice(g, w, _snapshots(p, _step(g)))))
    if "biqan_mean" in stats.columns:
        for s, a in itertools.product(STARTS, SMOOTHS):
            label = f"start {s} iterations, smooth {a}"
            out.append(("biqan", label, lambda g, s=s, a=a: biqan_choice(g, int(_snapshots(s, _step(g))), a)))
        out.append(("seed recipe", "start_index 40 snapshots, smooth 0.8", lambda g: biqan_choice(g, 40, 0.8)))
        out.append(
            ("biqan shipped default", "start_index 40 snapshots, smooth None", lambda g: biqan_choice(g, 40, None))
        )
    return out


def by_image(stats: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(dataset, image, its snapshots sorted by iteration), once for every setting to replay."""
    return [
        (dataset, image, g.sort_values("iteration", kind="stable").reset_index(drop=True))
        for (dataset, image), g in stats.groupby(["dataset", "image"], sort=True)
    ]


def measure(images: list[tuple[str, str, pd.DataFrame]], choose: Callable[[pd.DataFrame], int]) -> pd.DataFrame:
    """Per dataset: images, mean and worst gap (and its image), chosen and oracle mean PSNR."""
    rows = []
    for dataset, image, g in images:
        psnr = g["psnr"].to_numpy(dtype=np.float64)
        chosen = choose(g)
        rows.append((dataset, image, int(g["iteration"].iloc[chosen]), psnr[chosen], np.nanmax(psnr)))
    per_image = pd.DataFrame(rows, columns=["dataset", "image", "iteration", "chosen_psnr", "oracle_psnr"])
    per_image["gap"] = per_image["oracle_psnr"] - per_image["chosen_psnr"]
    summary = []
    for dataset, d in per_image.groupby("dataset", sort=True):
        worst = d.loc[d["gap"].idxmax()]
        summary.append(
            {
                "dataset": dataset,
                "images": len(d),
                "mean_gap": d["gap"].mean(),
                "worst_gap": worst["gap"],
                "worst_image": worst["image"],
                "chosen_psnr": d["chosen_psnr"].mean(),
                "oracle_psnr": d["oracle_psnr"].mean(),
            }
        )
    return pd.DataFrame(summary)


def sweep(stats: pd.DataFrame) -> pd.DataFrame:
    images, tables = by_image(stats), []
    for order, (family, settings, choose) in enumerate(candidates(stats)):
        tables.append(measure(images, choose).assign(family=family, settings=settings, order=order))
    return pd.concat(tables, ignore_index=True)


def tuned(table: pd.DataFrame, tune: str) -> pd.DataFrame:
    """Per family, the setting with the least mean gap on `tune` (ties: least worst gap, then grid order)."""
    on_tune = table[table["dataset"] == tune].sort_values(["family", "mean_gap", "worst_gap", "order"])
    picks = on_tune.groupby("family", sort=False).head(1)[["family", "settings"]]
    return table.merge(picks, on=["family", "settings"]).sort_values(["order", "dataset"])


def spearman(stats: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: BIQAN's score against PSNR, Spearman over each image's snapshots (mean, median, worst image)."""
    from biqan.select import spearman_by_image

    rows = []
    for dataset, d in stats.groupby("dataset", sort=True):
        per_image = spearman_by_image(d, "biqan_mean")
        if len(per_image):
            worst = per_image.idxmin()
            rows.append((dataset, len(per_image), per_image.mean(), per_image.median(), per_image[worst], worst))
    return pd.DataFrame(rows, columns=["dataset", "images", "mean", "median", "worst", "worst_image"])


def summary_markdown(
    table: pd.DataFrame, tune: str, command: str, stats_path: Path, ranks: pd.DataFrame | None = None
) -> str:
    lines = [
        "# Judges tuned on one dataset, measured on the others (snapshot replay)",
        "",
        f"Command ({datetime.date.today().isoformat()}):",
        "",
        f"    {command}",
        "",
        f"Table: {stats_path}. Each family's setting is the one with the least mean gap on {tune} (the tuning set);",
        "the other datasets were not looked at to choose it. gap = best snapshot PSNR - chosen snapshot PSNR (dB).",
        "",
        "| judge | tuned setting | dataset | images | mean gap (dB) | worst gap (dB, image) | chosen mean PSNR "
        "| oracle mean PSNR |",
        "| --- | --- | --- | --: | --: | --- | --: | --: |",
    ]
    for row in table.itertuples():
        role = " (tuning set)" if row.dataset == tune else ""
        lines.append(
            f"| {row.family} | {row.settings} | {row.dataset}{role} | {row.images} | {row.mean_gap:.3f} | "
            f"{row.worst_gap:.3f} ({row.worst_image}) | {row.chosen_psnr:.2f} | {row.oracle_psnr:.2f} |"
        )
    if "CC" in set(table["dataset"]):
        from biqan.select import SEED_REPORTED

        lines += ["", f"Beside CC: the {SEED_REPORTED}."]
    if ranks is not None and len(ranks):
        lines += ["", "BIQAN's score vs PSNR (Spearman over each image's snapshots):", ""]
        lines += ["| dataset | images | mean | median | worst (image) |", "| --- | --: | --: | --: | --- |"]
        for row in ranks.itertuples():
            lines.append(
                f"| {row.dataset} | {row.images} | {row.mean:.3f} | {row.median:.3f} | {row.worst:.3f} "
                f"({row.worst_image}) |"
            )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--stats", type=Path, required=True, help="benchmarks/snapshot_features.py's table")
    add("--tune", default="PolyU-train", help="the dataset the settings are chosen on (default %(default)s)")
    add("--until", type=whole, default=None, help="only the snapshots at or before this iteration")
    add("--out", type=Path, default=Path("results/judge_tuning"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if not args.stats.is_file():
            raise BdnError(f"{args.stats}: no such table (make it with benchmarks/snapshot_features.py)")
        stats = pd.read_csv(args.stats)
        needed = {"dataset", "image", "iteration", "psnr", "mse_noisy", "sigma"}
        if not needed <= set(stats.columns):
            raise BdnError(f"{args.stats}: needs the columns {', '.join(sorted(needed - set(stats.columns)))}")
        if args.until is not None:
            stats = stats[stats["iteration"] <= args.until]
        if args.tune not in set(stats["dataset"]):
            raise BdnError(
                f"--tune {args.tune}: not a dataset of {args.stats} ({', '.join(sorted(set(stats['dataset'])))})"
            )
        table = sweep(stats)
        best = tuned(table, args.tune)
        ranks = spearman(stats) if "biqan_mean" in stats.columns else None
    except BdnError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    table.drop(columns="order").to_csv(args.out / "sweep.csv", index=False)
    best.drop(columns="order").to_csv(args.out / "summary.csv", index=False)
    command = shlex.join(["python", PROG, *(sys.argv[1:] if argv is None else argv)])
    text = summary_markdown(best, args.tune, command, args.stats, ranks)
    if ranks is not None:
        ranks.to_csv(args.out / "spearman.csv", index=False)
    (args.out / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
