"""Fit the learned judge (biqan/combined.py) on PolyU-train's snapshots and measure it on every other dataset.

    python benchmarks/learned_judge.py --stats benchmarks/records/judges_h100_snapshots.csv.gz \
        --tune PolyU-train --out results/learned_judge --weights checkpoints/judge_learned.json

Reads benchmarks/snapshot_features.py's table (one row per DIP snapshot: recorded PSNR, the noise judge's residual
and noise estimate, WMV's windowed variances, BIQAN's scores), computes each snapshot's features with
`biqan.combined.feature_table` (the judge's own definition, so offline and online agree), fits the linear model by
ridge regression on the `--tune` dataset(s) only, several pooled (target: minus the gap to the image's best
snapshot, clipped at 3 dB), and replays the judge on every dataset: per image the snapshot with the highest
prediction (no stop, as the shipped judge runs). Also fitted and measured the same way: the model without BIQAN's
two features, to show what BIQAN adds. `--patience N` replays with the judge's patience (stop once N snapshots
have not raised the best prediction); `--until N` keeps the snapshots at or before iteration N (the fits as they
stood then); `--cv` adds the `--tune` rows left out one PolyU scene at a time (each scene
replayed by a model fitted on the others: how the judge does on scenes it has not seen). Writes <out>/summary.csv,
<out>/summary.md (with the weights and the command) and, with `--weights`, the judge's weights file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.cli.options import OneLineParser, whole
from bdn.errors import BdnError
from bdn.names import polyu_group
from biqan.combined import FEATURES, WMV_WINDOW, feature_table

PROG = "benchmarks/learned_judge.py"
GAP_CLIP = 3.0  # dB: a collapsed snapshot is as bad as any other bad one for choosing


def features(stats: pd.DataFrame) -> pd.DataFrame:
    """The stats table with FEATURES and `gap` added, per (dataset, image) in iteration order."""
    parts = []
    for _, group in stats.groupby(["dataset", "image"], sort=True):
        group = group.sort_values("iteration").copy()
        table = feature_table(
            group["mse_noisy"].to_numpy(),
            float(group["sigma"].iloc[0]),
            group[f"var{WMV_WINDOW}"].to_numpy(),
            group["biqan_mean"].to_numpy() if "biqan_mean" in group else np.full(len(group), np.nan),
        )
        group[list(FEATURES)] = table
        group["gap"] = group["psnr"].max() - group["psnr"]
        parts.append(group)
    return pd.concat(parts, ignore_index=True)


def fit(rows: pd.DataFrame, used: Sequence[str], ridge: float) -> tuple[np.ndarray, float]:
    """Ridge regression of -min(gap, GAP_CLIP) on the `used` features (the others weigh 0); (weights, bias)."""
    x = np.c_[rows[list(used)].to_numpy(), np.ones(len(rows))]
    y = -np.minimum(rows["gap"].to_numpy(), GAP_CLIP)
    penalty = ridge * np.eye(x.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    solution = np.linalg.solve(x.T @ x + penalty, x.T @ y)
    weights = dict(zip(used, solution[:-1], strict=True))
    return np.array([weights.get(name, 0.0) for name in FEATURES]), float(solution[-1])


def replay(rows: pd.DataFrame, weights: np.ndarray, bias: float, patience: int | None = None) -> pd.DataFrame:
    """Per (dataset, image): the chosen snapshot (highest prediction, the first of equal ones) and its gap. With
    `patience`, as the judge's own option: the replay stops once that many snapshots have not raised the best
    prediction, and the choice is the best up to there. Each image's rows in iteration order, as `features` gives."""
    out = []
    for (dataset, image), group in rows.groupby(["dataset", "image"], sort=True):
        prediction = group[list(FEATURES)].to_numpy() @ weights + bias
        chosen, since = 0, 0
        for k in range(1, len(prediction)):
            if patience is not None and since >= patience:
                break
            if prediction[k] > prediction[chosen]:
                chosen, since = k, 0
            else:
                since += 1
        out.append(
            {
                "dataset": dataset,
                "image": image,
                "iteration": int(group["iteration"].iloc[chosen]),
                "psnr": float(group["psnr"].iloc[chosen]),
                "oracle_psnr": float(group["psnr"].max()),
                "gap": float(group["gap"].iloc[chosen]),
            }
        )
    return pd.DataFrame(out)


def _scene(image: str) -> str:
    """The group an image is held out with: its PolyU scene (crops of one scene are near-duplicates), else itself."""
    try:
        return "/".join(polyu_group(image))
    except BdnError:
        return image


