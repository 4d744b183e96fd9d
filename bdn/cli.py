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
    for note in report.notes:
        print(f"note: {note}")
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

    width = max(len(name) for name in METHODS) + 1
    for method in METHODS.values():
        print(f"{method.name:{width}s} {method.family:10s} {method.summary}")
    return 0


def run_dip_init(args: argparse.Namespace) -> int:
    import time

    from bdn.dip import DipConfig
    from bdn.dip.init import InitConfig, init_metadata, learn_init, shipped_inits

    if args.list:
        for name, path in shipped_inits().items():
            meta = init_metadata(path)
            keys = ("scheme", "net_type", "input_base", "channels", "mask_ratio", "steps", "source")
            print(f"{name:16s} " + " ".join(f"{key}={meta.get(key, '?')}" for key in keys))
        if not shipped_inits():
            print("no shipped DIP initialisations")
        return 0
    if args.folder is None or args.out is None:
        raise BdnError("dip-init needs a FOLDER of images and --out PATH (or --list)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(max(1, args.threads))
    # The fit the weights are for: reptile meta-learns the plain DIP (noise input); masked learns to fill in images.
    dip = DipConfig(net_type=args.net_type)
    if args.scheme == "masked":
        dip = DipConfig(net_type=args.net_type, input_base="image", mask_ratio=args.fit_mask_ratio)
    names = ("steps", "patch", "inner_steps", "meta_lr", "batch", "lr", "mask_ratio", "seed")
    config = InitConfig(scheme=args.scheme, dip=dip, **{name: getattr(args, name) for name in names})
    start = time.perf_counter()
    out = learn_init(Path(args.folder), Path(args.out), config, channels=args.channels, device=args.device)
    print(f"wrote {out} ({args.scheme}, {config.steps} steps, {time.perf_counter() - start:.1f} s)")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    import pandas as pd
    import torch

    from bdn.explain import explain, image_for_channels, parse_pixel
    from bdn.io import read_image
    from bdn.models import get_model_spec, load_model
    from bdn.noise import add_noise
    from bdn.report import markdown_table

    pixels = [parse_pixel(text) for text in args.pixels]
    spec = get_model_spec(args.model)
    image, _ = read_image(args.image)
    channels = args.channels or (1 if image.ndim == 2 else 3)
    image = image_for_channels(image, channels)
    if args.noise_sigma:
        image = add_noise(image, "gaussian", args.noise_sigma, seed=args.seed)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    model = load_model(args.model, channels, weights=args.weights)
    if not spec.bias_free:
        print(
            f"bdn: warning: {args.model} has biases, so f(y) = J(y) y does not hold: the filters are only its local "
            "linearisation, and the reconstruction_error column shows what the biases add",
            file=sys.stderr,
        )
    out_dir = Path(args.output or f"explain_{Path(args.image).stem}")
    title = args.model + (f", noise sigma {args.noise_sigma:g}" if args.noise_sigma else "")
    rows, paths = explain(model, image, pixels, out_dir, fraction=args.fraction, title=title)
    print(markdown_table(pd.DataFrame(rows), floatfmt=".3g"))
    print(f"wrote {', '.join(map(str, paths))} (ERF: the radius holding {args.fraction:.0%} of the filter's |weight|)")
    return 0


APP_MAX_UPLOAD_MB = 25


def run_app(args: argparse.Namespace) -> int:
    """Start the web page (app/bdn_app.py) with Streamlit, on localhost unless --host says otherwise."""
    import importlib.util
    import subprocess
    from importlib import resources

    script = Path(str(resources.files("bdn.app") / "bdn_app.py"))
    if importlib.util.find_spec("streamlit") is None:
        raise BdnError("the web app needs Streamlit: pip install 'bdn[app]' (or pip install streamlit)")
    if not 1 <= args.port <= 65535:
        raise BdnError(f"--port must be between 1 and 65535, got {args.port}")
    command = [sys.executable, "-m", "streamlit", "run", str(script)]
    command += ["--server.address", args.host, "--server.port", str(args.port), "--server.headless", "true"]
    # The server refuses uploads above the page's own limit (app/logic.py's MAX_UPLOAD_MB, which imports Streamlit's
    # side of things: not loaded here); no file watching, no usage statistics sent anywhere, no developer menu.
    command += ["--server.maxUploadSize", str(APP_MAX_UPLOAD_MB), "--server.fileWatcherType", "none"]
    command += ["--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"bdn app: open http://{shown}:{args.port} (Ctrl+C stops it)", flush=True)
    return subprocess.call(command)


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
    demo.add_argument("--methods", nargs="+", help="these methods (default: all; dip runs on a 128x128 crop)")
    demo.set_defaults(handler=run_demo)

    bench = commands.add_parser("bench", help="measure methods on datasets: PSNR, SSIM, time, memory")
    # DIP joins a bench only when named: minutes to hours an image on a CPU (run_BDN.py is its dataset runner).
    quick = [name for name, method in METHODS.items() if method.family != "dip"]
    bench.add_argument(
        "--methods", nargs="+", default=["noisy", *quick], help="methods ('noisy' = input; dip if named)"
    )
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

    init = commands.add_parser("dip-init", help="learn a DIP initialisation (--init) from a folder of images")
    init.add_argument("folder", nargs="?", help="images: noisy ones (reptile) or clean ones (masked)")
    init.add_argument("--out", help="safetensors file to write; an unfinished run there resumes")
    init.add_argument("--list", action="store_true", help="list the shipped initialisations and stop")
    init.add_argument("--scheme", default="reptile", help="reptile (meta-learning) or masked (MPI); default reptile")
    init.add_argument("--net-type", default="skip", help="DIP net the weights are for (default skip)")
    init.add_argument("--channels", type=int, default=3, help="1 (grey) or 3 (colour, default)")
    init.add_argument("--fit-mask-ratio", type=float, default=0.5, help="masked: share hidden in the DIP fit (0.5)")
    for flag, kind, default, what in (
        ("steps", int, 1000, "outer steps (reptile) or batches (masked)"),
        ("patch", int, 64, "side of the random training patches"),
        ("inner-steps", int, 10, "reptile: DIP iterations per patch"),
        ("meta-lr", float, 1.0, "reptile: outer step size, decayed to 0"),
        ("batch", int, 8, "masked: patches per batch"),
        ("lr", float, 1e-3, "masked: Adam's rate, cosine-decayed"),
        ("mask-ratio", float, 0.5, "masked: share of pixels hidden in training"),
    ):
        init.add_argument(f"--{flag}", type=kind, default=default, help=f"{what} (default {default})")
    init.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--threads", type=int, help="CPU threads for torch")
    init.set_defaults(handler=run_dip_init)

    explain = commands.add_parser("explain", help="show a bias-free model's adaptive filters at chosen pixels")
    explain.add_argument("image", help="image file")
    explain.add_argument("--model", required=True, help="a registered model name (bdn.models.MODELS)")
    explain.add_argument("--channels", type=int, help="1 (grey) or 3 (colour); default: the image's own")
    explain.add_argument("--weights", help="a .safetensors file from bdn (default: the weights shipped for the model)")
    explain.add_argument("--pixels", nargs="+", required=True, metavar="ROW,COL", help="output pixels to explain")
    explain.add_argument("-o", "--output", help="output folder (default explain_<image stem>)")
    explain.add_argument("--noise-sigma", type=float, help="add Gaussian noise of this sigma (0-255 units) first")
    explain.add_argument("--seed", type=int, default=0, help="seed of that noise (default 0)")
    explain.add_argument("--fraction", type=float, default=0.9, help="share of |weight| the ERF holds (default 0.9)")
    explain.add_argument("--threads", type=int, help="CPU threads for torch")
    explain.set_defaults(handler=run_explain)

    methods = commands.add_parser("methods", help="list the denoising methods")
    methods.set_defaults(handler=run_methods)

    app = commands.add_parser("app", help="the web page: upload, denoise, compare, download (Streamlit)")
    app.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    app.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    app.set_defaults(handler=run_app)
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
