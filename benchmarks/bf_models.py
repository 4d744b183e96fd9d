"""Issue 5: bdn's feed-forward denoisers against the official BF-DnCNN, side by side on the same noisy images.

One run measures the reference (the published BF-DnCNN weights, loaded into bdn's own DnCNN) and bdn's models on
identical inputs, so every gap in the tables is the models' and not the data's (datasets under $BDN_DATA, the
official weights under --anchors, $BDN_ANCHORS or ../shared/anchors/bf_dncnn):

    python benchmarks/bf_models.py --shipped --threads 2 --out results/bf_models
    python benchmarks/bf_models.py --models lp3=results/train/lp3_grey.safetensors \\
        --generalisation bf10=results/train/bf10.safetensors b10=results/train/b10.safetensors

Tables (each <out>/<name>.csv and .md, all of them in <out>/summary.md with the command, machine and date):
- quality_grey: mean PSNR on Set12 and BSD68 at sigma 15/25/50 (Gaussian noise added to the [0,1] image with
  bdn.bench's fixed seed per image, not clipped; the output clipped) for the official BF-DnCNN 0-55 and each bdn
  grey model. The official one must match its known figures here (it checks bdn's DnCNN): a warning otherwise.
- generalisation: models trained on sigma 0-10 tested at 25 and 50 on Set12, official bias-free vs biased 0-10
  (with the published figures) and bdn's 0-10 twins.
- real_noise: mean PSNR on CC and the PolyU held-out split: the noisy input, NLM, the official BF-DnCNN 0-55 on each
  colour channel alone, and bdn's colour models.
- synthetic_colour: mean PSNR on the Photos set (scikit-image's colour photographs, which no colour model trains on)
  with Gaussian noise at sigma 15/25/50 (as quality_grey adds it): the noisy input, NLM and CBM3D given the true
  sigma (CBM3D when the bm3d extra is installed), the official BF-DnCNN 0-55 per channel, and bdn's colour models
  (blind).
- speed: parameters, FLOPs per pixel (2 x the multiply-adds of every Conv2d/Linear, counted by hooks on a 64x64
  input), median seconds of 3 for one 512x512 image after a warm-up at --threads, and peak resident memory, each
  model timed in its own process, in each form (time_model): the official model as loaded, folded
  (bdn.models.fast.fast_form), under onnxruntime and in bf16; bdn's models folded, under onnxruntime and in bf16
  (bdn.models.fast.bf16_form: what bdn runs by default on a CPU with AMX or AVX512-BF16).
Every (table, model, dataset, sigma) result is cached in <out>/cache.json as soon as it is measured, so a run that is
stopped and started again skips what is done (`--fresh` redoes all). `--limit N` takes the first N images of each
set; <out>/per_image.csv keeps every image's PSNR.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.bench import peak_rss_mb
from bdn.errors import BdnError

PROJECT = Path(__file__).resolve().parent.parent
ANCHORS_ENV = "BDN_ANCHORS"
ANCHOR_FILES = ("bias_free_0-55", "bias_free_0-10", "bias_0-10", "bias_0-55")
ANCHOR = "official BF-DnCNN 0-55"
NOISY, NLM = "noisy input", "NLM (bdn, sigma estimated)"
DATASETS = ("Set12", "BSD68", "CC", "PolyU", "Photos")
TABLES = ("quality_grey", "generalisation", "real_noise", "synthetic_colour", "speed")
CBM3D, NLM_GIVEN = "CBM3D (true sigma)", "NLM (bdn, sigma given)"
SIGMAS = (15.0, 25.0, 50.0)
GENERALISATION_SIGMAS = (25.0, 50.0)
# The official model measured on this machine (shared/ANCHORS.md); a bigger gap means bdn's DnCNN differs.
KNOWN_ANCHOR = {("Set12", 15.0): 32.66, ("Set12", 25.0): 30.35, ("Set12", 50.0): 27.18, ("BSD68", 25.0): 29.13}
ANCHOR_TOLERANCE_DB = 0.05
# Official 0-10 models on Set12 (bias-free vs biased), as published with the weights.
PUBLISHED_GENERALISATION = {
    ("bias_free_0-10", 25.0): 30.20,
    ("bias_free_0-10", 50.0): 26.66,
    ("bias_0-10", 25.0): 21.53,
    ("bias_0-10", 50.0): 15.15,
}
SPEED_SIZE = 512
FORMS = ("eager", "torch", "onnxruntime", "bf16")  # see time_model
FLOP_SIZE = 64
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")

Case = tuple[str, np.ndarray, np.ndarray]  # (image name, noisy, clean)
Denoiser = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Entry:
    """A model of the run: its label in the tables, where its weights come from and what it takes."""

    label: str
    source: str  # "anchor:<official file stem>" or a bdn weights file
    channels: int
    bias_free: bool
    digest: str  # of the weights file: a retrained model under an old label is measured again


# --- models ----------------------------------------------------------------------------------------------------


def anchor_folder(given: str | Path | None = None) -> Path:
    """The folder of the official weights: `given`, else $BDN_ANCHORS, else ../shared/anchors/bf_dncnn."""
    if given:
        folder = Path(given).expanduser()
    elif os.environ.get(ANCHORS_ENV, "").strip():
        folder = Path(os.environ[ANCHORS_ENV].strip()).expanduser()
    else:
        folder = PROJECT.parent / "shared" / "anchors" / "bf_dncnn"
    if folder.is_dir() and not any(folder.glob("*.safetensors")) and (folder / "bf_dncnn").is_dir():
        folder = folder / "bf_dncnn"  # the anchors root was given: its BF-DnCNN folder is meant
    return folder


def anchor_path(name: str, folder: str | Path) -> Path:
    """The official weights file `name` (e.g. bias_free_0-55); BdnError naming the folder when it is absent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BdnError(
            f"{folder}: anchors folder not found (the official BF-DnCNN weights); pass --anchors DIR or set "
            f"{ANCHORS_ENV} to the folder holding {', '.join(f + '.safetensors' for f in ANCHOR_FILES)}"
        )
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        raise BdnError(f"{path}: official weights file missing from the anchors folder")
    return path


