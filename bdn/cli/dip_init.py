"""`bdn dip-init`: learn a DIP initialisation (reptile meta-learning or masked pre-training) from images."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bdn.cli.options import set_threads, whole
from bdn.errors import BdnError


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("folder", nargs="?", help="images: noisy ones (reptile) or clean ones (masked)")
    add("--out", help="safetensors file to write; an unfinished run there resumes")
    add("--list", action="store_true", help="list the shipped initialisations and stop")
    add("--scheme", default="reptile", help="reptile (meta-learning) or masked (MPI); default reptile")
    add("--net-type", default="skip", help="DIP net the weights are for (default skip)")
    add("--channels", type=int, default=3, help="1 (grey) or 3 (colour, default)")
    add("--fit-mask-ratio", type=float, default=0.5, help="masked: share hidden in the DIP fit (0.5)")
    for flag, kind, default, what in (
        ("steps", int, 1000, "outer steps (reptile) or batches (masked)"),
        ("patch", int, 64, "side of the random training patches"),
        ("inner-steps", int, 10, "reptile: DIP iterations per patch"),
        ("meta-lr", float, 1.0, "reptile: outer step size, decayed to 0"),
        ("batch", int, 8, "masked: patches per batch"),
        ("lr", float, 1e-3, "masked: Adam's rate, cosine-decayed"),
        ("mask-ratio", float, 0.5, "masked: share of pixels hidden in training"),
    ):
        add(f"--{flag}", type=kind, default=default, help=f"{what} (default {default})")
    add("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, ...")
    add("--seed", type=int, default=0)
    add("--threads", type=whole, help="CPU threads for torch")


def run(args: argparse.Namespace) -> int:
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
        raise BdnError("give a FOLDER of images and --out PATH (or --list)")
    set_threads(args.threads)
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
