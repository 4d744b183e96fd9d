"""`bdn train`: train a feed-forward denoiser from a JSON pipeline config (bdn/train.py), resumable."""

from __future__ import annotations

import argparse

INTERRUPTED = "interrupted: run the same command again to resume from the last finished epoch"


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model-directory", help="where weights, checkpoint and logs go (default: the config's save_weight_path)")
    add("--pipeline-config", required=True, help="the JSON config (see bdn/train.py)")
    add("--no-progress", action="store_true", help="no progress bar (logs only)")


def run(args: argparse.Namespace) -> int:
    from bdn.cli.options import set_threads
    from bdn.devices import pick_device
    from bdn.train import load_config, save_weight_path, train

    config = load_config(args.pipeline_config)
    directory = args.model_directory or save_weight_path(args.pipeline_config)
    settings = config["train"]
    if pick_device(settings["device"], what="train.device").type == "cpu":
        set_threads(settings["threads"])  # the config's threads, set here: the library leaves the process alone
    row = train(directory, config, progress=not args.no_progress)
    print(f"done: {row['epoch']} epochs, last validation PSNR {row['val_psnr']:.2f} dB -> {directory}")
    return 0
