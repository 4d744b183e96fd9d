"""`bdn train-biqan` (train_BIQAN.py): train the BIQAN quality network on score labels (biqan/train.py).

bdn train-biqan --score-path runs/PolyU/scores.txt --output-path checkpoints/biqan_polyu --epochs 40
torchrun --nproc-per-node 2 train_BIQAN.py ...   (data-parallel: the processes share each epoch)
"""

from __future__ import annotations

import argparse

from bdn.cli.options import whole

INTERRUPTED = "interrupted: run the same command again to resume after the last finished epoch"


# biqan.model's ARCHES and PROTOCOLS and biqan.train.TrainOptions' defaults, here so that --help imports no torch
# (tests/test_light.py checks they agree).
ARCHES = ("mobilenet_v3_small", "mobilenet_v2", "mobilenet_v3_large")
PROTOCOLS = ("native", "resize")
DEFAULTS = {
    "arch": "mobilenet_v3_small",
    "dropout": 0.75,
    "protocol": "native",
    "crop": 224,
    "batch_size": 32,
    "epochs": 40,
    "head_epochs": 5,
    "lr": 1e-3,
    "val_fraction": 0.1,
    "seed": 0,
    "threads": 2,
    "device": "auto",
    "backbone": None,
    "workers": 2,
    "tiles": 1,
}


def configure(parser: argparse.ArgumentParser) -> None:
    from types import SimpleNamespace

    defaults = SimpleNamespace(**DEFAULTS)
    add = parser.add_argument
    add(
        "--score-path",
        "--dataset-file-path",
        nargs="+",
        action="extend",
        required=True,
        metavar="FILE",
        help="score file(s) written by generator_dataset.py (several are pooled)",
    )
    add(
        "--output-path",
        "--output-checkpoint",
        required=True,
        metavar="DIR",
        help="folder for the weights, checkpoint, log and curves; an unfinished run there resumes",
    )
    add("--arch", default=defaults.arch, choices=ARCHES, help=f"torchvision MobileNet (default {defaults.arch})")
    add("--dropout", type=float, default=defaults.dropout, help="dropout before the 10-way layer (default 0.75)")
    add(
        "--protocol",
        default=defaults.protocol,
        choices=PROTOCOLS,
        help="native: crops at the iterate's resolution; resize: the seed's 256 resize, then crop (default native)",
    )
    add("--crop", type=int, default=defaults.crop, help="crop size in pixels (default 224)")
    add("--batch-size", type=int, default=defaults.batch_size, help="per process (default 32)")
    add("--epochs", type=int, default=defaults.epochs, help="at most this many epochs in all (default 40)")
    add(
        "--head-epochs",
        type=int,
        default=defaults.head_epochs,
        help="with --backbone: epochs of stage 1, only the head learns (default 5)",
    )
    add("--lr", type=float, default=defaults.lr, help="Adam learning rate (default 1e-3)")
    add(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="share of the source images held out for validation (default 0.1)",
    )
    add("--seed", type=int, default=defaults.seed, help="seed of the split, initialisation and sampling")
    add("--threads", type=whole, default=defaults.threads, help="torch CPU threads per process (default 2)")
    add("--device", default=defaults.device, help="auto, cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    add("--gpu-id", type=int, default=None, help="the seed's option: the same as --device cuda:N")
    add(
        "--backbone",
        default=None,
        metavar="FILE",
        help="pretrained MobileNet weights (torchvision names, safetensors): two-stage training",
    )
    add("--workers", type=int, default=defaults.workers, help="DataLoader worker processes (default 2)")
    add(
        "--tiles",
        type=whole,
        default=defaults.tiles,
        help="N: each iterate gives N x N random crops an epoch (validation: the N x N grid scoring uses); default 1",
    )
    add("--no-progress", action="store_true", help="no progress bar")


def options_from_args(args: argparse.Namespace):
    """The TrainOptions the command line spells."""
    from biqan.train import TrainOptions

    device = f"cuda:{args.gpu_id}" if args.gpu_id is not None else args.device
    return TrainOptions(
        score_paths=tuple(args.score_path),
        output_path=args.output_path,
        arch=args.arch,
        dropout=args.dropout,
        protocol=args.protocol,
        crop=args.crop,
        batch_size=args.batch_size,
        epochs=args.epochs,
        head_epochs=args.head_epochs,
        lr=args.lr,
        val_fraction=args.val_fraction,
        seed=args.seed,
        threads=args.threads,
        device=device,
        backbone=args.backbone,
        workers=args.workers,
        tiles=args.tiles,
    )


def run(args: argparse.Namespace) -> int:
    from bdn.cli.options import set_threads
    from bdn.devices import torchrun_world
    from biqan.train import train

    options = options_from_args(args)
    set_threads(options.threads)
    row = train(options, progress=not args.no_progress)
    if torchrun_world()[0] == 0:
        print(f"done: {row['epoch']} epochs, last validation EMD {row['val_emd']:.4f} -> {args.output_path}")
    return 0
