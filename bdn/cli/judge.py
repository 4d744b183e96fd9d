"""`bdn judge`: replay a run folder's snapshots through a judge (bdn/judge_run.py) and measure its choice."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE a Python literal (20, 0.8, None, True) or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return key.strip(), parsed


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--run-path", required=True, help="run folder (bdn run / run_BDN.py)")
    add("--judge", required=True, help="oracle | wmv | emv | noise | biqan | learned | none")
    add("--noisy-path", default=None, help="noisy images the run fitted (<id>_real.<ext>): the noise judge needs them")
    add("--clean-path", default=None, help="clean images (<id>_mean.<ext>): PSNR measured on the snapshots")
    add("--model-path", default=None, help="biqan: a train_BIQAN checkpoint")
    add(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a judge option, e.g. window=20, patience=30, sigma=25, smooth=0.8 (repeatable)",
    )
    add(
        "--until",
        type=int,
        default=None,
        metavar="N",
        help="only the snapshots at or before iteration N: the run as if its fits had stopped there",
    )
    add("--output", default=None, help="also write the table as CSV here")
    add("--write", action="store_true", help="replace each image's choice.json / result.png with this judge's")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from bdn.io import atomic_write_text
    from bdn.judge_run import judge_run
    from bdn.report import markdown_table

    options = dict(args.option)
    if args.model_path is not None:
        options["model_path"] = args.model_path
    table = judge_run(
        args.run_path,
        args.judge,
        noisy_path=args.noisy_path,
        clean_path=args.clean_path,
        write=args.write,
        progress=args.progress,
        until=args.until,
        **options,
    )
    if args.output is not None:
        from bdn.record import make_record, options_of, write_record

        output = atomic_write_text(Path(args.output), table.to_csv(index=False))
        logs = sorted(Path(args.run_path).glob("*/log.csv"))
        weights = [args.model_path] if args.model_path else []
        record = make_record("bdn judge", options_of(args), inputs=logs, weights=weights, outputs=[output])
        write_record(output.with_name(output.name + ".json"), record)
    print(markdown_table(table.astype(object).where(table.notna(), ""), floatfmt=".3f"))
    measured = table["gap"].dropna()
    if not measured.empty:
        worst = table.loc[measured.idxmax(), "image"]
        print(
            f"mean gap {measured.mean():.3f} dB, worst {measured.max():.3f} dB ({worst}); chosen mean PSNR "
            f"{table['psnr'].mean():.3f} dB, oracle {table['oracle_psnr'].mean():.3f} dB"
        )
    return 0
