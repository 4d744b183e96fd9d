"""`bdn methods`: the denoising methods, their family and what each does."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--all", action="store_true", help="also the registered models that ship no weights (need --weights FILE)"
    )


def run(args: argparse.Namespace) -> int:
    from bdn.methods import METHODS, get_method, unshipped_models

    # Models that ship no weights are left out unless asked for (listing them loads torch): a user cannot run them
    # without a weights file of their own.
    methods = list(METHODS.values())
    if args.all:
        methods += [get_method(name) for name in unshipped_models()]
    width = max(len(method.name) for method in methods) + 1
    for method in methods:
        print(f"{method.name:{width}s} {method.family:10s} {method.summary}")
    if not args.all:
        print("(bdn methods --all also lists the registered models that ship no weights: use them with --weights FILE)")
    return 0