def cross_validated(rows: pd.DataFrame, used: Sequence[str], ridge: float, patience: int | None) -> pd.DataFrame:
    """Leave one scene out: each scene's images replayed by a model fitted on the other scenes' rows."""
    scenes = rows["image"].map(_scene)
    parts = [
        replay(rows[scenes == scene], *fit(rows[scenes != scene], used, ridge), patience) for scene in scenes.unique()
    ]
    return pd.concat(parts, ignore_index=True)


def summarise(chosen: pd.DataFrame, judge: str) -> pd.DataFrame:
    rows = []
    for dataset, group in chosen.groupby("dataset", sort=True):
        worst = group.loc[group["gap"].idxmax()]
        rows.append(
            {
                "judge": judge,
                "dataset": dataset,
                "images": len(group),
                "mean_gap": group["gap"].mean(),
                "worst_gap": worst["gap"],
                "worst_image": worst["image"],
                "chosen_psnr": group["psnr"].mean(),
                "oracle_psnr": group["oracle_psnr"].mean(),
            }
        )
    return pd.DataFrame(rows)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Fit the learned judge on one dataset, measure it on the rest.")
    parser.add_argument("--stats", required=True, help="benchmarks/snapshot_features.py's table (csv or csv.gz)")
    parser.add_argument(
        "--tune", nargs="+", default=["PolyU-train"], help="the dataset(s) the model is fitted on (PolyU-train)"
    )
    parser.add_argument("--ridge", type=float, default=1.0, help="ridge penalty (default 1)")
    parser.add_argument(
        "--patience", type=int, default=None, help="replay with the judge's patience (snapshots; default: no stop)"
    )
    parser.add_argument(
        "--cv", action="store_true", help="also the --tune rows left out one scene at a time (rows 'learned (CV)')"
    )
    parser.add_argument("--until", type=whole, default=None, help="only the snapshots at or before this iteration")
    parser.add_argument("--out", default="results/learned_judge", help="folder for summary.csv / summary.md")
    parser.add_argument("--weights", default=None, help="also write the judge's weights file here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        stats = pd.read_csv(args.stats)
        if args.until is not None:
            stats = stats[stats["iteration"] <= args.until]
        missing = {"dataset", "image", "iteration", "psnr", "mse_noisy", "sigma", f"var{WMV_WINDOW}"} - set(stats)
        if missing:
            raise BdnError(f"{args.stats}: no column {', '.join(sorted(missing))} (expected snapshot_features.py's)")
        rows = features(stats)
        for name in args.tune:
            if name not in set(rows["dataset"]):
                known = ", ".join(rows["dataset"].unique())
                raise BdnError(f"--tune {name}: no such dataset in {args.stats} ({known})")
        tune = rows[rows["dataset"].isin(args.tune)]
        variants = {"learned": FEATURES, "learned without BIQAN": ("rho", "slope", "wmv")}
        fitted = {name: fit(tune, used, args.ridge) for name, used in variants.items()}
        parts = [summarise(replay(rows, *fitted[name], args.patience), name) for name in variants]
        if args.cv:
            tuned = rows[rows["dataset"].isin(args.tune)]
            parts += [
                summarise(cross_validated(tuned, used, args.ridge, args.patience), f"{name} (CV)")
                for name, used in variants.items()
            ]
        summary = pd.concat(parts, ignore_index=True)
    except BdnError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from bdn.io import atomic_write_text
    from bdn.report import markdown_table

    weights, bias = fitted["learned"]
    record = {
        "features": list(FEATURES),
        "weights": [round(float(w), 6) for w in weights],
        "bias": round(bias, 6),
        "trained_on": f"{' + '.join(args.tune)} rows of {Path(args.stats).name} (ridge {args.ridge:g}, gaps clipped at "
        f"{GAP_CLIP:g} dB)",
        "made": datetime.date.today().isoformat(),
    }
    if args.weights:
        atomic_write_text(Path(args.weights), json.dumps(record, indent=1) + "\n")
    atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    command = " ".join(shlex.quote(a) for a in ["python", PROG, *(sys.argv[1:] if argv is None else argv)])
    weights_line = ", ".join(f"{name} {w:+.3f}" for name, w in zip(FEATURES, weights, strict=True))
    text = (
        f"{markdown_table(summary, floatfmt='.3f')}\n\nweights (learned): {weights_line}, bias {bias:+.3f}\n\n"
        f"Command: `{command}` ({record['made']})\n"
    )
    atomic_write_text(out / "summary.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
