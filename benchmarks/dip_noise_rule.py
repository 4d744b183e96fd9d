"""Replay the 'noise' judge (discrepancy principle) on recorded DIP curves, to choose its factor.

Reads the curves.csv of benchmarks/dip_sweep.py (per iteration: the EMA output's PSNR, its residual std against the
noisy image and the blind noise estimate, both 0-255) and, for each factor, finds where the judge fires (the first
iteration whose residual <= factor x estimate, as NoiseJudge does) and the PSNR it would keep there, against the
curve's peak. Tune on PolyU's training split only.

    python benchmarks/dip_noise_rule.py results/dip_sweep/curves.csv --factors 0.8 1 1.2 1.4 1.6

Writes <curves folder>/noise_rule.csv/.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bdn.report import write_table


def replay(curve: pd.DataFrame, factor: float) -> dict:
    """Where the rule fires on one image's curve (the last iteration when it never does)."""
    threshold = factor * float(curve.sigma_estimate.iloc[0])
    fired = curve[curve.residual <= threshold]
    row = fired.iloc[0] if len(fired) else curve.iloc[-1]
    peak = curve.loc[curve.psnr.idxmax()]
    return {
        "factor": factor,
        "fired": bool(len(fired)),
        "stop_iteration": int(row.iteration),
        "chosen_psnr": float(row.psnr),
        "peak_psnr": float(peak.psnr),
        "peak_iteration": int(peak.iteration),
        "gap": float(peak.psnr - row.psnr),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("curves", type=Path)
    parser.add_argument("--factors", type=float, nargs="+", default=[0.8, 0.9, 1.0, 1.1, 1.2, 1.4, 1.6])
    args = parser.parse_args()
    curves = pd.read_csv(args.curves)
    rows = [
        {"config": config, "image": image, **replay(curve, factor)}
        for (config, image), curve in curves.groupby(["config", "image"], sort=False)
        for factor in args.factors
    ]
    per_image = pd.DataFrame(rows)
    summary = (
        per_image.groupby(["config", "factor"])
        .agg(
            mean_gap=("gap", "mean"),
            worst_gap=("gap", "max"),
            mean_stop=("stop_iteration", "mean"),
            fired=("fired", "mean"),
            chosen=("chosen_psnr", "mean"),
            peak=("peak_psnr", "mean"),
        )
        .reset_index()
    )
    write_table(summary, args.curves.parent / "noise_rule")
    per_image.to_csv(args.curves.parent / "noise_rule_per_image.csv", index=False)
    print(summary.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
