"""Train a feed-forward denoiser: `bdn train --model-directory DIR --pipeline-config CONFIG.json`.

The config (JSON) names the model and its data; everything left out takes the defaults in DEFAULTS:

    {"model": {"name": "lp3_resnet_5x5_bn_3x3", "channels": 1},
     "data": {"kind": "synthetic", "dataset": "Train400", "patch": 64, "patches_per_epoch": 8192, "batch_size": 32},
     "noise": {"additive": [0, 55], "multiplicative": [0, 25], "multiplicative_probability": 0.2},
     "train": {"epochs": 30, "lr": 0.001, "seed": 0}}

Seed 004's top-level keys are accepted too: `"model": "U-net"` (or "VAE", or any registry name),
`"save_weight_path"` (the model directory, when --model-directory is not given), `"load_weight_path"` (start from
these weights), `"dataset"` and `"device"`. The `loss` section weights MSE, L1, SSIM, total variation and the VAE's
KL term (bdn.models.losses); the `noise` section can mix in salt-and-pepper and uniform noise (seed 004's kinds).

Data kinds: `synthetic` (clean images with blind noise drawn per patch: additive Gaussian sigma uniform in the
range, or with some probability multiplicative Gaussian; `dataset` is a bdn set of clean images such as Train400,
`skimage` for the colour photographs scikit-image ships, or a folder) and `pairs` (real noise: `dataset`
`PolyU-train` is the training side of bdn's committed PolyU split, CC and PolyU's held-out split never seen; or
{"noisy": DIR, "clean": DIR}), and `mixed` (both at once: `data.synthetic_share` of every batch is clean images with
synthetic noise, the rest real pairs; the clean images are the pairs' clean halves unless `data.clean_dataset`
names a set). The `noise` section's kinds for synthetic patches: additive Gaussian, multiplicative,
salt-and-pepper, uniform, Poisson-Gaussian and demosaiced camera noise (bdn.noise), each patch one kind by the
`*_probability` keys, and a JPEG round trip after the noise by `jpeg_probability`. A deterministic share of the
training images (whole PolyU scenes for pairs) is held out for validation, scored every epoch at fixed noise levels
with a fixed seed; for kind `mixed` the held-out pairs and their clean halves with Gaussian noise are scored apart
(`val_psnr_real`, `val_psnr_synthetic` in the log) and the best epoch is chosen by `data.val_real_weight` x real +
the rest x synthetic.

`train.minutes` > 0 trains for that much training time instead (validation not counted): the cosine schedule follows
the clock and `train.epochs` is only a cap, which suits a GPU lent for a fixed time (a resumed run goes on with the
time it has left; such a run is not bit-reproducible, since its step count depends on the machine's speed). A
resume may change `train.epochs`, `train.minutes`, `train.threads` and `train.device` (nothing else): a long CPU
run is extended session after session by raising its minutes, its cosine stretched to the new length.

DIR receives `checkpoint.pt` (everything to resume, read with weights_only=True), `last.safetensors` and
`best.safetensors` (the best validation PSNR so far; bdn.models.weights format), `log.csv`, `curves.png` and the
config used (`pipeline.json`). Running the same command again resumes from the checkpoint; a finished run says so.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from bdn.devices import pick_device
from bdn.errors import BdnError
from bdn.io import read_json
from bdn.noise import NOISE_MODELS, add_noise, jpeg_roundtrip
from bdn.tensorfile import read_checkpoint, write_checkpoint
from bdn.tensors import batch_to_nchw, to_image

DEFAULTS: dict = {
    "model": {"name": "resnet_5x5_bn_3x3", "channels": 1},
    "data": {
        "kind": "synthetic",
        "dataset": "Train400",
        "patch": 64,
        "patches_per_epoch": 8192,
        "batch_size": 32,
        "val_fraction": 0.05,
        "val_sigmas": [15, 25, 50],
        "val_crop": 128,
        # kind "mixed": this share of every batch is clean images with synthetic noise, the rest real pairs; the
        # clean images are the training pairs' clean halves, or `clean_dataset` (a clean set, 'skimage', a folder)
        "synthetic_share": 0.5,
        "clean_dataset": None,
        # kind "mixed": the best epoch is chosen by this weight on the real pairs' validation PSNR and the rest on
        # the synthetic images' (each part's own mean, so the three sigmas do not outvote the real pairs)
        "val_real_weight": 0.5,
    },
    "noise": {
        "additive": [0, 55],
        "multiplicative": [0, 25],
        "multiplicative_probability": 0.0,
        "salt_pepper": [0, 0.1],  # share of pixels set to 0 or 1
        "salt_pepper_probability": 0.0,
        "uniform": [0, 50],  # half-width, 0-255 units
        "uniform_probability": 0.0,
        "poisson_gaussian": [0, 50],  # sigma at mid-grey, 0-255 units (bdn.noise)
        "poisson_gaussian_probability": 0.0,
        "camera": [0, 50],  # a sensor's sigma at mid-grey, demosaiced and colour-corrected (bdn.noise)
        "camera_probability": 0.0,
        "jpeg_probability": 0.0,  # after the noise, this share of patches is saved as JPEG and read back
        "jpeg_quality": [60, 95],
    },
    "loss": {"mse": 1.0, "l1": 0.0, "ssim": 0.0, "tv": 0.0, "kl": 0.0},
    "train": {
        "epochs": 30,
        "lr": 1e-3,
        "min_lr": 1e-5,
        "grad_clip": 1.0,
        "sparsity": 0.0,
        "seed": 0,
        "threads": 2,
        "device": "auto",
        "load_weights": None,
        "recalibrate_batches": 16,
        "minutes": 0,  # > 0: train for this long (the cosine spans the time, epochs become a cap)
        # fp32 | bf16 | auto: bf16 runs the forward pass under autocast, channels-last on the CPU (weights, Adam and
        # the loss stay float32); auto = bf16 where the hardware has it. fp32 by default: older runs resume unchanged.
        "precision": "fp32",
    },
}
# The kinds a patch's noise is drawn from by probability (additive Gaussian takes the rest), and the bdn.noise
# model each config key names where the two differ.
_DRAWN_KINDS = ("multiplicative", "salt_pepper", "uniform", "poisson_gaussian", "camera")
_NOISE_MODEL = {"additive": "gaussian"}
SEED_MODELS = {"U-net": "unet", "u-net": "unet", "UNet": "unet", "VAE": "vae"}
SKIMAGE_COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry", "colorwheel")
CHECKPOINT_FORMAT = 1


# --- the config --------------------------------------------------------------------------------------------


def load_config(path: str | Path) -> dict:
    """The config file merged over DEFAULTS and checked; BdnError (one line) for anything wrong."""
    path = Path(path)
    given = read_json(path)
    return merge_config(given, str(path))


def _seed_keys(given: dict) -> dict:
    """Seed 004's flat keys folded into bdn's sections (a copy; bdn's own keys win where both are given)."""
    given = copy.deepcopy(given)
    if isinstance(given.get("model"), str):
        name = given.pop("model")
        given["model"] = {"name": SEED_MODELS.get(name, name)}
    moves = {
        "dataset": ("data", "dataset"),
        "device": ("train", "device"),
        "load_weight_path": ("train", "load_weights"),
    }
    moves["load_weigth_path"] = moves["load_weight_path"]  # the seed README's spelling
    for key, (section, inner) in moves.items():
        if key in given:
            value = given.pop(key)
            if value is not None:
                given.setdefault(section, {}).setdefault(inner, value)
    given.pop("save_weight_path", None)  # a place, not a setting: read by main()
    return given


def merge_config(given: dict, where: str = "config") -> dict:
    if not isinstance(given, dict):
        raise BdnError(f"{where}: must be a JSON object")
    given = _seed_keys(given)
    config = copy.deepcopy(DEFAULTS)
    for section, values in given.items():
        if section not in config:
            raise BdnError(f"{where}: unknown section {section!r}; sections are {', '.join(config)}")
        if not isinstance(values, dict):
            raise BdnError(f"{where}: section {section!r} must be an object")
        unknown = sorted(set(values) - set(config[section]))
        if unknown:
            raise BdnError(f"{where}: {section} has no key {', '.join(unknown)}; keys: {', '.join(config[section])}")
        config[section].update(values)
    _check_config(config, where)
    return config


def _check_config(config: dict, where: str) -> None:
    from bdn.models import get_model_spec

    get_model_spec(config["model"]["name"])
    if config["model"]["channels"] not in (1, 3):
        raise BdnError(f"{where}: model.channels must be 1 or 3")
    data, noise, train = config["data"], config["noise"], config["train"]
    if data["kind"] not in ("synthetic", "pairs", "mixed"):
        raise BdnError(f"{where}: data.kind must be 'synthetic', 'pairs' or 'mixed', got {data['kind']!r}")
    for key in ("synthetic_share", "val_real_weight"):
        if not 0 <= data[key] <= 1:
            raise BdnError(f"{where}: data.{key} must be in [0, 1]")
    for key in ("patch", "patches_per_epoch", "batch_size"):
        if not isinstance(data[key], int) or data[key] < 1:
            raise BdnError(f"{where}: data.{key} must be a positive integer")
    if not 0 < data["val_fraction"] < 1:
        raise BdnError(f"{where}: data.val_fraction must be between 0 and 1")
    for key in ("additive", "multiplicative", "poisson_gaussian", "camera"):
        low_high = noise[key]
        if not (isinstance(low_high, list) and len(low_high) == 2 and 0 <= low_high[0] <= low_high[1]):
            raise BdnError(f"{where}: noise.{key} must be [low, high] with 0 <= low <= high (0-255 units)")
    for key in ("salt_pepper", "uniform"):
        low_high = noise[key]
        if not (isinstance(low_high, list) and len(low_high) == 2 and 0 <= low_high[0] <= low_high[1]):
            raise BdnError(f"{where}: noise.{key} must be [low, high] with 0 <= low <= high")
    shares = [noise[f"{kind}_probability"] for kind in _DRAWN_KINDS]
    if not all(0 <= share <= 1 for share in shares) or sum(shares) > 1:
        raise BdnError(f"{where}: noise.*_probability must be in [0, 1] and sum to at most 1 (jpeg's apart)")
    low, high = noise["jpeg_quality"] if len(noise["jpeg_quality"]) == 2 else (0, 0)
    if not (0 <= noise["jpeg_probability"] <= 1 and 1 <= low <= high <= 100):
        raise BdnError(f"{where}: noise.jpeg_probability must be in [0, 1] and noise.jpeg_quality [low, high] in 1-100")
    from bdn.models.losses import TERMS

    for term, weight in config["loss"].items():
        if term not in TERMS or not isinstance(weight, (int, float)) or weight < 0:
            raise BdnError(f"{where}: loss.{term} must be a weight >= 0")
    if not any(config["loss"].values()):
        raise BdnError(f"{where}: every loss weight is 0: nothing to train")
    if not isinstance(train["epochs"], int) or train["epochs"] < 1:
        raise BdnError(f"{where}: train.epochs must be a positive integer")
    if not train["lr"] > 0:
        raise BdnError(f"{where}: train.lr must be positive")
    if not isinstance(train["minutes"], (int, float)) or train["minutes"] < 0:
        raise BdnError(f"{where}: train.minutes must be a number >= 0 (0: train for train.epochs)")
    if train["precision"] not in ("auto", "fp32", "bf16"):
        raise BdnError(f"{where}: train.precision must be auto, fp32 or bf16, got {train['precision']!r}")


# --- data ----------------------------------------------------------------------------------------------


def _clean_images(dataset: str, channels: int) -> list[tuple[str, np.ndarray]]:
    """(name, image) of a clean set: a bdn dataset name, 'skimage', or a folder."""
    from bdn.data import clean_images, dataset_info, dataset_path, skimage_colour_images
    from bdn.io import read_image

    if dataset.lower() in ("stl10", "cifar10", "cifar100", "sidd"):
        raise BdnError(
            f"data.dataset {dataset!r} cannot be downloaded on this machine; use Train400, 'skimage' (the colour "
            "photographs scikit-image ships), PolyU-train pairs, or a folder of clean images"
        )
    if dataset == "skimage":
        images = skimage_colour_images(SKIMAGE_COLOUR)
    else:
        folder = Path(dataset)
        if not folder.is_dir():
            info = dataset_info(dataset)
            folder = dataset_path(info.name)
        images = [(path.stem, read_image(path)[0]) for path in clean_images(folder)]
    return [(name, _channels(image, channels, name)) for name, image in images]


def _channels(image: np.ndarray, channels: int, name: str) -> np.ndarray:
    if channels == 1 and image.ndim == 3:
        return image.mean(axis=2).astype(np.float32)  # colour sets can train grey models
    if channels == 3 and image.ndim == 2:
        raise BdnError(f"{name}: a grey image cannot train a colour model (model.channels 3)")
    return image


def _pairs(dataset, channels: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    from bdn.data import find_pairs, load_pair, polyu_pairs

    if dataset == "PolyU-train":
        pairs = polyu_pairs("train")
    elif isinstance(dataset, dict) and set(dataset) == {"noisy", "clean"}:
        pairs = find_pairs(dataset["noisy"], dataset["clean"])
    else:
        raise BdnError('data.dataset for pairs must be \'PolyU-train\' or {"noisy": DIR, "clean": DIR}')
    loaded = []
    for pair in pairs:
        noisy, clean = load_pair(pair)
        if clean is None:
            raise BdnError(f"{pair.noisy}: has no clean partner")
        loaded.append((pair.name, _channels(noisy, channels, pair.name), _channels(clean, channels, pair.name)))
    return loaded


def split_validation(names: Sequence[str], fraction: float) -> set[str]:
    """The validation names: bdn.data.split_by_scene with a fixed seed, so every run and every resume of every
    config validates on the same images (whole PolyU scenes at a time)."""
    from bdn.data import split_by_scene

    return split_by_scene(names, fraction, VALIDATION_SEED)


VALIDATION_SEED = 12345  # the validation images and their noise: the same for every run and every resume


class TrainingData:
    """Patches for training and fixed images for validation, from the config's data and noise sections."""

    def __init__(self, config: dict) -> None:
        data, channels = config["data"], config["model"]["channels"]
        self.noise, self.patch, self.kind = config["noise"], data["patch"], data["kind"]
        self.synthetic_share = data["synthetic_share"]  # read by kind "mixed" only
        if self.kind == "synthetic":
            images = _clean_images(data["dataset"], channels)
            names = [n for n, _ in images]
        else:
            pairs = _pairs(data["dataset"], channels)
            names = [n for n, _, _ in pairs]
        if len(names) < 2:
            raise BdnError(f"data.dataset {data['dataset']!r}: needs at least 2 images (one kept for validation)")
        held = split_validation(names, data["val_fraction"])
        rng = np.random.default_rng(VALIDATION_SEED)  # validation noise: fixed for every run and every resume
        crop = data["val_crop"]
        self.validation: list[tuple[str, np.ndarray, np.ndarray]] = []
        if self.kind == "synthetic":
            self.train_images = [im for n, im in images if n not in held]
            held_clean = [(name, image) for name, image in images if name in held]
            self.validation = _noisy_validation(held_clean, data["val_sigmas"], crop, rng)
        else:
            self.train_pairs = [(noisy, clean) for n, noisy, clean in pairs if n not in held]
            self.validation = [(n, _crop(noisy, crop), _crop(clean, crop)) for n, noisy, clean in pairs if n in held]
        self.real_validation = len(self.validation) if self.kind == "mixed" else 0  # the first ones are real pairs
        self.real_weight = data["val_real_weight"]
        if self.kind == "mixed":
            # Synthetic noise on the training pairs' clean halves (or a clean set); validated as the real pairs
            # are, plus the held-out pairs' clean halves with Gaussian noise at each validation sigma.
            extra = data["clean_dataset"]
            self.train_images = (
                [clean for _, clean in self.train_pairs]
                if extra is None
                else [im for _, im in _clean_images(extra, channels)]
            )
            held_clean = [(name, clean) for name, _, clean in pairs if name in held]
            self.validation += _noisy_validation(held_clean, data["val_sigmas"], crop, rng)
        self.counts = {"train": len(names) - len(held), "validation": len(held)}

    def batch(self, count: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy, clean) float32 tensors [count, C, p, p], augmented by flips and quarter turns."""
        from bdn.data import random_patch_pairs, random_patches

        synthetic = int(rng.binomial(count, self.synthetic_share)) if self.kind == "mixed" else None
        if self.kind == "synthetic":
            clean = random_patches(self.train_images, self.patch, count, rng)
            noisy = self._noisy(clean, rng)
        elif self.kind == "pairs":
            noisy, clean = random_patch_pairs(self.train_pairs, self.patch, count, rng)
        else:
            clean_s = random_patches(self.train_images, self.patch, synthetic, rng)
            noisy_r, clean_r = random_patch_pairs(self.train_pairs, self.patch, count - synthetic, rng)
            noisy = np.concatenate([self._noisy(clean_s, rng), noisy_r])
            clean = np.concatenate([clean_s, clean_r])
        noisy, clean = batch_to_nchw(noisy), batch_to_nchw(clean)
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        noisy, clean = (torch.rot90(t, turns, dims=(2, 3)) for t in (noisy, clean))
        if flip:
            noisy, clean = noisy.flip(3), clean.flip(3)
        return noisy.contiguous(), clean.contiguous()

    def _noisy(self, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each patch gets one kind of noise, drawn by bdn.noise's model, at a strength drawn from its range:
        multiplicative, salt-and-pepper, uniform, Poisson-Gaussian or camera noise by their probabilities,
        additive Gaussian otherwise; then, by its own probability, a JPEG round trip at a quality drawn."""
        kinds = _DRAWN_KINDS + ("additive",)
        edges = np.cumsum([self.noise[f"{kind}_probability"] for kind in _DRAWN_KINDS])
        chosen = np.searchsorted(edges, rng.random(clean.shape[0]), side="right")
        noisy = np.empty_like(clean, dtype=np.float32)
        for k, kind in enumerate(kinds[c] for c in chosen):
            low, high = self.noise[kind]
            model = NOISE_MODELS[_NOISE_MODEL.get(kind, kind)]
            noisy[k] = model.function(clean[k].astype(np.float64), rng.uniform(low, high), rng)
        for k in np.flatnonzero(rng.random(clean.shape[0]) < self.noise["jpeg_probability"]):
            noisy[k] = jpeg_roundtrip(noisy[k], int(rng.integers(*self.noise["jpeg_quality"], endpoint=True)))
        return noisy


def _noisy_validation(
    images: Sequence[tuple[str, np.ndarray]], sigmas: Sequence[float], crop: int | None, rng: np.random.Generator
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name@sigma, noisy, clean) for each clean image, cropped, with Gaussian noise at each validation sigma."""
    validation = []
    for name, image in images:
        clean = _crop(image, crop)
        for sigma in sigmas:
            validation.append((f"{name}@{sigma}", add_noise(clean, "gaussian", sigma, rng=rng), clean))
    return validation


def _crop(image: np.ndarray, size: int | None) -> np.ndarray:
    from bdn.data import centre_crop

    if not size or min(image.shape[:2]) <= size:
        return image
    return centre_crop(image, size)


def recalibrate_norms(
    net: torch.nn.Module, data: TrainingData, batches: int, batch_size: int, seed: int, device
) -> None:
    """Re-estimate every batch norm's running statistics as the plain average over `batches` fresh batches.

    The running averages kept during training follow the last few batches only; with blind noise (each batch a
    different mix of levels) they wander, and eval-mode outputs with them. An exact average over many batches
    ("precise BN") steadies validation and the saved model. Its own random stream: training's is untouched.
    """
    norms = [m for m in net.modules() if hasattr(m, "running_var") and hasattr(m, "momentum")]
    if not batches or not norms:
        return
    saved = [m.momentum for m in norms]
    for module in norms:
        module.momentum = None  # cumulative average from here
        module.running_var.fill_(1.0)
        if getattr(module, "running_mean", None) is not None:
            module.running_mean.zero_()
        if getattr(module, "num_batches_tracked", None) is not None:
            module.num_batches_tracked.zero_()
        if hasattr(module, "seen"):
            module.seen = 0
    rng, was_training = np.random.default_rng(seed), net.training
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            noisy, _ = data.batch(batch_size, rng)
            net(noisy.to(device))
    for module, momentum in zip(norms, saved, strict=True):
        module.momentum = momentum
    net.train(was_training)


def validate(net: torch.nn.Module, data: TrainingData, device) -> dict[str, float]:
    """The validation PSNR that picks the best epoch ("val_psnr"): the mean over the validation images, or for
    kind "mixed" the real pairs' mean and the synthetic images' mean weighted by data.val_real_weight (both also
    given: "val_psnr_real", "val_psnr_synthetic")."""
    scores = validation_psnrs(net, data.validation, device)
    real = data.real_validation
    if not real:
        return {"val_psnr": float(np.mean(scores))}
    parts = {"val_psnr_real": float(np.mean(scores[:real])), "val_psnr_synthetic": float(np.mean(scores[real:]))}
    weight = data.real_weight
    return {"val_psnr": weight * parts["val_psnr_real"] + (1 - weight) * parts["val_psnr_synthetic"], **parts}


def validation_psnrs(net: torch.nn.Module, images: Sequence[tuple[str, np.ndarray, np.ndarray]], device) -> list[float]:
    """PSNR (bdn.metrics: output clipped to [0, 1]) of each validation image."""
    from bdn.metrics import psnr

    net.eval()
    scores = []
    with torch.no_grad():
        for _, noisy, clean in images:
            out = to_image(net(batch_to_nchw(noisy[None]).to(device)))
            scores.append(psnr(clean, np.clip(out, 0, 1)))
    net.train()
    return scores


# --- the loop ------------------------------------------------------------------------------------------


def _load_checkpoint(path: Path, config: dict) -> dict:
    state = read_checkpoint(path, CHECKPOINT_FORMAT, "bdn.train")
    saved = merge_config(json.loads(state["config"]), str(path))  # keys added to bdn since get their defaults
    # On a resume more (or fewer) epochs or minutes may be asked for (a long CPU run goes on over several sessions;
    # the cosine then stretches from where it is), and the threads and device are the machine's, not the run's.
    for key in ("epochs", "minutes", "threads", "device"):
        saved["train"][key] = config["train"][key]
    if saved != config:
        raise BdnError(f"{path} was made with another config; use that config or another --model-directory")
    return state


def _plot(path: Path, rows: list[dict]) -> None:
    from bdn.report import new_figure, save_figure

    epochs = [r["epoch"] for r in rows]
    figure, (loss_axis, psnr_axis) = new_figure(1, 2, figsize=(9, 3.5))
    loss_axis.semilogy(epochs, [r["train_loss"] for r in rows])
    loss_axis.set(xlabel="epoch", ylabel="training loss (weighted terms)")
    for key, label in (("val_psnr", "chosen by"), ("val_psnr_real", "real pairs"), ("val_psnr_synthetic", "synthetic")):
        if any(key in r for r in rows):
            psnr_axis.plot(epochs, [r.get(key, math.nan) for r in rows], marker="o", label=label)
    psnr_axis.set(xlabel="epoch", ylabel="validation PSNR (dB)")
    if len(psnr_axis.lines) > 1:
        psnr_axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


def _write_record(directory: Path, config: dict, device: torch.device, epoch: int) -> None:
    """record.json beside the weights (bdn.record): versions, device, threads, seed, the whole pipeline config,
    the weights' SHA-256 (the training images are named by the config, not hashed)."""
    from bdn.record import make_record, write_record

    start = config["train"].get("load_weights")
    outputs = [path for name in ("best", "last") if (path := directory / f"{name}.safetensors").is_file()]
    record = make_record(
        "train",
        config,
        weights=[start] if start else [],
        outputs=outputs,
        seed=config["train"]["seed"],
        device=str(device),
        epoch=epoch,
    )
    write_record(directory / "record.json", record)


def train(model_directory: str | Path, config: dict, progress: bool = True) -> dict:
    """Train (or resume) the config's model into `model_directory`; returns the last log row."""
    from tqdm import tqdm

    from bdn.dip.precision import resolve_precision
    from bdn.io import atomic_write_text
    from bdn.models import build_model
    from bdn.models.losses import training_loss
    from bdn.models.weights import load_weights, save_weights
    from bdn.report import write_training_log

    directory = Path(model_directory)
    directory.mkdir(parents=True, exist_ok=True)
    settings, name, channels = config["train"], config["model"]["name"], config["model"]["channels"]
    device = pick_device(settings["device"], what="train.device")
    data = TrainingData(config)
    torch.manual_seed(settings["seed"])
    net = build_model(name, channels).to(device).train()
    bf16 = resolve_precision(settings["precision"], device) == "bf16"
    layout = torch.channels_last if bf16 and device.type == "cpu" else torch.contiguous_format
    net = net.to(memory_format=layout)  # channels-last: the layout AMX's bf16 convolutions are fast in
    optimizer = torch.optim.Adam(net.parameters(), lr=settings["lr"])
    steps_per_epoch = math.ceil(config["data"]["patches_per_epoch"] / config["data"]["batch_size"])
    total = steps_per_epoch * settings["epochs"]
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=settings["min_lr"])
    rng = np.random.default_rng(settings["seed"])
    rows: list[dict] = []
    best, epoch, spent = -math.inf, 0, 0.0
    budget = settings["minutes"] * 60.0
    checkpoint = directory / "checkpoint.pt"
    if checkpoint.exists():
        state = _load_checkpoint(checkpoint, config)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        rng.bit_generator.state = json.loads(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        rows, best, epoch = json.loads(state["log"]), float(state["best"]), int(state["epoch"])
        spent = float(state.get("spent", 0.0))
        schedule.T_max = total  # a changed epoch count stretches the cosine from where it is
        if epoch >= settings["epochs"] or (budget and spent >= budget):
            print(f"{directory}: already trained for {epoch} epochs (best validation PSNR {best:.2f} dB)")
            return rows[-1]
    elif settings["load_weights"]:  # fine-tuning: start from trained weights of the same model
        start, _ = load_weights(settings["load_weights"], expect_name=name, expect_channels=channels)
        net.load_state_dict(start.state_dict())
    atomic_write_text(directory / "pipeline.json", json.dumps(config, indent=2) + "\n")
    batch_size = config["data"]["batch_size"]
    metadata = {"dataset": json.dumps(config["data"]["dataset"]), "noise": json.dumps(config["noise"])}
    while epoch < settings["epochs"] and not (budget and spent >= budget):
        started, losses = time.perf_counter(), []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{settings['epochs']}", disable=not progress)
        for _ in bar:
            if budget:  # a timed run: the cosine follows the clock, and the last epoch ends when time is up
                done = min(1.0, (spent + time.perf_counter() - started) / budget)
                if done >= 1.0 and losses:
                    break
                low = settings["min_lr"]
                optimizer.param_groups[0]["lr"] = low + 0.5 * (settings["lr"] - low) * (1 + math.cos(math.pi * done))
            noisy, clean = (t.to(device) for t in data.batch(batch_size, rng))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = net(noisy.contiguous(memory_format=layout))
            loss, _ = training_loss(net, out.float(), clean, config["loss"])
            sparsity = net.sparsity() if settings["sparsity"] and hasattr(net, "sparsity") else None
            total_loss = loss if sparsity is None else loss + settings["sparsity"] * sparsity
            optimizer.zero_grad(set_to_none=True)
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), settings["grad_clip"])
            optimizer.step()
            if not budget:
                schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.2e}")
        epoch += 1
        spent += time.perf_counter() - started
        recalibrate_norms(net, data, settings["recalibrate_batches"], batch_size, settings["seed"] + epoch, device)
        scores = validate(net, data, device)
        score = scores["val_psnr"]
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            **{key: round(value, 4) for key, value in scores.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        rows.append(row)
        parts = "".join(f", {k.removeprefix('val_psnr_')} {v:.2f}" for k, v in scores.items() if k != "val_psnr")
        print(f"epoch {epoch}: loss {row['train_loss']:.3e}, validation PSNR {score:.2f} dB{parts}, {row['seconds']} s")
        info = {**metadata, "epoch": str(epoch), "val_psnr": f"{score:.4f}"}
        save_weights(directory / "last.safetensors", net, name, channels, **info)
        if score > best:
            best = score
            save_weights(directory / "best.safetensors", net, name, channels, **info)
        write_training_log(directory, rows, _plot)
        _write_record(directory, config, device, epoch)
        state = {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(config, sort_keys=True),
            "net": net.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": json.dumps(rng.bit_generator.state),
            "torch_rng": torch.get_rng_state(),
            "log": json.dumps(rows),
            "best": best,
            "epoch": epoch,
            "spent": spent,
        }
        write_checkpoint(checkpoint, state)
    return rows[-1]


def save_weight_path(config_path: str) -> str:
    """Seed 004's `save_weight_path`, the model directory when --model-directory is not given."""
    given = read_json(config_path)
    place = given.get("save_weight_path") if isinstance(given, dict) else None
    if not place:
        raise BdnError("give --model-directory (or save_weight_path in the config)")
    return str(place)