def load_anchor(name: str, folder: str | Path):
    """An official BF-DnCNN file (bias_free_* or bias_*) loaded into bdn's DnCNN, in eval mode."""
    from bdn.models import build_model
    from bdn.models.dncnn import official_state
    from bdn.tensorfile import read_tensors

    path = anchor_path(name, folder)
    tensors, _ = read_tensors(path)
    bias_free = name.startswith("bias_free")
    net = build_model("bf_dncnn" if bias_free else "dncnn", 1)
    try:
        net.load_state_dict(official_state(tensors, bias_free), strict=True)
    except RuntimeError as error:
        raise BdnError(f"{path}: its tensors do not fit bdn's DnCNN ({' '.join(str(error).split())[:160]})") from None
    return net.eval()


def load_net(source: str, anchors: str | Path):
    """(the module of an Entry's source in eval mode, its registry entry)."""
    from bdn.models import get_model_spec
    from bdn.models.weights import load_weights

    if source.startswith("anchor:"):
        name = source.removeprefix("anchor:")
        return load_anchor(name, anchors), get_model_spec("bf_dncnn" if name.startswith("bias_free") else "dncnn")
    net, metadata = load_weights(source)
    return net, get_model_spec(metadata["model"])


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def anchor_entry(label: str, name: str, anchors: Path) -> Entry:
    path = anchor_path(name, anchors)
    return Entry(label, f"anchor:{name}", 1, name.startswith("bias_free"), file_digest(path))


def model_entry(spec: str) -> Entry:
    """`NAME=PATH` (or a bare PATH, labelled by its stem) of a bdn weights file, checked before any long work."""
    from bdn.models.weights import FORMAT
    from bdn.tensorfile import read_tensors

    label, _, path = spec.rpartition("=")
    path = Path(path).expanduser()
    label = label or path.stem
    if not path.is_file():
        raise BdnError(f"{path}: no such weights file (given as {spec!r})")
    _, metadata = read_tensors(path, tensors=False)
    if metadata.get("format") != FORMAT:
        raise BdnError(f"{path}: not a bdn model file (no '{FORMAT}' metadata)")
    channels = int(metadata.get("channels", "0") or 0)
    if channels not in (1, 3):
        raise BdnError(f"{path}: metadata gives channels={metadata.get('channels')!r}, expected 1 or 3")
    return Entry(label, str(path.resolve()), channels, metadata.get("bias_free") == "True", file_digest(path))


