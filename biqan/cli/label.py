"""`bdn label` (generator_dataset.py): score labels for a run folder's DIP iterates (the recipe: biqan/labels.py).

    bdn label --run-path results/PolyU --output-path results/PolyU/scores.txt
    python generator_dataset.py --dataset_path RUN --output_path S --is_use_fix_minmax False --start_position 8

Writes the score file (`<snapshot path> p1 ... p10` per iterate) and `<output stem>_psnr_vs_score.png`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bdn.cli.options import boolean
from bdn.dip.runfolder import Iterate
from bdn.errors import BdnError
from biqan.labels import mean_scores, score_distribution


def configure(parser: argparse.ArgumentParser) -> None:
    from biqan.labels import HI_DB, LO_DB, START_POSITION

    add = parser.add_argument
    add(
        "--run-path",
        "--dataset-path",
        dest="run_path",
        nargs="+",
        action="extend",
        required=True,
        metavar="RUN",
        help="run_BDN output folder(s) (--dataset_path: the seed's name)",
    )
    add("--output-path", default=None, help="score file (default: <RUN>/scores.txt for a single run)")
    add("--start-position", type=int, default=START_POSITION, help="skip each image's first N iterates")
    for name, default, text in (
        ("is_use_fix_minmax", True, "fixed bounds --lo/--hi (true) or each image's own PSNR range (false)"),
        ("is_use_exp", False, "map exp(PSNR) instead of PSNR"),
    ):
        flag = name.replace("_", "-")
        add(f"--{flag}", type=boolean, nargs="?", const=True, default=default, metavar="BOOL", help=text)
        add(f"--no-{flag}", dest=name, action="store_false", help=f"--{flag} false")
    add("--lo", type=float, default=LO_DB, help="PSNR (dB) mapped to mean score 2.5 with fixed bounds")
    add("--hi", type=float, default=HI_DB, help="PSNR (dB) mapped to mean score 7.5 with fixed bounds")


def _plot_bytes(psnrs: np.ndarray, means: np.ndarray, args: argparse.Namespace) -> bytes:
    import io

    from bdn.report import new_figure

    figure, axis = new_figure(figsize=(6, 4.2))
    axis.scatter(psnrs, means, s=14, alpha=0.6, lw=0, zorder=3, label="iterates")
    if args.is_use_fix_minmax:
        finite = np.concatenate([psnrs[np.isfinite(psnrs)], [args.lo, args.hi]])
        grid = np.linspace(finite.min() - 1, finite.max() + 1, 400)
        curve = mean_scores(score_distribution(grid, args.lo, args.hi, args.is_use_exp))
        axis.plot(grid, curve, color="black", lw=0.8, label=f"label mean, bounds {args.lo:g}..{args.hi:g} dB")
    axis.set_xlabel("PSNR against clean (dB)")
    axis.set_ylabel("mean score of the label (1..10)")
    axis.set_ylim(0.8, 10.2)
    bounds = f"fixed {args.lo:g}..{args.hi:g} dB" if args.is_use_fix_minmax else "per-image min..max"
    axis.set_title(f"{len(psnrs)} iterates; {bounds}{', exp' if args.is_use_exp else ''}", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _summary(runs: Sequence[Path], labelled: list[tuple[Iterate, np.ndarray]]) -> str:
    import pandas as pd

    from bdn.report import markdown_table

    records = []
    groups = [(str(run), [(it, p) for it, p in labelled if it.path.parent.parent == run]) for run in runs]
    if len(runs) > 1:
        groups.append(("all", labelled))
    for name, rows in groups:
        if not rows:
            records.append({"run": name, "images": 0, "iterates": 0})
            continue
        psnrs = np.array([it.psnr for it, _ in rows])
        means = mean_scores(np.stack([p for _, p in rows]))
        records.append(
            {
                "run": name,
                "images": len({it.path.parent for it, _ in rows}),
                "iterates": len(rows),
                "psnr_min": psnrs.min(),
                "psnr_max": psnrs.max(),
                "score_min": means.min(),
                "score_max": means.max(),
            }
        )
    frame = pd.DataFrame(records)
    return markdown_table(frame.astype(object).where(frame.notna(), ""), floatfmt=".2f")


def run(args: argparse.Namespace) -> int:
    """Label every iterate of the runs; nothing is written on bad input."""
    from bdn.dip.runfolder import read_run
    from bdn.io import atomic_write_bytes
    from biqan.labels import label_iterates, write_scores

    runs = [Path(run) for run in dict.fromkeys(args.run_path)]
    if args.output_path is None and len(runs) > 1:
        raise BdnError("give --output_path when reading several runs")
    output = Path(args.output_path) if args.output_path is not None else runs[0] / "scores.txt"
    if output.is_dir():
        raise BdnError(f"--output_path {output}: is a folder; give a score file name")
    iterates = [iterate for run in runs for iterate in read_run(run)]
    labelled = label_iterates(
        iterates,
        start_position=args.start_position,
        fix_minmax=args.is_use_fix_minmax,
        use_exp=args.is_use_exp,
        lo=args.lo,
        hi=args.hi,
    )
    psnrs = np.array([it.psnr for it, _ in labelled], dtype=np.float64)
    means = mean_scores(np.stack([p for _, p in labelled]))
    plot = _plot_bytes(psnrs, means, args)
    plot_path = output.with_name(f"{output.stem}_psnr_vs_score.png")
    write_scores(output, [(it.path, p) for it, p in labelled])
    atomic_write_bytes(plot_path, plot)
    from bdn.record import make_record, options_of, write_record

    logs = [run / it_folder / "log.csv" for run in runs for it_folder in sorted({it.image for it in iterates})]
    inputs = [path for path in logs if path.is_file()]
    write_record(
        output.with_name(output.name + ".json"),
        make_record("bdn label", options_of(args), inputs=inputs, outputs=[output, plot_path]),
    )
    table = _summary(runs, labelled)
    print(table)
    print(f"wrote {output} ({len(labelled)} iterates) and {plot_path}")
    return 0
