"""Weights on disk: safetensors files (plain tensors + string metadata, no pickle) and the ones bdn ships.

Shared by the DIP initialisations, the feed-forward models and BIQAN, so all write atomically, read with one kind
of error message, and find shipped files the same way (package data `bdn.checkpoints`, the top-level
checkpoints/): `shipped_files` lists them, `find_weights` takes a shipped name or a path. Training checkpoints
(torch.save of plain values) are written by `write_checkpoint` and read back by `read_checkpoint`.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from bdn.errors import BdnError

if TYPE_CHECKING:  # torch loads only when tensors are read or written: listing shipped files needs none
    import torch


def save_tensors(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write tensors + metadata as safetensors, atomically (bdn.io.atomic_write_bytes)."""
    from safetensors.torch import save

    from bdn.io import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({k: v.detach().cpu().contiguous() for k, v in state.items()}, metadata=metadata))


def read_tensors(path: str | Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file (tensors empty when `tensors` is false); BdnError if unreadable."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            state = {key: handle.get_tensor(key) for key in handle.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as error:
        raise BdnError(f"{path}: not a readable safetensors file ({error_cause(error)})") from None
    return state, metadata


def shipped_files(prefix: str) -> dict[str, Path]:
    """Name -> path of the installed `checkpoints/<prefix><name>.safetensors` files (in a source checkout that is
    not installed, on PYTHONPATH, the checkout's own checkpoints/ folder)."""
    try:
        folder = resources.files("bdn.checkpoints")
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parent.parent / "checkpoints"
        if not (folder / "__init__.py").is_file():
            return {}
    found = {}
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(prefix) and name.endswith(".safetensors") and entry.is_file():
            found[name[len(prefix) : -len(".safetensors")]] = Path(str(entry))
    return dict(sorted(found.items()))


def find_weights(name_or_path: str | Path, prefix: str, what: str) -> Path:
    """A shipped file's name (`checkpoints/<prefix><name>.safetensors`) or the path of a file; BdnError naming
    what ships otherwise. `what` names the kind of file in the message ('initialisation', 'model')."""
    shipped = shipped_files(prefix)
    if str(name_or_path) in shipped:
        return shipped[str(name_or_path)]
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = ", ".join(shipped) or "none installed"
    raise BdnError(f"{what} {str(name_or_path)!r}: no such file and no shipped {what} of that name ({names})")


def write_checkpoint(path: str | Path, state: dict) -> None:
    """A training checkpoint (plain tensors, numbers, strings) via torch.save, written atomically."""
    import io

    import torch

    from bdn.io import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def read_checkpoint(
    path: str | Path, fmt: int | None, what: str, remedy: str = "delete it to train from the start"
) -> dict:
    """A checkpoint written by `write_checkpoint` (plain tensors, numbers, strings), read without pickle
    (`weights_only=True`) and checked to be a dict carrying `format == fmt` (any dict when `fmt` is None);
    BdnError '<path> is damaged (<why>); <remedy>' otherwise."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or (fmt is not None and state.get("format") != fmt):
            raise ValueError(f"not a {what} checkpoint")
    except Exception as error:  # damaged files raise many types; all mean the same here
        cause = error_cause(error)
        if isinstance(error, OSError) and Path(path).is_file():  # torch's zip reader on a file cut short
            cause = f"its data breaks off or is corrupt: {error.strerror or cause}"
        raise BdnError(f"{path} is damaged ({cause}); {remedy}") from None
    return state


def error_cause(error: BaseException, longest: int = 160) -> str:
    """What a library's exception says, fit for the brackets of a one-line message: its first sentence in whole
    words (torch.load's advice about `weights_only` becomes what the unpickler refused)."""
    text = str(error)
    if "WeightsUnpickler error:" in text:  # torch.load(weights_only=True) on bytes that are not plain values
        refused = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
        return f"not a file of plain tensors, numbers and strings; the reader stopped at: {refused[: longest - 75]}"
    if isinstance(error, EOFError):
        return "the file ends too soon"
    words = " ".join(text.split()) or type(error).__name__
    first = re.split(r"(?<=[.!?])\s", words, maxsplit=1)[0].rstrip(".")
    if len(first) <= longest:
        return first
    return first[: longest - 3].rsplit(" ", 1)[0] + "..."