def apply_net(net, image: np.ndarray, channels: int, spec=None) -> np.ndarray:
    """The net's output for a float image (not clipped): a grey net runs on each colour channel alone (as the
    official BF-DnCNN is used on colour), a colour net sees a grey image as three equal channels. Through 512-pixel
    tiles with the context and grid of `spec` (the net's registry entry); a module without one runs whole."""
    from bdn.models.run import run_per_channel

    if spec is None:
        return run_per_channel(net, image, channels, max(image.shape[:2]), 0, 1)
    return run_per_channel(net, image, channels, 512, spec.reach, spec.multiple)


# --- FLOPs, timing (the folded forms timed here live in bdn.models.fast) -----------------------------------------


def _speed_image(channels: int, size: int) -> np.ndarray:
    """A noisy natural image (size, size, channels) float32 shipped with scikit-image: camera (grey) or astronaut."""
    from skimage import data

    if size > 512:
        raise ValueError(f"the test images are 512x512: size {size} is too large")
    clean = (data.camera()[..., None] if channels == 1 else data.astronaut())[:size, :size] / 255.0
    return (clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape)).astype(np.float32)


def flops_per_pixel(net, channels: int, size: int = FLOP_SIZE) -> float:
    """2 x the multiply-adds of every Conv2d and Linear in one forward pass on a size x size input, per input
    pixel. Hooks see each call, so a pyramid's shared base is counted on every level it runs on."""
    import torch
    from torch import nn

    from bdn.tensors import to_nchw

    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    try:
        # A noisy natural crop, not zeros: a gated model decides per image which blocks run.
        x = to_nchw(_speed_image(channels, size))
        with torch.inference_mode():
            net.eval()(x)
    finally:
        for hook in hooks:
            hook.remove()
    return 2.0 * total / (size * size)


def parameter_count(net) -> int:
    return sum(p.numel() for p in net.parameters())


def time_model(source: str, anchors: str | Path, threads: int, form: str, size: int = SPEED_SIZE) -> dict:
    """Seconds for one size x size image (median of 3 after a warm-up) and peak memory: run in a fresh process.

    `form`: 'eager' (the model as loaded), 'torch' (bdn.models.fast.fast_form: norms folded, channels-last:
    what `bdn denoise` runs) or 'onnxruntime' (bdn.models.fast.onnx_form; recording the file is not timed)."""
    import torch

    from bdn.models.fast import inference_form, largest_difference
    from bdn.tensors import to_nchw

    torch.set_num_threads(threads)
    net = load_net(source, anchors)[0].eval()
    channels = getattr(net, "channels", 1) or 1
    x = to_nchw(_speed_image(channels, size))
    if form == "eager":
        run = net
    elif form == "bf16":
        run = inference_form(net, channels, "torch", "bf16")
    else:
        run = inference_form(net, channels, form)
    max_diff = largest_difference(run, net, channels)
    loaded_mb = peak_rss_mb()
    seconds = []
    with torch.inference_mode():
        for _ in range(4):
            start = time.perf_counter()
            run(x)
            seconds.append(time.perf_counter() - start)
    return {
        "seconds": float(np.median(seconds[1:])),
        "peak_mb": peak_rss_mb(),
        "loaded_mb": loaded_mb,
        "max_diff": max_diff,
    }


# --- quality --------------------------------------------------------------------------------------------------


def measure(denoise: Denoiser, cases: Iterable[Case]) -> dict:
    """Mean PSNR of `denoise` over the cases (output clipped by bdn.metrics.psnr), each image's, and the seconds."""
    from bdn.metrics import psnr

    per_image: dict[str, float] = {}
    start = time.perf_counter()
    for name, noisy, clean in cases:
        per_image[name] = psnr(clean, denoise(noisy))
    if not per_image:
        raise BdnError("no images to measure")
    return {
        "psnr": float(np.mean(list(per_image.values()))),
        "n": len(per_image),
        "seconds": time.perf_counter() - start,
        "images": per_image,
    }


