"""The `bdn` command: one front door to denoising, the demo, the bench and the dataset downloads.

Bad input prints one line and exits non-zero; a traceback from here is a bug.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bdn.errors import BdnError


def parse_value(text: str) -> int | float | str:
    """A command-line value as the number it spells, else the string itself."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_params(pairs: list[str]) -> dict:
    """`--param h=0.1 --param profile=lc` -> {'h': 0.1, 'profile': 'lc'} (numbers become numbers)."""
    params = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise BdnError(f"--param takes NAME=VALUE, got {pair!r}")
        params[key.strip()] = parse_value(text)
    return params


def run_denoise(args: argparse.Namespace) -> int:
    import pandas as pd

    from bdn.batch import denoise_files
    from bdn.report import markdown_table

    params = parse_params(args.param)
    if args.sigma is not None:
        params["sigma"] = args.sigma
    report = denoise_files(args.inputs, Path(args.output), args.method, params, overwrite=args.overwrite)
    if report.rows:
        print(markdown_table(pd.DataFrame(report.rows)))
    done = sum(row["status"] == "done" for row in report.rows)
    print(f"{done} denoised, {len(report.rows) - done} skipped, {len(report.problems)} failed")
    for problem in report.problems:
        print(f"failed: {problem}", file=sys.stderr)
    return 1 if report.problems else 0


def run_demo(args: argparse.Namespace) -> int:
    from bdn.demo import run_demo as demo

    demo(Path(args.output), methods=args.methods)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from bdn.bench import run_bench as bench

    bench(
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


def run_download(args: argparse.Namespace) -> int:
    from bdn.download import download_dataset

    for name in args.names:
        folder = download_dataset(name, args.root, base_url=args.base_url)
        print(f"{name}: {folder}")
    return 0


def run_methods(args: argparse.Namespace) -> int:
    from bdn.methods import METHODS

    for method in METHODS.values():
        print(f"{method.name:18s} {method.family:10s} {method.summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bdn.methods import METHODS

    parser = argparse.ArgumentParser(prog="bdn", description="Blind image denoising.")
    commands = parser.add_subparsers(dest="command", required=True)

    denoise = commands.add_parser("denoise", help="denoise image files, folders or glob patterns")
    denoise.add_argument("inputs", nargs="+", help="image files, folders or quoted glob patterns")
    denoise.add_argument("-o", "--output", required=True, help="output folder (or file name for one input)")
    # NLM by default: best of the classical methods on real camera noise (CC, PolyU) and 30x faster than BM3D there.
    denoise.add_argument("-m", "--method", default="nlm", help=f"one of: {', '.join(METHODS)} (default nlm)")
    denoise.add_argument("--sigma", type=float, help="noise level in 0-255 units (estimated when left out)")
    denoise.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="method parameter")
    denoise.add_argument("--overwrite", action="store_true", help="replace outputs that exist (default: skip them)")
    denoise.set_defaults(handler=run_denoise)

    demo = commands.add_parser("demo", help="denoise sample images with every method; figure and table")
    demo.add_argument("-o", "--output", default="results/demo", help="output folder (default results/demo)")
    demo.add_argument("--methods", nargs="+", help="only these methods (default: all)")
    demo.set_defaults(handler=run_demo)

    bench = commands.add_parser("bench", help="measure methods on datasets: PSNR, SSIM, time, memory")
    bench.add_argument("--methods", nargs="+", default=["noisy", *METHODS], help="methods ('noisy' = input)")
    bench.add_argument(
        "--datasets", nargs="+", default=["CC", "PolyU", "Set12", "BSD68"], help="names; NAME:S1,S2 sets own sigmas"
    )
    bench.add_argument("--sigma", nargs="+", type=float, default=[25.0], help="synthetic noise for clean-only sets")
    bench.add_argument("--blind", action="store_true", help="estimate sigma even where the true one is known")
    bench.add_argument("--threads", type=int, default=2, help="threads per method process (default 2)")
    bench.add_argument("--limit", type=int, help="at most this many images per dataset")
    bench.add_argument("--polyu-split", choices=["all", "train", "heldout"], default="all")
    bench.add_argument("-o", "--output", default="results/bench", help="where runs are written")
    bench.add_argument("--run", help="run name (default: date and time); an existing run resumes")
    bench.set_defaults(handler=run_bench)

    download = commands.add_parser("download", help="download public datasets (checksummed)")
    download.add_argument("names", nargs="+", help="CC, PolyU, Set12, BSD68, Train400")
    download.add_argument("--root", help="data root (default: BDN_DATA or the project's datasets/)")
    download.add_argument("--base-url", help="alternative source root (a mirror, or file:// for a local copy)")
    download.set_defaults(handler=run_download)

    methods = commands.add_parser("methods", help="list the denoising methods")
    methods.set_defaults(handler=run_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BdnError as error:
        print(f"bdn: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bdn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
