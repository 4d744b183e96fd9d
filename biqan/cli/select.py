"""`bdn select` (test_BIQAN.py): pick each image's best DIP iterate of a run folder with BIQAN (biqan/select.py).

    bdn select --run-path results/CC --output-path results/CC_biqan [--model-path biqan.safetensors] \
        [--start-index 40] [--is-smooth true] [--dataset-real-path CC/real --dataset-mean-path CC/mean]

Writes `<id>_BIQAN.png`, `<id>_Compare.png`, `<id>_Curves.png`, `Denoised_PSNR.txt` and, in the run's image folders,
choice.json + result.png. The seed's option names --dataset_image_path and --pre_trained_model are accepted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bdn.cli.options import boolean, natural, set_threads, whole
from bdn.errors import BdnError

# biqan.select's START_INDEX and SEED_SMOOTH, here so that --help imports no torch (tests/test_light.py checks).
START_INDEX = 40
SEED_SMOOTH = 0.8


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--run-path",
        "--dataset-image-path",
        dest="run_path",
        required=True,
        help="run_BDN output folder (--dataset_image_path: the seed's name)",
    )
    add(
        "--model-path",
        "--pre-trained-model",
        dest="model_path",
        default=None,
        help="BIQAN checkpoint (.safetensors from train_BIQAN.py; default: checkpoints/biqan.safetensors, shipped)",
    )
    add("--output-path", required=True, help="folder for the chosen images, figures and Denoised_PSNR.txt")
    add("--start-index", type=natural, default=START_INDEX, help="skip each image's first N iterates (the seed: 40)")
    add(
        "--is-smooth",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        metavar="BOOL",
        help="low-pass filter the scores before choosing (true/false; the seed's option)",
    )
    add("--smooth-factor", type=float, default=SEED_SMOOTH, help="the filter's factor with --is_smooth (seed: 0.8)")
    add("--batch-size", type=whole, default=32, help="snapshots scored at once")
    add("--tiles", type=whole, default=1, help="score a grid of N x N crops of each snapshot, averaged (1: the centre)")
    add("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    add("--gpu-id", type=natural, default=None, help="the seed's GPU number: the same as --device cuda:N")
    add("--dataset-real-path", default=None, help="noisy images (<id>_real.<ext>) for the comparison figures")
    add("--dataset-mean-path", default=None, help="clean images (<id>_mean.<ext>) for the comparison figures")
    add("--threads", type=whole, default=None, help="torch CPU threads (default: torch's choice)")
    add("--write", action="store_true", help="also replace choice.json / result.png in the run's image folders")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _model_file(given: str | None) -> Path:
    """The checkpoint to load: the given file, or the shipped `checkpoints/biqan.safetensors`."""
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise BdnError(f"--model_path {given}: no such file")
        return path
    from biqan.model import shipped_biqan

    return shipped_biqan()


def _load_model(path: Path) -> tuple:
    """(model, metadata) from a train_BIQAN checkpoint (biqan.model.load_biqan)."""
    from biqan.model import load_biqan

    return load_biqan(path)


def run(args: argparse.Namespace) -> int:
    from bdn.devices import pick_device
    from biqan.select import select_run

    set_threads(args.threads)
    if not 0 <= args.smooth_factor < 1:
        raise BdnError(f"--smooth-factor must be in [0, 1), got {args.smooth_factor}")
    device = pick_device(f"cuda:{args.gpu_id}" if args.gpu_id is not None else args.device, what="--device")
    for option, folder in (
        ("--dataset-real-path", args.dataset_real_path),
        ("--dataset-mean-path", args.dataset_mean_path),
    ):
        if folder is not None and not Path(folder).is_dir():
            raise BdnError(f"{option} {folder}: no such folder")
    path = _model_file(args.model_path)
    model, metadata = _load_model(path)
    protocol, crop = str(metadata.get("protocol", "native")), int(metadata.get("crop", 224))
    table, summary, choices = select_run(
        args.run_path,
        args.output_path,
        model,
        protocol=protocol,
        crop=crop,
        start_index=args.start_index,
        smooth=args.smooth_factor if args.is_smooth else None,
        batch_size=args.batch_size,
        device=device,
        noisy_path=args.dataset_real_path,
        clean_path=args.dataset_mean_path,
        tiles=args.tiles,
        header=[
            f"{args.prog}: run {args.run_path}; model {path} (protocol {protocol}, crop {crop}"
            + (f", {args.tiles}x{args.tiles} crops averaged)" if args.tiles > 1 else ")")
        ],
        progress=args.progress,
        write=args.write,
    )
    from bdn.record import make_record, options_of, write_record

    out = Path(args.output_path)
    logs = sorted(Path(args.run_path).glob("*/log.csv"))
    outputs = [out / "Denoised_PSNR.txt", out / "Denoised_PSNR.csv", out / "scores.csv"]
    record = make_record(
        "bdn select", options_of(args), inputs=logs, weights=[path], outputs=outputs, device=str(device)
    )
    write_record(out / "record.json", record)
    print((out / "Denoised_PSNR.txt").read_text(encoding="utf-8"), end="")
    for image, note in sorted(choices.notes.items()):
        print(f"{args.prog}: note: {image}: {note}", file=sys.stderr)
    return 0