def synthetic_cases(paths: Sequence[Path], sigma: float) -> list[Case]:
    """Clean grey images with Gaussian noise of `sigma` (0-255 units), unclipped, seeded per image as bdn bench
    does (bdn.bench.NOISE_SEED and the file's stem), so these are the noisy images `bdn bench` measures too."""
    from bdn.bench import NOISE_SEED
    from bdn.data import synthesize
    from bdn.io import read_image

    cases = []
    for path in paths:
        clean, _ = read_image(path)
        noisy = synthesize(clean, "gaussian", sigma, seed=NOISE_SEED, name=Path(path).stem)
        cases.append((Path(path).stem, noisy.astype(np.float32), clean))
    return cases


def photo_cases(sigma: float, limit: int | None) -> list[Case]:
    """The Photos set with Gaussian noise of `sigma`: the very cases `bdn bench` measures."""
    from bdn.bench import bench_cases

    return [(name, noisy, clean) for name, _, _, noisy, clean in bench_cases("Photos", [sigma], limit, "all")]


def grey_paths(dataset: str, limit: int | None) -> list[Path]:
    from bdn.data import clean_images, dataset_path

    return clean_images(dataset_path(dataset))[:limit]


def real_pairs(dataset: str, limit: int | None) -> list:
    """CC's pairs, or PolyU's held-out split, first `limit` of them (not loaded)."""
    from bdn.data import dataset_pairs, polyu_pairs

    return (polyu_pairs("heldout") if dataset == "PolyU" else dataset_pairs(dataset))[:limit]


def real_cases(pairs: Sequence) -> list[Case]:
    from bdn.data import load_pair

    return [(pair.name, *load_pair(pair)) for pair in pairs]


class Cache:
    """Results by key in one JSON file, rewritten atomically after each new result (the run's resume point)."""

    def __init__(self, path: Path, fresh: bool = False) -> None:
        self.path = path
        self.rows: dict[str, dict] = {} if fresh or not path.exists() else json.loads(path.read_text())

    def get_or_measure(self, key: str, work: Callable[[], dict], **fields) -> dict:
        if key not in self.rows:
            from bdn.io import atomic_write_text

            self.rows[key] = {**fields, **work()}
            atomic_write_text(self.path, json.dumps(self.rows, indent=1))
        return self.rows[key]


def quality_key(table: str, label: str, digest: str, dataset: str, sigma: float | None, names: Sequence[str]) -> str:
    """A result's identity, down to the images themselves (a --limit run never stands in for a full one)."""
    images = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return f"{table}|{label}|{digest}|{dataset}|{'real' if sigma is None else f'{sigma:g}'}|{len(names)}:{images}"


def run_quality(
    cache: Cache,
    table: str,
    methods: Sequence[tuple[str, str, Callable[[], Denoiser]]],
    dataset: str,
    sigma: float | None,
    names: Sequence[str],
    load_cases: Callable[[], list[Case]],
) -> list[dict]:
    """Each method (label, digest, factory of its denoise function) on one (dataset, sigma): the cases load once,
    and only if some method still needs them."""
    loaded: list[Case] | None = None
    rows = []
    for label, digest, factory in methods:
        key = quality_key(table, label, digest, dataset, sigma, names)
        if key not in cache.rows:
            loaded = load_cases() if loaded is None else loaded
            print(f"{table}: {label} on {dataset}" + (f" sigma {sigma:g}" if sigma else "") + " ...", flush=True)

        def work(factory=factory, cases=loaded) -> dict:
            return measure(factory(), cases)

        row = cache.get_or_measure(key, work, table=table, model=label, dataset=dataset, sigma=sigma)
        level = "" if sigma is None else f"{sigma:g}"
        print(f"  {label:40s} {dataset:6s} {level:>3s} {row['psnr']:.2f} dB ({row['seconds']:.1f} s)", flush=True)
        rows.append(row)
    return rows


def net_denoiser(entry: Entry, anchors: Path, nets: dict) -> Callable[[], Denoiser]:
    """A factory that loads the entry's net once (kept in `nets`) and returns its denoise function."""

    def factory() -> Denoiser:
        if entry.source not in nets:
            nets[entry.source] = load_net(entry.source, anchors)
        net, spec = nets[entry.source]
        return lambda image: apply_net(net, image, entry.channels, spec)

    return factory


