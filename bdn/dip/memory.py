"""How much memory a DIP fit needs, before it starts, and how much there is.

A fit's memory is dominated by what autograd saves for the backward pass, which grows linearly with the pixels.
`fit_bytes` measures that exactly on a small probe (the same net and precision, a 64x64-pixel input, with
`torch.autograd.graph.saved_tensors_hooks` counting every saved tensor's bytes), scales it to the image, and adds
the gradients and temporaries of the backward pass and the fit's own buffers with a factor calibrated on this
project's CPU (`benchmarks/dip_speed.py` records the peak resident memory it predicts against what it measured).
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch

from bdn.dip.nets import NetSpec, build_net, net_spec, smallest_side
from bdn.errors import BdnError

__all__ = ["available_bytes", "fit_bytes", "job_bytes", "memory_budget_bytes"]

# What a fit adds to its process = BACKWARD_FACTOR x the saved activations + BASE_BYTES (weights, Adam, buffers).
# Calibrated on 'skip' in fp32: 1.45 GB resident at 256x256 and 2.98 GB at 512x512 against 0.47 and 1.88 GB
# saved, a factor 1.1 over the process's own 0.94 GB (torch, the image); with a margin.
BACKWARD_FACTOR = 1.3
BASE_BYTES = 128 * 2**20


@lru_cache(maxsize=32)
def _saved_bytes_per_pixel(spec: NetSpec, input_depth: int, channels: int, dtype: torch.dtype) -> float:
    side = max(64, smallest_side(spec))
    with torch.random.fork_rng(devices=[]):
        net = build_net(spec, input_depth, channels).train().to(dtype)
    storages: dict[int, int] = {}  # one tensor is often saved by two ops (a convolution and the norm before it)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if not isinstance(tensor, torch.nn.Parameter):  # weights are counted once, in the base
            storage = tensor.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.rand(1, input_depth, side, side).to(dtype)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        net(x).float().mean().backward()
    return sum(storages.values()) / (side * side)


def fit_bytes(
    net_type: str | NetSpec, height: int, width: int, channels: int, input_depth: int = 32, precision: str = "fp32"
) -> int:
    """Estimated memory (bytes) a DIP fit adds to its process for of a height x width image with `channels` channels.

    `precision` is the resolved one ('fp32' or 'bf16'); `input_depth` the network input's channels.
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    per_pixel = _saved_bytes_per_pixel(net_spec(net_type), int(input_depth), int(channels), dtype)
    return int(BASE_BYTES + BACKWARD_FACTOR * per_pixel * height * width)


def available_bytes() -> int | None:
    """Memory the system can give now (MemAvailable on Linux, free pages elsewhere), or None when unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget_bytes(memory_gb: float | None = None) -> int:
    """The memory a fit may use: `memory_gb` when given, else BDN_DIP_MEMORY_GB, else 70 % of what is available
    now (8 GB when that cannot be read)."""
    if memory_gb is None:
        text = os.environ.get("BDN_DIP_MEMORY_GB", "").strip()
        if text:
            try:
                memory_gb = float(text)
            except ValueError:
                raise BdnError(f"BDN_DIP_MEMORY_GB: expected a number of gigabytes, got {text!r}") from None
            what = "BDN_DIP_MEMORY_GB"
    else:
        what = "memory_gb"
    if memory_gb is not None:
        if isinstance(memory_gb, bool) or not isinstance(memory_gb, int | float) or not 0 < memory_gb < 1e6:
            raise BdnError(f"{what} must be a number of gigabytes > 0, got {memory_gb!r}")
        return int(memory_gb * 2**30)
    free = available_bytes()
    return int(0.7 * free) if free else 8 * 2**30


def job_bytes(job, height: int | None = None, width: int | None = None) -> int:
    """`fit_bytes` for a prepared DIP job (bdn.dip.denoise.prepare): its net, input and precision, on its padded
    image or, given `height` and `width`, on an image of that size (a tile)."""
    from bdn.devices import pick_device
    from bdn.dip.precision import resolve_precision

    config = job.config
    channels = job.padded.shape[2] if job.padded.ndim == 3 else 1
    depth = config.input_depth if config.input_base == "noise" else channels
    precision = config.precision if config.precision != "auto" else resolve_precision("auto", pick_device("auto"))
    if height is None or width is None:
        height, width = job.padded.shape[:2]
    return fit_bytes(config.net_type, height, width, channels, depth, precision)
