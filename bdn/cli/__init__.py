"""The `bdn` command: one front door to every step of the pipeline.

    bdn denoise | demo | bench | download | methods | explain | app      denoising, the demo, the bench, the page
    bdn run | judge | dip-init                                           Deep Image Prior over a folder, its judges
    bdn label | train-biqan | select                                     the quality network (biqan)
    bdn train | export                                                   feed-forward models: training, ONNX export

Each command is one small module with `HELP`, `configure(parser)` and `run(args) -> exit status`, named here by
its import path, so `bdn --help` imports none of them and biqan's commands live in biqan (which builds on bdn, never
the reverse). The seed's scripts at the top of a checkout (run_BDN.py, generator_dataset.py, train_BIQAN.py,
test_BIQAN.py) are shims over `run_script`. Option style, errors and exit codes: bdn/cli/options.py.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bdn.cli.options import OneLineParser, call, parse_params, parse_value

__all__ = ["COMMANDS", "build_parser", "main", "parse_params", "parse_value", "run_script"]

# name -> (module, one-line help). The help lives here so that `bdn --help` needs no command's imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "denoise": ("bdn.cli.denoise", "denoise image files, folders or glob patterns"),
    "demo": ("bdn.cli.demo", "denoise sample images with every method; figure and table"),
    "bench": ("bdn.cli.bench", "measure methods on datasets: PSNR, SSIM, time, memory"),
    "download": ("bdn.cli.download", "download public datasets (checksummed)"),
    "methods": ("bdn.cli.methods", "list the denoising methods"),
    "explain": ("bdn.cli.explain", "show a bias-free model's adaptive filters at chosen pixels"),
    "app": ("bdn.cli.app", "the web page: upload, denoise, compare, download (Streamlit)"),
    "run": ("bdn.cli.run", "Deep Image Prior over a folder of images, resumable (run_BDN.py)"),
    "judge": ("bdn.cli.judge", "replay a run folder's snapshots through a judge: choice and gap to the best"),
    "dip-init": ("bdn.cli.dip_init", "learn a DIP initialisation (--init) from a folder of images"),
    "label": ("biqan.cli.label", "score labels for a run folder's DIP iterates (generator_dataset.py)"),
    "train-biqan": ("biqan.cli.train", "train the BIQAN quality network on score labels (train_BIQAN.py)"),
    "select": ("biqan.cli.select", "pick each image's best DIP iterate with BIQAN (test_BIQAN.py)"),
    "train": ("bdn.cli.train", "train a feed-forward denoiser from a pipeline config"),
    "export": ("bdn.cli.export", "export a trained model to ONNX and TorchScript, checked against PyTorch"),
    "verify": ("bdn.cli.verify", "re-run a run record (bdn denoise's <output>.json) and say if the bytes match"),
}


def _version() -> str:
    from bdn import __version__

    return f"bdn {__version__}"


def _configured(parser: argparse.ArgumentParser, name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    module.configure(parser)
    parser.set_defaults(command_module=module)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `bdn` parser: with `command`, only that command's options are built (the others' imports are not
    needed to parse it); with None, every command's."""
    parser = OneLineParser(prog="bdn", description="Blind image denoising: every step of the pipeline.")
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name, (_, text) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        if command is None or command == name:
            _configured(sub, name)
    return parser


def _interrupted(name: str) -> str:
    """What Ctrl+C means for a command (its module's INTERRUPTED line, e.g. how to resume)."""
    return getattr(importlib.import_module(COMMANDS[name][0]), "INTERRUPTED", "interrupted")


def main(argv: Sequence[str] | None = None) -> int:
    """`bdn COMMAND ...`; the exit status (bdn/cli/options.py: 0 done, 1 failed, 130 interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    named = next((text for text in argv if not text.startswith("-")), None)
    known = named in COMMANDS
    prog = f"bdn {named}" if known else "bdn"

    def body() -> int:
        args = build_parser(named if known else "").parse_args(argv)
        args.prog = prog
        return args.command_module.run(args)

    return call(body, prog, _interrupted(named) if known else "interrupted")


def run_script(command: str, prog: str, argv: Sequence[str] | None = None) -> int:
    """One command as a script of its own (the seed's run_BDN.py and the others): same options, same rules."""
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        parser = OneLineParser(prog=prog, description=COMMANDS[command][1])
        _configured(parser, command)
        args = parser.parse_args(argv)
        args.prog = prog
        return args.command_module.run(args)

    return call(body, prog, _interrupted(command))