def identity() -> Denoiser:
    return lambda image: image


def nlm(sigma: float | None = None) -> Denoiser:
    import bdn

    return lambda image: bdn.denoise(image, "nlm", sigma=sigma)


def cbm3d(sigma: float) -> Denoiser:
    import bdn

    return lambda image: bdn.denoise(image, "bm3d", sigma=sigma)


# --- tables ---------------------------------------------------------------------------------------------------


def wide_table(rows: Sequence[dict], order: Sequence[str]) -> pd.DataFrame:
    """One row per model (in `order`), one PSNR column per (dataset, sigma) in the order they were run."""
    columns: list[str] = []
    cells: dict[str, dict[str, float]] = {}
    for row in rows:
        column = row["dataset"] if row["sigma"] is None else f"{row['dataset']} {row['sigma']:g}"
        if column not in columns:
            columns.append(column)
        cells.setdefault(row["model"], {})[column] = row["psnr"]
    table = [{"model": label, **cells[label]} for label in order if label in cells]
    return pd.DataFrame(table, columns=["model", *columns])


def anchor_warnings(rows: Sequence[dict], full_counts: dict[str, int]) -> list[str]:
    """Where the official model strays from its known figures by more than the tolerance (full sets only)."""
    warnings = []
    for row in rows:
        known = KNOWN_ANCHOR.get((row["dataset"], row["sigma"]))
        if row["model"] != ANCHOR or known is None or row["n"] != full_counts.get(row["dataset"]):
            continue
        gap = row["psnr"] - known
        if abs(gap) > ANCHOR_TOLERANCE_DB:
            warnings.append(
                f"WARNING: {ANCHOR} on {row['dataset']} sigma {row['sigma']:g} measures {row['psnr']:.2f} dB, known "
                f"{known:.2f} ({gap:+.2f}): bdn's DnCNN, the noise or the metric differs from the reference run"
            )
    return warnings


