"""Learned initialisations for DIP (`--init`): learn starting weights from a folder of images, save, load.

Two schemes, both learned on small random patches (a DIP net is fully convolutional, so weights learned on 64x64
patches apply to any image size):

- 'reptile' (Nichol et al. 2018, the meta-learning behind MetaDIP): each step takes a random patch of a random
  image, runs `inner_steps` iterations of the ordinary DIP fit on it from the current weights (the same loop,
  `fit_dip`, with the same config as at test time), and moves the weights a step `meta_lr` towards where the
  inner fit ended. The weights learn to be a start from which a few DIP iterations go far. The folder holds
  noisy images, as DIP sees them; no clean image is needed.
- 'masked' (MPI, Ma et al. NeurIPS 2024): the net is trained, batch by batch, to fill in images whose pixels are
  hidden at random (`mask_ratio`), with the image itself as input; it learns what natural images look like. At
  test time the fit takes the noisy image as input and hides pixels the same way (DipConfig.mask_ratio). The
  folder holds clean images.

A learned initialisation is a safetensors file: the net's state_dict plus metadata naming the DIP config it
belongs to (net type and its full shape, input base and depth, colour channels, mask ratio, scheme and steps).
`load_init` checks that metadata against the fit that wants the weights, so a wrong file fails with one line, not a
shape error.
Shipped initialisations live in the project's `checkpoints/` (installed as the package `bdn.checkpoints`).

Learning is resumable: every `save_every` steps the weights, the optimiser and the random state go to
`<out>.state.pt` (loaded with weights_only=True); run again with the same arguments and it goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bdn.devices import pick_device
from bdn.dip.config import DipConfig, check_config
from bdn.dip.fit import fit_dip
from bdn.dip.nets import NET_TYPES, NetSpec, build_net, net_spec, smallest_side
from bdn.errors import BdnError
from bdn.io import list_images, read_image
from bdn.tensorfile import find_weights, read_checkpoint, read_tensors, save_tensors, shipped_files, write_checkpoint
from bdn.tensors import batch_to_nchw

__all__ = [
    "INIT_SCHEMES",
    "InitConfig",
    "OpenedInit",
    "check_init_fits",
    "config_for_init",
    "find_init",
    "init_metadata",
    "learn_init",
    "load_init",
    "open_init",
    "save_init",
    "shipped_inits",
]

INIT_SCHEMES = ("reptile", "masked")
FORMAT = "bdn-dip-init-1"
# DipConfig fields an initialisation carries to the fits that start from it (besides its net and input).
FIT_SETTINGS = ("lr", "ema", "input_std", "input_perturbation", "reference_std", "reference_perturbation")
# Metadata every initialisation carries; `net_spec` (the net's shape as JSON) is checked when present.
REQUIRED_KEYS = ("format", "scheme", "net_type", "input_base", "input_depth", "channels", "mask_ratio")


@dataclass
class InitConfig:
    """How to learn an initialisation. `dip` is the fit the weights are for (its net, input and loss)."""

    scheme: str = "reptile"
    dip: DipConfig = dataclasses.field(default_factory=DipConfig)
    steps: int = 1000  # outer steps (reptile) or batches (masked)
    patch: int = 64  # side of the random patches
    inner_steps: int = 10  # reptile: DIP iterations per task
    meta_lr: float = 1.0  # reptile: outer step size, decayed linearly to 0 over `steps`
    batch: int = 8  # masked: patches per batch
    lr: float = 1e-3  # masked: Adam's rate (cosine-decayed)
    mask_ratio: float = 0.5  # masked: share of pixels hidden in training
    seed: int = 0
    save_every: int = 50


def _check(config: InitConfig, channels: int) -> None:
    if config.scheme not in INIT_SCHEMES:
        raise BdnError(f"init scheme {config.scheme!r}: choose one of {', '.join(INIT_SCHEMES)}")
    for name in ("steps", "patch", "inner_steps", "batch", "save_every"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BdnError(f"init: {name} must be a positive integer, got {value!r}")
    if isinstance(config.mask_ratio, bool) or not isinstance(config.mask_ratio, (int, float)):
        raise BdnError(f"init: mask_ratio must be a number in [0, 1), got {config.mask_ratio!r}")
    if not 0.0 <= config.mask_ratio < 1.0:
        raise BdnError(f"init: mask_ratio must be in [0, 1), got {config.mask_ratio}")
    for name in ("meta_lr", "lr"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < math.inf:
            raise BdnError(f"init: {name} must be a positive number, got {value!r}")
    # The masked scheme never runs fit_dip, which checks its config: check it here, before anything is written.
    check_config(config.dip)
    spec = net_spec(config.dip.net_type)
    multiple, least = 2**spec.scales, smallest_side(spec)
    if config.patch % multiple or config.patch < least:
        raise BdnError(
            f"init: patch {config.patch} does not fit DIP net {_net_name(config.dip.net_type)!r}: "
            f"it must be a multiple of {multiple} and at least {least}"
        )
    if config.scheme == "masked" and config.dip.input_base == "noise":
        raise BdnError("init scheme masked learns to fill in images: its DIP config needs input_base image")
    if channels not in (1, 3):
        raise BdnError(f"init: channels must be 1 or 3, got {channels}")


def _net_name(net_type: str | NetSpec) -> str:
    return net_type if isinstance(net_type, str) else "custom"


def _spec_json(net_type: str | NetSpec) -> str:
    """The net's full shape as JSON: two initialisations fit the same nets exactly when these agree."""
    return json.dumps(dataclasses.asdict(net_spec(net_type)), sort_keys=True)


