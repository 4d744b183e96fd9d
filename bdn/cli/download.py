"""`bdn download`: public datasets, checksummed, into the data root."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", help="CC, PolyU, Set12, BSD68, Train400")
    parser.add_argument("--root", help="data root (default: BDN_DATA or the project's datasets/)")
    parser.add_argument("--base-url", help="alternative source root (a mirror, or file:// for a local copy)")


def run(args: argparse.Namespace) -> int:
    from bdn.download import download_dataset

    for name in args.names:
        folder = download_dataset(name, args.root, base_url=args.base_url)
        print(f"{name}: {folder}")
    return 0