def speed_table(rows: Sequence[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["mflops_per_pixel"] = frame.flops_per_pixel / 1e6
    columns = ["model", "channels", "parameters", "mflops_per_pixel", "size", "seconds", "peak_mb", "loaded_mb"]
    return frame[[*columns, "threads", "max_diff"]]


def run_notes(tables: dict[str, pd.DataFrame], counts: dict[str, int], size: int) -> list[str]:
    """What a reader of summary.md needs to know to read the tables made in this run."""
    notes = []
    if counts:
        sets = [f"{d} {n}" + (" (held-out split)" if d == "PolyU" else "") for d, n in counts.items()]
        notes.append("Images per set: " + ", ".join(sets) + ".")
    if "quality_grey" in tables or "generalisation" in tables:
        notes.append(
            "Grey noise: N(0, sigma/255) added to the [0,1] clean image, not clipped, seeded per image as `bdn bench` "
            "(bdn.bench.NOISE_SEED); PSNR by bdn.metrics.psnr on the output clipped to [0,1]."
        )
        known = ", ".join(f"{d} {s:g}: {v:.2f}" for (d, s), v in KNOWN_ANCHOR.items())
        notes.append(
            f"Known figures of {ANCHOR} on this machine: {known}; a run on the full sets warns beyond "
            f"{ANCHOR_TOLERANCE_DB} dB."
        )
    if "real_noise" in tables:
        notes.append(
            "Real noise: official models run on each colour channel alone; bdn colour models take RGB; NLM is "
            "bdn.denoise(noisy, 'nlm') with its noise level estimated."
        )
    if "synthetic_colour" in tables:
        from bdn.data import PHOTOS

        notes.append(
            "Synthetic colour noise: the Photos set (" + ", ".join(PHOTOS) + ", from scikit-image; no colour "
            "model trains on them), N(0, sigma/255) on every channel as for grey, not clipped; NLM and CBM3D "
            "(bdn.denoise 'bm3d', both stages) are given the true sigma, the models are blind."
        )
    if "speed" in tables:
        notes.append(
            f"Speed: one {size}x{size} image with the model's channels (scikit-image's camera or astronaut plus "
            "noise), median of 3 runs after a warm-up under torch.inference_mode, each model in a fresh process; "
            "peak_mb is that process's peak resident memory (VmHWM), loaded_mb the same before the first image; "
            "max_diff the largest output difference of the form timed from the model as loaded, on a 45x38 "
            "random input. Forms: eager = the model as loaded; torch = bdn.models.fast.fast_form (batch norms "
            "folded into the convolutions, channels-last: bdn's float32); onnxruntime = "
            "bdn.models.fast.onnx_form (bdn denoise's engine 'onnxruntime'); bf16 = bdn.models.fast.bf16_form "
            "(folded, bfloat16 autocast, channels-last: what bdn runs by default where the CPU has AMX or "
            "AVX512-BF16). FLOPs: 2 x the "
            f"multiply-adds of Conv2d and Linear layers on a {FLOP_SIZE}x{FLOP_SIZE} input, per pixel. Parameters "
            "count nn.Parameters: the official files also store an unused bias per batch norm (1,152 more: the "
            "published 667,008)."
        )
    return notes


def machine_text() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"
    )


def write_outputs(out: Path, tables: dict[str, pd.DataFrame], notes: Sequence[str], command: str) -> Path:
    """Each table as CSV + Markdown, and summary.md with all of them, the command, the machine and the date."""
    from bdn.io import atomic_write_text
    from bdn.report import markdown_table, write_table

    parts = [
        "# Bias-free models against the official BF-DnCNN (issue 5)",
        "",
        f"Date: {datetime.now().isoformat(timespec='seconds')}  ",
        f"Command: `{command}`  ",
        f"Machine: {machine_text()}",
    ]
    for name, frame in tables.items():
        floatfmt = ".3g" if name == "speed" else ".2f"
        write_table(frame, out / name, floatfmt=floatfmt)
        parts += ["", f"## {name}", "", markdown_table(frame, floatfmt)]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    return atomic_write_text(out / "summary.md", "\n".join(parts) + "\n")


# --- the run --------------------------------------------------------------------------------------------------


def speed_rows(
    cache: Cache, entries: Sequence[Entry], anchors: Path, threads: int, size: int = SPEED_SIZE
) -> list[dict]:
    """Parameters and FLOPs here; seconds and memory from a fresh worker process per (model, form).

    The official model (first) runs in every form: as loaded, and its fastest fair forms; bdn's models in the
    forms bdn runs them in (torch by default, onnxruntime on request). A form that fails (an exporter that cannot
    record a model) gets a row with no seconds and the reason."""
    jobs = [(entries[0], form) for form in FORMS] + [(entry, form) for entry in entries[1:] for form in FORMS[1:]]
    env = dict(os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads)))
    rows = []
    for entry, form in jobs:
        label = f"{entry.label} [{form}]"
        key = f"speed|{label}|{entry.digest}|{size}|{threads}"

        def work(entry=entry, form=form, label=label) -> dict:
            print(f"speed: {label} ...", flush=True)
            net, _ = load_net(entry.source, anchors)
            command = [sys.executable, __file__, "--worker-speed", entry.source, "--threads", str(threads)]
            command += ["--anchors", str(anchors), "--speed-size", str(size), "--form", form]
            output = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            row = {"channels": entry.channels, "parameters": parameter_count(net)}
            row["flops_per_pixel"] = flops_per_pixel(net, entry.channels)
            if output.returncode:
                reason = (output.stderr.strip().splitlines() or ["no message"])[-1]
                print(f"  {label}: failed: {reason}", flush=True)
                return {
                    **row,
                    "seconds": float("nan"),
                    "peak_mb": float("nan"),
                    "loaded_mb": float("nan"),
                    "max_diff": float("nan"),
                    "failed": reason[:200],
                }
            return {**row, **json.loads(output.stdout.strip().splitlines()[-1])}

        row = cache.get_or_measure(key, work, model=label, size=size, threads=threads)
        print(f"  {label:50s} {row['seconds']:.2f} s, {row['peak_mb']:.0f} MB", flush=True)
        rows.append(row)
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME=PATH", help="bdn weights files (grey/colour)")
    parser.add_argument("--shipped", action="store_true", help="add every model shipped in checkpoints/")
    parser.add_argument(
        "--generalisation", nargs="+", default=[], metavar="NAME=PATH", help="bdn grey models trained on sigma 0-10"
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=TABLES, help="which tables to make")
    parser.add_argument("--sigmas", nargs="+", type=float, default=list(SIGMAS), help="grey noise levels (0-255)")
    parser.add_argument("--limit", type=int, help="the first N images of each set (quick runs)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, for quality and speed alike")
    parser.add_argument("--anchors", help=f"official BF-DnCNN folder (default ${ANCHORS_ENV} or ../shared/anchors)")
    parser.add_argument("--speed-size", type=int, default=SPEED_SIZE, help="side of the timed image (16-512)")
    parser.add_argument("--out", type=Path, default=Path("results/bf_models"))
    parser.add_argument("--fresh", action="store_true", help="ignore cached results and measure everything again")
    parser.add_argument("--worker-speed", help=argparse.SUPPRESS)
    parser.add_argument("--form", choices=FORMS, default="eager", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if not 16 <= args.speed_size <= 512:
        parser.error("--speed-size must be in [16, 512] (the timed images are 512x512)")
    return args


def gather_entries(args: argparse.Namespace, anchors: Path) -> tuple[list[Entry], list[Entry], list[Entry]]:
    """(grey entries, colour entries, generalisation entries), the official ones first; every file checked."""
    from bdn.models.weights import shipped_models

    given = [model_entry(spec) for spec in args.models]
    if args.shipped:
        shipped = shipped_models()
        given += [model_entry(f"{name}={path}") for name, path in shipped.items()]
    general_given = [model_entry(spec) for spec in args.generalisation]
    labels = [entry.label for entry in given + general_given]
    if len(set(labels)) != len(labels):
        raise BdnError(f"two models share a label among {', '.join(labels)}: name them NAME=PATH")
    for entry in general_given:
        if entry.channels != 1:
            raise BdnError(f"{entry.source}: --generalisation takes grey models (tested on Set12), this one is colour")
    grey = [anchor_entry(ANCHOR, "bias_free_0-55", anchors)] + [e for e in given if e.channels == 1]
    colour = [e for e in given if e.channels == 3]
    general = [
        anchor_entry("official BF-DnCNN 0-10", "bias_free_0-10", anchors),
        anchor_entry("official DnCNN 0-10 (biased)", "bias_0-10", anchors),
        *general_given,
    ]
    return grey, colour, general


def run(args: argparse.Namespace, command: str) -> Path:
    """Measure every table asked for (cached results reused) and write the outputs; returns summary.md."""
    anchors = anchor_folder(args.anchors)
    grey, colour, general = gather_entries(args, anchors)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Cache(args.out / "cache.json", fresh=args.fresh)
    nets: dict = {}
    rows: dict[str, list[dict]] = {table: [] for table in TABLES}
    counts: dict[str, int] = {}
    full_counts: dict[str, int] = {}
    grey_sets = [d for d in ("Set12", "BSD68") if d in args.datasets]

    def grey_table(table: str, dataset: str, sigmas: Sequence[float], entries: Sequence[Entry], noisy: bool) -> None:
        paths = grey_paths(dataset, args.limit)
        counts[dataset], full_counts[dataset] = len(paths), len(grey_paths(dataset, None))
        methods = [(NOISY, "identity", identity)] if noisy else []
        methods += [(e.label, e.digest, net_denoiser(e, anchors, nets)) for e in entries]
        for sigma in sigmas:
            rows[table] += run_quality(
                cache,
                table,
                methods,
                dataset,
                sigma,
                [p.stem for p in paths],
                lambda sigma=sigma: synthetic_cases(paths, sigma),
            )

    if "quality_grey" in args.tables:
        for dataset in grey_sets:
            grey_table("quality_grey", dataset, args.sigmas, grey, noisy=True)
    if "generalisation" in args.tables and "Set12" not in grey_sets:
        print("generalisation: skipped (it runs on Set12, which --datasets leaves out)", flush=True)
    if "generalisation" in args.tables and "Set12" in grey_sets:
        grey_table("generalisation", "Set12", GENERALISATION_SIGMAS, general, noisy=False)
    if "real_noise" in args.tables:
        for dataset in [d for d in ("CC", "PolyU") if d in args.datasets]:
            pairs = real_pairs(dataset, args.limit)
            counts[dataset] = len(pairs)
            methods = [(NOISY, "identity", identity), (NLM, "nlm", nlm)]
            methods.append((f"{ANCHOR} per channel", grey[0].digest, net_denoiser(grey[0], anchors, nets)))
            methods += [(e.label, e.digest, net_denoiser(e, anchors, nets)) for e in colour]
            names = [pair.name for pair in pairs]
            rows["real_noise"] += run_quality(
                cache, "real_noise", methods, dataset, None, names, lambda pairs=pairs: real_cases(pairs)
            )
    if "synthetic_colour" in args.tables and "Photos" in args.datasets:
        from bdn.data import PHOTOS
        from bdn.methods import missing_extra

        names = list(PHOTOS[: args.limit])
        counts["Photos"] = len(names)
        for sigma in args.sigmas:
            methods = [(NOISY, "identity", identity), (NLM_GIVEN, "nlm", partial(nlm, sigma))]
            if not missing_extra("bm3d"):
                methods.append((CBM3D, "bm3d", partial(cbm3d, sigma)))
            methods.append((f"{ANCHOR} per channel", grey[0].digest, net_denoiser(grey[0], anchors, nets)))
            methods += [(e.label, e.digest, net_denoiser(e, anchors, nets)) for e in colour]
            rows["synthetic_colour"] += run_quality(
                cache, "synthetic_colour", methods, "Photos", sigma, names, partial(photo_cases, sigma, args.limit)
            )
    if "speed" in args.tables:
        distinct = {e.digest: e for e in grey + colour + general[2:]}  # a file given twice is timed once
        rows["speed"] = speed_rows(cache, list(distinct.values()), anchors, args.threads, args.speed_size)

    tables: dict[str, pd.DataFrame] = {}
    if rows["quality_grey"]:
        tables["quality_grey"] = wide_table(rows["quality_grey"], [NOISY] + [e.label for e in grey])
    if rows["generalisation"]:
        frame = wide_table(rows["generalisation"], [e.label for e in general])
        frame.insert(1, "bias_free", frame.model.map({e.label: e.bias_free for e in general}))
        for sigma in GENERALISATION_SIGMAS:
            published = {
                e.label: PUBLISHED_GENERALISATION.get((e.source.removeprefix("anchor:"), sigma)) for e in general
            }
            frame[f"published {sigma:g}"] = frame.model.map(published)
        tables["generalisation"] = frame
    if rows["real_noise"]:
        order = [NOISY, NLM, f"{ANCHOR} per channel"] + [e.label for e in colour]
        tables["real_noise"] = wide_table(rows["real_noise"], order)
    if rows["synthetic_colour"]:
        order = [NOISY, NLM_GIVEN, CBM3D, f"{ANCHOR} per channel"] + [e.label for e in colour]
        tables["synthetic_colour"] = wide_table(rows["synthetic_colour"], order)
    if rows["speed"]:
        tables["speed"] = speed_table(rows["speed"])

    warnings = anchor_warnings(rows["quality_grey"], full_counts)
    for warning in warnings:
        print(warning, file=sys.stderr)
    summary = write_outputs(args.out, tables, warnings + run_notes(tables, counts, args.speed_size), command)
    per_image = [
        {"table": r["table"], "model": r["model"], "dataset": r["dataset"], "sigma": r["sigma"], "image": k, "psnr": v}
        for table in ("quality_grey", "generalisation", "real_noise", "synthetic_colour")
        for r in rows[table]
        for k, v in r["images"].items()
    ]
    if per_image:
        pd.DataFrame(per_image).to_csv(args.out / "per_image.csv", index=False)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.worker_speed:
        print(
            json.dumps(
                time_model(args.worker_speed, anchor_folder(args.anchors), args.threads, args.form, args.speed_size)
            )
        )
        return 0
    words = sys.argv[1:] if argv is None else list(argv)
    command = "python benchmarks/bf_models.py " + " ".join(shlex.quote(word) for word in words)
    try:
        summary = run(args, command.strip())
    except BdnError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
