"""`bdn denoise`: denoise image files, folders or glob patterns with any method."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bdn.cli.options import parse_params


def configure(parser: argparse.ArgumentParser) -> None:
    from bdn.methods import METHODS

    add = parser.add_argument
    add("inputs", nargs="+", help="image files, folders or quoted glob patterns")
    add("-o", "--output", required=True, help="output folder (or file name for one input)")
    # auto by default: a blind look at each image picks the method bdn's bench found best for its noise (bdn/auto.py)
    add(
        "-m",
        "--method",
        help=f"one of: {', '.join(METHODS)}; or, with --weights, any model of `bdn methods --all` (default: the "
        "model --weights was trained for, else auto, which picks a method for each image and says which)",
    )
    add("--weights", metavar="FILE", help="a model's weights file (written by bdn train) in place of its shipped ones")
    add("--sigma", type=float, help="noise level in 0-255 units (estimated when left out)")
    add("--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter")
    add("--overwrite", action="store_true", help="replace outputs that exist (default: skip them)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from bdn.batch import denoise_files
    from bdn.report import markdown_table

    params = parse_params(args.param)
    if args.sigma is not None:
        params["sigma"] = args.sigma
    if args.weights is not None:
        params["weights"] = args.weights
    method = args.method
    if method is None and args.weights is not None:  # the model the file was written for
        from bdn.models.weights import read_weights_metadata

        method = read_weights_metadata(args.weights)[0]
    report = denoise_files(args.inputs, Path(args.output), method or "auto", params, overwrite=args.overwrite)
    if report.rows:
        print(markdown_table(pd.DataFrame(report.rows)))
    done = sum(row["status"] == "done" for row in report.rows)
    print(f"{done} denoised, {len(report.rows) - done} skipped, {len(report.problems)} failed")
    for note in report.notes:
        print(f"note: {note}")
    for problem in report.problems:
        print(f"failed: {problem}", file=sys.stderr)
    return 1 if report.problems else 0