def _spec_from_json(text: str, what: str) -> NetSpec:
    try:
        fields = json.loads(text)
        spec = NetSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    except (ValueError, TypeError) as error:
        raise BdnError(f"{what}: unreadable net_spec metadata ({error})") from None
    spec.check()
    return spec


def _load_patches_source(folder: Path, channels: int, patch: int) -> list[np.ndarray]:
    """Every image of the folder in the wanted channels, at least `patch` pixels a side."""
    files, _ = list_images([folder])
    if not files:
        raise BdnError(f"{folder}: no images to learn an initialisation from")
    images = []
    for path in files:
        image, _ = read_image(path)
        image = image[..., :3] if image.ndim == 3 else image
        if channels == 3 and image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        elif channels == 1 and image.ndim == 3:
            image = image.mean(axis=2)
        if min(image.shape[:2]) >= patch:
            images.append(np.ascontiguousarray(image, dtype=np.float32))
    if not images:
        raise BdnError(f"{folder}: no image is at least {patch} pixels a side")
    return images


def _random_patch(images: Sequence[np.ndarray], patch: int, rng: np.random.Generator) -> np.ndarray:
    image = images[int(rng.integers(len(images)))]
    top = int(rng.integers(image.shape[0] - patch + 1))
    left = int(rng.integers(image.shape[1] - patch + 1))
    return image[top : top + patch, left : left + patch]


def _metadata(config: InitConfig, channels: int, step: int, source: str) -> dict[str, str]:
    dip = config.dip
    return {
        "format": FORMAT,
        "scheme": config.scheme,
        "net_type": _net_name(dip.net_type),
        "net_spec": _spec_json(dip.net_type),
        "input_base": dip.input_base,
        "input_depth": str(dip.input_depth if dip.input_base == "noise" else channels),
        "channels": str(channels),
        "mask_ratio": str(dip.mask_ratio),
        "steps": str(step),
        "source": source,
        "config": json.dumps({k: v for k, v in dataclasses.asdict(config).items() if k != "dip"}),
        "fit": json.dumps({key: getattr(dip, key) for key in FIT_SETTINGS}),
    }


