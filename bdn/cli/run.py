"""`bdn run` (run_BDN.py): Deep Image Prior over a folder of images, resumable; the files it writes are specified
in bdn/dip/runfolder.py, the fitting in bdn/dip/run.py.

    bdn run --dataset-real-path real/ --dataset-mean-path mean/ --output-path OUT --num-iter 3000
    torchrun --nproc-per-node 2 run_BDN.py ...   (the images are shared among the processes)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from bdn.cli.options import print_failures, set_threads, whole
from bdn.errors import BdnError

INTERRUPTED = "interrupted; run the same command again to resume"


def configure(parser: argparse.ArgumentParser) -> None:
    from bdn.dip.config import NET_TYPE_NAMES, PRECISIONS, DipConfig  # no torch: --help stays quick

    defaults = DipConfig()
    add = parser.add_argument
    add("--dataset-real-path", help="folder of noisy images (<id>_real.<ext>)")
    add("--dataset-mean-path", help="folder of clean images (<id>_mean.<ext>); alone: noise is synthesised")
    add("--output-path", required=True, help="output folder")
    add("--num-iter", type=int, default=defaults.num_iter)
    add("--save-iter", type=int, default=defaults.save_iter, help="snapshot interval (the choosers' candidates)")
    add("--show-iter", type=int, default=defaults.show_iter, help="how often the figures reach the progress bar")
    add("--checkpoint-iter", type=int, default=100, help="checkpoint interval for resuming; 0: none")
    add(
        "--keep-state",
        action="store_true",
        help="keep each full fit's final state, so that a later run with a larger --num-iter goes on from it",
    )
    add("--lr", type=float, default=defaults.lr)
    add("--input-depth", type=int, default=defaults.input_depth)
    add("--net-type", default="skip", help=f"generator: {', '.join(NET_TYPE_NAMES)}")
    add("--input-base", default=defaults.input_base, help="noise | image | smoothed")
    add("--input-std", type=float, default=defaults.input_std, help="input perturbation std (1/255 units)")
    add("--input-perturbation", default=defaults.input_perturbation, help="fixed | random | none")
    add("--reference-std", type=float, default=defaults.reference_std, help="reference noise std (1/255 units)")
    add(
        "--reference-perturbation",
        default=defaults.reference_perturbation,
        help="fixed (the seed's literal behaviour, default) | random | none",
    )
    add("--fallback-db", type=float, default=defaults.fallback_db, help="fall back on a drop of this many dB; 0: off")
    add("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    add("--threads", type=whole, default=None, help="torch CPU threads (default: torch's choice)")
    add(
        "--precision",
        default=defaults.precision,
        choices=PRECISIONS,
        help="network arithmetic: auto (bf16 where the CPU has AMX/AVX512-BF16 or the GPU bf16, else fp32), fp32, "
        "bf16 (float32 master weights, optimiser, loss and EMA either way)",
    )
    add("--seed", type=int, default=defaults.seed)
    add(
        "--mask-ratio",
        type=float,
        default=defaults.mask_ratio,
        help="share of pixels hidden from the input each iteration (blind-spot fit; needs --input_base image or "
        "smoothed)",
    )
    add(
        "--init",
        default=None,
        metavar="NAME_OR_PATH",
        help="learned initialisation: a shipped name or a .safetensors file; it sets --net_type, --input_base, "
        "--input_depth and --mask_ratio to what it was learned for",
    )
    add("--stop", default="none", help="online judge that ends each fit: none | wmv | emv | noise | biqan | learned")
    add("--biqan-model", default=None, help="BIQAN checkpoint for --stop biqan (default: the one bdn ships)")
    add("--biqan-patience", type=int, default=None, help="biqan: snapshots without a better score before stopping")
    add("--biqan-start-index", type=int, default=None, help="biqan: snapshots skipped before choosing (default 40)")
    add("--biqan-smooth", type=float, default=None, help="biqan: the seed's score smoothing factor (e.g. 0.8)")
    add("--biqan-tiles", type=int, default=None, help="biqan: score a grid of N x N crops, averaged (default 1)")
    add("--learned-weights", default=None, help="learned: the judge's weights file (default: the one bdn ships)")
    add("--wmv-window", type=int, default=None, help="WMV window (default 100)")
    add("--wmv-patience", type=int, default=None, help="WMV patience (default 1000)")
    add("--wmv-stride", type=int, default=None, help="WMV: watch only iterations that are multiples of N (default 1)")
    add("--wmv-source", default=None, choices=("raw", "ema"), help="WMV: watch the raw iterate or the EMA output")
    add("--emv-alpha", type=float, default=None, help="EMV smoothing (default 0.1)")
    add("--emv-patience", type=int, default=None, help="EMV patience (default 1000)")
    add(
        "--noise-sigma",
        type=float,
        default=None,
        help="noise judge: noise level, 0-255 (default: estimated from each image)",
    )
    add(
        "--noise-factor",
        type=float,
        default=None,
        help="noise judge: stop when the residual variance is <= (factor x sigma)^2 (default 1)",
    )
    add("--noise", default="gaussian:25", help="noise synthesised for a clean-only folder, MODEL[:STRENGTH]")
    add("--is-split-dataset", action="store_true", help="take one part of the sorted image list (the seed's split)")
    add("--dataset-part-id", default=None, help="part I (1-based), or I/P as the seed wrote it")
    add("--dataset-parts", type=int, default=None, help="number of parts P")
    add("--limit", type=int, default=None, help="only the first N images of the sorted list")
    add("--crop", type=int, default=None, help="centre crop to at most N x N pixels first (quick runs)")
    add("--no-progress", dest="progress", action="store_false", help="no progress bars")


def _part(args: argparse.Namespace) -> tuple[int, int] | None:
    if not args.is_split_dataset:
        return None  # as the seed: the part options mean nothing without --is_split_dataset
    text = (args.dataset_part_id or "").strip()
    given, _, total = text.partition("/")
    try:
        part = int(given)
        parts = int(total) if total else args.dataset_parts
    except ValueError:
        raise BdnError(f"--dataset_part_id {text!r}: expected I or I/P with whole numbers (e.g. 1/4)") from None
    if parts is None:
        raise BdnError("--is_split_dataset needs --dataset_parts P (or --dataset_part_id I/P)")
    if total and args.dataset_parts is not None and int(total) != args.dataset_parts:
        raise BdnError(f"--dataset_part_id {text} disagrees with --dataset_parts {args.dataset_parts}")
    if parts < 1 or not 1 <= part <= parts:
        raise BdnError(f"--dataset_part_id {part} of {parts} parts: need 1 <= I <= P")
    return part, parts


def _config(args: argparse.Namespace):
    """The DipConfig the options spell (run_folder checks it)."""
    from bdn.dip.config import DipConfig

    fallback = None if args.fallback_db is not None and args.fallback_db == 0 else args.fallback_db
    config = replace(
        DipConfig(),
        net_type=args.net_type,
        input_depth=args.input_depth,
        lr=args.lr,
        num_iter=args.num_iter,
        save_iter=args.save_iter,
        show_iter=args.show_iter,
        input_base=args.input_base,
        input_std=args.input_std,
        input_perturbation=args.input_perturbation,
        reference_std=args.reference_std,
        reference_perturbation=args.reference_perturbation,
        fallback_db=fallback,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        precision=args.precision,
    )
    return config


def _judge_options(args: argparse.Namespace) -> dict:
    if args.stop == "biqan":
        # The quality network scores the snapshots run_BDN saves (every save_iter), as test_BIQAN does offline.
        given = {
            "model_path": args.biqan_model,  # None: the judge takes the BIQAN that ships with bdn
            "patience": args.biqan_patience,
            "start_index": args.biqan_start_index,
            "smooth": args.biqan_smooth,
            "tiles": args.biqan_tiles,
            "every": args.save_iter,
        }
    else:
        given = {
            "wmv": {
                "window": args.wmv_window,
                "patience": args.wmv_patience,
                "stride": args.wmv_stride,
                "source": args.wmv_source,
            },
            "emv": {"alpha": args.emv_alpha, "patience": args.emv_patience},
            "noise": {"sigma": args.noise_sigma, "factor": args.noise_factor},
            # The learned judge looks at the snapshots bdn run keeps, with the BIQAN --biqan-model names.
            "learned": {
                "weights": args.learned_weights,
                "sigma": args.noise_sigma,
                "every": args.save_iter,
                "model_path": args.biqan_model,
                "tiles": args.biqan_tiles,
            },
        }.get(args.stop, {})
    return {key: value for key, value in given.items() if value is not None}


def run(args: argparse.Namespace) -> int:
    """Fit every image; the exit status (0 all done, 1 any image failed)."""
    import torch.distributed as dist

    from bdn.devices import torchrun_world
    from bdn.dip.run import run_folder

    set_threads(args.threads)
    grouped = _start_group(torchrun_world()[1], args.prog)
    try:
        report = run_folder(
            args.dataset_real_path,
            args.dataset_mean_path,
            args.output_path,
            _config(args),
            stop=args.stop,
            judge_options=_judge_options(args),
            noise=args.noise,
            crop=args.crop,
            limit=args.limit,
            part=_part(args),
            checkpoint_iter=args.checkpoint_iter,
            device=args.device,
            progress=args.progress,
            init=args.init,
            barrier=dist.barrier if grouped else None,
            keep_state=args.keep_state,
        )
    finally:
        if grouped:
            dist.destroy_process_group()
    if report.table:
        print(report.table)
    if report.skipped:
        print(f"{len(report.skipped)} image(s) were finished already and skipped")
    return print_failures(args.prog, report.problems)


def _start_group(world: int, prog: str) -> bool:
    """Start a gloo process group for the final barrier; False (and one line on stderr) if it cannot start."""
    if world < 2:
        return False
    import datetime

    import torch.distributed as dist

    try:
        # Ranks may finish hours apart: the barrier must not time out in between.
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=30))
    except (RuntimeError, ValueError, OSError) as error:
        detail = " ".join(str(error).split())[:200]
        print(
            f"{prog}: torch.distributed (gloo) did not start ({detail}); every rank writes the summary when it "
            "finishes instead",
            file=sys.stderr,
        )
        return False
    return True
