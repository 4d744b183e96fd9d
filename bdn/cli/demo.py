"""`bdn demo`: every method on sample images that ship with bdn (DIP on a crop); a figure and a table."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", default="results/demo", help="output folder (default results/demo)")
    parser.add_argument("--methods", nargs="+", help="these methods (default: all; dip runs on a 128x128 crop)")


def run(args: argparse.Namespace) -> int:
    from bdn.demo import DEMO_SEED, run_demo
    from bdn.record import make_record, options_of, write_record

    out = Path(args.output)
    run_demo(out, methods=args.methods)
    outputs = sorted(path for path in out.iterdir() if path.is_file() and path.name != "record.json")
    record = make_record("bdn demo", options_of(args), outputs=outputs, seed=DEMO_SEED)
    write_record(out / "record.json", record)
    return 0
