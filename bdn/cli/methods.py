"""`bdn methods`: the denoising methods, their family and what each does."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from bdn.methods import METHODS

    width = max(len(name) for name in METHODS) + 1
    for method in METHODS.values():
        print(f"{method.name:{width}s} {method.family:10s} {method.summary}")
    return 0
