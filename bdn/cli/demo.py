"""`bdn demo`: every method on sample images that ship with bdn (DIP on a crop); a figure and a table."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="results/demo", help="output folder (default results/demo)")
    parser.add_argument("--methods", nargs="+", help="these methods (default: all; dip runs on a 128x128 crop)")


def run(args: argparse.Namespace) -> int:
    from bdn.demo import run_demo

    run_demo(Path(args.output), methods=args.methods)
    return 0