def save_init(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write weights + metadata as safetensors, atomically."""
    save_tensors(path, state, metadata)


def shipped_inits() -> dict[str, Path]:
    """Name -> file of the initialisations installed with bdn (`checkpoints/dip_*.safetensors`)."""
    return shipped_files("dip_")


def find_init(name_or_path: str | Path) -> Path:
    """A shipped initialisation's name, or the path of a safetensors file."""
    return find_weights(name_or_path, "dip_", "initialisation")


def _read(name_or_path: str | Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    path = find_init(name_or_path)
    state, metadata = read_tensors(path, tensors)
    if metadata.get("format") != FORMAT:
        raise BdnError(f"{path}: not a bdn DIP initialisation (no '{FORMAT}' metadata)")
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise BdnError(f"{path}: DIP initialisation metadata lacks {', '.join(missing)}")
    return state, metadata


def load_init(name_or_path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state_dict, metadata) of a learned initialisation; BdnError for anything that is not one."""
    return _read(name_or_path, tensors=True)


def init_metadata(name_or_path: str | Path) -> dict[str, str]:
    """The metadata of a learned initialisation, without reading its weights (for listings)."""
    return _read(name_or_path, tensors=False)[1]


def config_for_init(metadata: dict[str, str], config: DipConfig) -> DipConfig:
    """`config` with the net and input the initialisation was learned for (they must match to use its weights).

    A custom net (a NetSpec, not a name of NET_TYPES) comes back as the NetSpec stored in the metadata.
    """
    net_type: str | NetSpec = metadata["net_type"]
    if net_type not in NET_TYPES and "net_spec" in metadata:
        net_type = _spec_from_json(metadata["net_spec"], f"init learned for net {net_type!r}")
    # The fit's own settings the weights were learned with (rate, perturbations, EMA) come along too: an init
    # tuned for a blind-spot fit at a low rate would be wasted by the seed's rate. Callers override after.
    learned = json.loads(metadata.get("fit", "{}"))
    settings = {key: learned[key] for key in FIT_SETTINGS if key in learned}
    return dataclasses.replace(
        config,
        **settings,
        net_type=net_type,
        input_base=metadata["input_base"],
        input_depth=int(metadata["input_depth"]) if metadata["input_base"] == "noise" else config.input_depth,
        mask_ratio=float(metadata["mask_ratio"]),
    )


def check_init_fits(metadata: dict[str, str], config: DipConfig, channels: int, what: str) -> None:
    """BdnError unless the initialisation was learned for this net, input and number of channels."""
    if "net_spec" in metadata:
        # Compare the nets' shapes, not their names: a custom net has no name, and the shape is what must match.
        if metadata["net_spec"] != _spec_json(config.net_type):
            raise BdnError(
                f"{what}: learned for net {metadata['net_type']!r}, but this fit uses "
                f"{'a different ' if metadata['net_type'] == _net_name(config.net_type) else ''}"
                f"net {_net_name(config.net_type)!r}"
            )
    elif metadata.get("net_type") != _net_name(config.net_type):
        raise BdnError(f"{what}: learned for net_type={metadata.get('net_type')}, but this fit has {config.net_type}")
    wanted = {
        "input_base": config.input_base,
        "channels": str(channels),
    }
    if config.input_base == "noise":
        wanted["input_depth"] = str(config.input_depth)
    for key, value in wanted.items():
        if metadata.get(key) != value:
            raise BdnError(f"{what}: learned for {key}={metadata.get(key)}, but this fit has {key}={value}")


@dataclass(frozen=True)
class OpenedInit:
    """A learned initialisation, opened once for a whole folder of fits (bdn run)."""

    given: str  # as the user named it (messages)
    state: dict  # the net's state_dict
    metadata: dict  # what it was learned for (bdn.dip.init)
    identity: str  # sha256 of its file, first 16 hex digits: what a checkpoint remembers


def open_init(init: str, config: DipConfig) -> tuple[OpenedInit, DipConfig]:
    """The initialisation and the config it fixes (net, input, mask ratio); BdnError for a bad or unfit file.

    Its weights are loaded into the net its metadata names here, once, so a file whose weights belong to another
    net fails before any image is touched (not at each image's fit).
    """
    path = find_init(init)
    state, metadata = load_init(path)
    try:
        wanted = config_for_init(metadata, config)
        check_config(wanted)
        channels = int(metadata["channels"])
        depth = wanted.input_depth if wanted.input_base == "noise" else channels
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left alone
            net = build_net(wanted.net_type, depth, channels)
        net.load_state_dict(state, strict=True)
    except BdnError as error:
        raise BdnError(f"--init {init}: {error}") from None
    except (KeyError, ValueError) as error:
        raise BdnError(f"--init {init}: its metadata is incomplete or damaged ({error!r})") from None
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:200]
        raise BdnError(f"--init {init}: its weights do not fit the net it names ({detail})") from None
    try:
        identity = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as error:
        raise BdnError(f"--init {init}: cannot read {path} ({error.strerror or error})") from None
    return OpenedInit(str(init), state, metadata, identity), wanted


def _reptile_step(
    net_state: dict[str, torch.Tensor], patch: np.ndarray, config: InitConfig, seed: int, device: torch.device
) -> tuple[dict[str, torch.Tensor], float]:
    """The weights after `inner_steps` DIP iterations on `patch` from `net_state`, and the last iteration's loss."""
    inner = dataclasses.replace(
        config.dip, num_iter=config.inner_steps, save_iter=config.inner_steps, show_iter=config.inner_steps, seed=seed
    )
    result = fit_dip(patch, None, inner, device=device, init_state=net_state, progress=False)
    return result.state_dict, float(result.history[-1]["loss"])


def _masked_batch(images: Sequence[np.ndarray], config: InitConfig, rng: np.random.Generator) -> torch.Tensor:
    patches = [_random_patch(images, config.patch, rng) for _ in range(config.batch)]
    batch = batch_to_nchw(np.stack(patches))
    # Flips and quarter turns: eight times the patches, no resampling.
    if rng.random() < 0.5:
        batch = batch.flip(3)
    return torch.rot90(batch, int(rng.integers(4)), dims=(2, 3)).contiguous()


def learn_init(
    folder: Path,
    out: Path,
    config: InitConfig,
    *,
    channels: int = 3,
    device: str | torch.device = "auto",
    progress: bool = True,
    log: Path | None = None,
) -> Path:
    """Learn an initialisation from the images in `folder` and write it to `out` (safetensors). Resumable."""
    from tqdm.auto import tqdm

    _check(config, channels)
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise BdnError(f"{folder}: not a folder of images")
    if out.is_dir():
        raise BdnError(f"{out}: is a folder; give the file to write (e.g. {out / 'init.safetensors'})")
    images = _load_patches_source(folder, channels, config.patch)
    dev = device if isinstance(device, torch.device) else pick_device(device)
    depth = config.dip.input_depth if config.dip.input_base == "noise" else channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        net = build_net(config.dip.net_type, depth, channels)
    net = net.to(dev).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr) if config.scheme == "masked" else None
    rng = np.random.default_rng(config.seed)
    state_path = out.with_name(out.name + ".state.pt")
    log = Path(log) if log is not None else out.with_name(out.stem + ".log.csv")
    settings = _settings(config, channels)
    step = 0
    if state_path.exists():
        saved = read_checkpoint(state_path, None, "DIP initialisation progress", "remove it")
        if saved.get("config") != settings:
            raise BdnError(f"{state_path}: an unfinished run with other settings; remove it or use the same ones")
        net.load_state_dict(saved["net"])
        if optimizer is not None:
            optimizer.load_state_dict(saved["optimizer"])
        rng.bit_generator.state = json.loads(saved["rng"])
        step = int(saved["step"])
    elif log.exists():
        log.unlink()  # a fresh run: the old log belongs to another one
    out.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=config.steps, initial=step, desc=f"init {config.scheme}", disable=not progress)
    start = time.perf_counter()
    while step < config.steps:
        if config.scheme == "reptile":
            patch = _random_patch(images, config.patch, rng)
            before = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            after, loss = _reptile_step(before, patch, config, seed=int(rng.integers(2**31)), device=dev)
            rate = config.meta_lr * (1.0 - step / config.steps)
            merged = {
                k: (before[k] + rate * (after[k] - before[k])) if before[k].is_floating_point() else after[k]
                for k in before
            }
            net.load_state_dict(merged)  # loss: the inner fit's last, the meta-learning curve
        else:
            batch = _masked_batch(images, config, rng).to(dev)
            masks = torch.Generator().manual_seed(int(rng.integers(2**31)))
            hidden = torch.rand(batch.shape[0], 1, *batch.shape[2:], generator=masks) < config.mask_ratio
            hidden = hidden.to(device=dev, dtype=batch.dtype)
            for group in optimizer.param_groups:  # cosine decay: large steps first, a settled net at the end
                group["lr"] = config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps))
            optimizer.zero_grad(set_to_none=True)
            loss_t = F.mse_loss(net(batch * (1.0 - hidden)), batch)
            loss_t.backward()
            optimizer.step()
            loss = float(loss_t.detach())
        step += 1
        bar.update(1)
        with open(log, "a") as handle:
            if handle.tell() == 0:
                handle.write("step,loss,seconds\n")
            handle.write(f"{step},{loss:.6g},{time.perf_counter() - start:.2f}\n")
        if step % config.save_every == 0 or step == config.steps:
            _save_progress(state_path, net, optimizer, rng, step, settings)
    bar.close()
    save_init(out, net.state_dict(), _metadata(config, channels, step, folder.name))
    _write_record(folder, out, config, channels, dev)
    state_path.unlink(missing_ok=True)
    return out


def _write_record(folder: Path, out: Path, config: InitConfig, channels: int, device: torch.device) -> None:
    """`<out>.json` beside the initialisation (bdn.record): versions, device, threads, seed, options, the
    SHA-256 of every image it learned from and of the file written."""
    from bdn.io import list_images
    from bdn.record import make_record, write_record

    options = {"folder": str(folder), "out": str(out), "channels": channels, **dataclasses.asdict(config)}
    inputs = list_images([folder])[0]
    record = make_record("dip-init", options, inputs=inputs, outputs=[out], seed=config.seed, device=str(device))
    write_record(out.with_name(out.name + ".json"), record)


def _settings(config: InitConfig, channels: int) -> str:
    """What a resumed run must share with the one it continues (save_every may differ)."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "save_every"}
    return json.dumps({**fields, "channels": channels}, default=str, sort_keys=True)


def _save_progress(path: Path, net, optimizer, rng: np.random.Generator, step: int, settings: str) -> None:
    state = {
        "net": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "step": step,
        "rng": json.dumps(rng.bit_generator.state),
        "config": settings,
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    write_checkpoint(path, state)
