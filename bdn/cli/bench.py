"""`bdn bench`: measure methods on datasets (PSNR, SSIM, time, memory), one process per method."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from bdn.methods import METHODS

    add = parser.add_argument
    # DIP joins a bench only when named: minutes to hours an image on a CPU (`bdn run` is its dataset runner).
    quick = [name for name, method in METHODS.items() if method.family != "dip"]
    add("--methods", nargs="+", default=["noisy", *quick], help="methods ('noisy' = input; dip if named)")
    add("--datasets", nargs="+", default=["CC", "PolyU", "Set12", "BSD68"], help="names; NAME:S1,S2 sets own sigmas")
    add("--sigma", nargs="+", type=float, default=[25.0], help="synthetic noise for clean-only sets")
    add("--blind", action="store_true", help="estimate sigma even where the true one is known")
    add("--threads", type=int, default=2, help="threads per method process (default 2)")
    add("--limit", type=int, help="at most this many images per dataset")
    add("--polyu-split", choices=["all", "train", "heldout"], default="all")
    add("-o", "--output", default="results/bench", help="where runs are written")
    add("--run", help="run name (default: date and time); an existing run resumes")


def run(args: argparse.Namespace) -> int:
    from bdn.bench import run_bench

    run_bench(
        methods=args.methods,
        datasets=args.datasets,
        sigmas=args.sigma,
        blind=args.blind,
        threads=args.threads,
        limit=args.limit,
        polyu_split=args.polyu_split,
        out_root=Path(args.output),
        run_name=args.run,
    )
    return 0
