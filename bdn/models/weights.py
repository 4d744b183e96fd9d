"""A trained feed-forward model on disk: its state_dict as safetensors, with metadata naming what it is.

Metadata keys: `format` (bdn-model-1), `model` (a registry name), `channels` ('1' or '3'), `bias_free`, and what
the trainer adds (the training data, noise range, epochs, validation PSNR). Loading builds the registry's module
and loads the tensors strictly, so a file for another architecture fails with one line.

Shipped weights are `checkpoints/model_<name>_<grey|colour>.safetensors`; which ones ship is each registry
entry's `shipped` (tests/test_models_run.py checks it against the folder).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from bdn.errors import BdnError
from bdn.models.registry import COLOURS, MODELS, build_model, get_model_spec, list_models
from bdn.models.wrap import ImageDenoiser
from bdn.tensorfile import read_tensors, save_tensors, shipped_files

FORMAT = "bdn-model-1"


def save_weights(path: str | Path, model: nn.Module, name: str, channels: int, **metadata: str) -> None:
    """Write `model`'s weights (unwrapped from ImageDenoiser if need be) with bdn's metadata."""
    net = model.net if isinstance(model, ImageDenoiser) else model
    spec = get_model_spec(name)
    info = {"format": FORMAT, "model": name, "channels": str(channels), "bias_free": str(spec.bias_free)}
    info.update({key: str(value) for key, value in metadata.items()})
    save_tensors(path, net.state_dict(), info)


def load_weights(
    path: str | Path, expect_name: str | None = None, expect_channels: int | None = None
) -> tuple[nn.Module, dict[str, str]]:
    """(the module in eval mode, its metadata) from a file written by save_weights; BdnError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise BdnError(f"{path}: no such weights file")
    state, metadata = read_tensors(path)
    name, channels = _checked_metadata(path, metadata, expect_name, expect_channels)
    net = build_model(name, channels)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:160]
        raise BdnError(f"{path}: its tensors do not fit model {name!r} ({detail})") from None
    return net.eval(), metadata


def read_weights_metadata(
    path: str | Path, expect_name: str | None = None, expect_channels: int | None = None
) -> tuple[str, int]:
    """(model name, channels) of a bdn model file, read from its header alone (no tensors, no module built), with
    the checks `load_weights` makes of them; BdnError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise BdnError(f"{path}: no such weights file")
    return _checked_metadata(path, read_tensors(path, tensors=False)[1], expect_name, expect_channels)


def _checked_metadata(
    path: Path, metadata: dict[str, str], expect_name: str | None, expect_channels: int | None
) -> tuple[str, int]:
    if metadata.get("format") != FORMAT:
        raise BdnError(f"{path}: not a bdn model file (no '{FORMAT}' metadata)")
    name, given = metadata.get("model", ""), metadata.get("channels", "")
    if name not in MODELS:
        raise BdnError(f"{path}: its metadata names model {name!r}, which bdn does not have")
    if given.strip() not in ("1", "3"):
        raise BdnError(f"{path}: its 'channels' metadata is {given!r}, not 1 or 3 (a damaged or hand-made file)")
    channels = int(given)
    if expect_name is not None and name != expect_name:
        raise BdnError(f"{path}: holds weights for model {name!r}, not {expect_name!r}")
    if expect_channels is not None and channels != expect_channels:
        raise BdnError(f"{path}: holds {COLOURS[channels]} weights, asked for channels={expect_channels}")
    return name, channels


def halve_weights(source: str | Path, target: str | Path) -> None:
    """Copy a bdn model file with its floating-point tensors stored as float16, to ship it at half the size.

    Loading needs nothing new: load_state_dict copies into the model's float32 parameters. Tensors that float16
    cannot hold (counters, values beyond its range) stay as they are."""
    state, metadata = read_tensors(source)
    if metadata.get("format") != FORMAT:
        raise BdnError(f"{source}: not a bdn model file (no '{FORMAT}' metadata)")
    halved = {}
    for key, tensor in state.items():
        small = tensor.is_floating_point() and (tensor.numel() == 0 or float(tensor.abs().max()) < 6e4)
        halved[key] = tensor.half() if small and not key.endswith(("seen", "num_batches_tracked")) else tensor
    save_tensors(target, halved, {**metadata, "stored": "float16"})


def shipped_weights(name: str, channels: int) -> Path:
    """The installed weights for a model name and channel count (`checkpoints/model_<name>_<grey|colour>`)."""
    colour = COLOURS.get(channels, channels)
    if colour not in get_model_spec(name).shipped:
        have = ", ".join(_shipped_keys()) or "none"
        raise BdnError(
            f"no shipped weights for {name} with channels={channels} (shipped: {have}); train them with "
            "bdn train or pass weights=FILE"
        )
    return _installed(f"{name}_{colour}", shipped_files("model_"))


def shipped_models() -> dict[str, Path]:
    """'<name>_<grey|colour>' -> file, for every shipped model."""
    files = shipped_files("model_")
    return {key: _installed(key, files) for key in _shipped_keys()}


def _shipped_keys() -> list[str]:
    """'<name>_<grey|colour>' of every weights file the registry says ships, sorted as the files are."""
    return sorted(f"{name}_{colour}" for name in list_models(shipped=True) for colour in MODELS[name].shipped)


def _installed(key: str, files: dict[str, Path]) -> Path:
    if key not in files:  # the registry and checkpoints/ disagree: a broken install, not a user's mistake
        raise BdnError(f"the weights file model_{key}.safetensors should ship with bdn but is not installed")
    return files[key]
