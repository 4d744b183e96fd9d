"""Which torch device a process uses: one rule for DIP, training, BIQAN and the benchmarks.

Ground floor: imports torch only when called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from bdn.errors import BdnError

if TYPE_CHECKING:
    import torch


def pick_device(
    name: str | torch.device | None = None, world: int = 1, local_rank: int = 0, what: str = "device"
) -> torch.device:
    """The torch device for `name`: 'auto' or None picks cuda, else mps, else cpu; others are checked.

    Under torchrun (`world` > 1), 'auto' and 'cuda' mean cuda:LOCAL_RANK where there are GPUs, so each rank has
    its own. A bad or absent device is one BdnError line, starting with `what` (the option the user gave).
    """
    import torch

    if isinstance(name, torch.device):
        return name
    if world > 1 and name in (None, "auto", "cuda") and torch.cuda.is_available():
        name = f"cuda:{local_rank % torch.cuda.device_count()}"
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise BdnError(f"{what} {name!r}: not a device name (use auto, cpu, cuda, cuda:N or mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BdnError(f"{what} {name!r}: no CUDA GPU is available here (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BdnError(f"{what} {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise BdnError(f"{what} {name!r}: Apple MPS is not available here (use auto or cpu)")
    elif device.type != "cpu":
        raise BdnError(f"{what} {name!r}: bdn runs on cpu, cuda or mps")
    return device


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) without it."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise BdnError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (as torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise BdnError(f"RANK {rank} is not within WORLD_SIZE {world}")
    return rank, world, local
