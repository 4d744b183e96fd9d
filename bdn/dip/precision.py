"""Mixed precision for the DIP fit: the network computes in bfloat16, everything that accumulates stays float32.

Why not `torch.autocast`: on the CPU autocast runs only the convolutions in bf16; reflection padding, batch norm,
bilinear upsampling and the loss stay float32, with a cast before and after each convolution. On a 2-core Xeon
with AMX that left a step of the seed's skip net at 256x256 at 0.35 s (fp32: 0.85 s), most of it in those casts.
Here a bf16 copy of the network (the *mirror*) runs forward and backward with every op in bf16 and no casts
inside; the float32 network keeps the master weights, Adam's moments, the fall-back's saved weights, and the
loss, EMA and metrics are computed from the output cast back to float32. Both networks' parameters live in one
flat buffer each, so per step the bridge is two casts of 2.2 M values: the mirror's gradients into the master's,
and the master's updated weights into the mirror (`benchmarks/dip_speed.py` measures the step).

The 1x1 output head computes in float32 from the bf16 features and its bf16-stored weights (`nets._head`), so
the image itself is never rounded to bf16.
"""

from __future__ import annotations

import copy

import torch

from bdn.errors import BdnError

__all__ = ["PRECISIONS", "Bf16Mirror", "bf16_supported", "flatten_parameters", "resolve_precision"]

PRECISIONS = ("auto", "fp32", "bf16")


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 is fast on `device`: a CPU with AMX tiles or AVX512-BF16 instructions, a CUDA GPU with bf16.

    Elsewhere bf16 is emulated and slower than float32, so 'auto' keeps float32 there.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu's own CPUID checks
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device: torch.device) -> str:
    """'fp32' or 'bf16' for `precision` ('auto', 'fp32' or 'bf16') on `device`; a BdnError for anything else.

    'auto' is bf16 where the hardware computes it natively (see `bf16_supported`), float32 elsewhere. An explicit
    'bf16' is honoured on any CPU or CUDA device (slow where emulated, but the same arithmetic), refused on MPS.
    """
    if precision not in PRECISIONS:
        raise BdnError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise BdnError(f"precision bf16 is not supported on {device.type}: use fp32 or auto")
    return precision


def flatten_parameters(net: torch.nn.Module) -> torch.Tensor:
    """Move every parameter into one flat buffer (each parameter becomes a view of it, strides kept).

    Saving and restoring the weights for the fall-back, and the mirror's casts, are then one elementwise kernel
    each, not one per tensor.
    """
    params = list(net.parameters())
    flat = torch.empty(sum(p.numel() for p in params), device=params[0].device, dtype=params[0].dtype)
    offset = 0
    for p in params:
        n = p.numel()
        view = flat[offset : offset + n].as_strided(p.shape, p.stride())
        view.copy_(p.detach())
        p.data = view
        offset += n
    return flat


def _flat_gradients(net: torch.nn.Module, flat: torch.Tensor) -> torch.Tensor:
    """Give every parameter a gradient that is a view of one zeroed flat buffer laid out like `flat`.

    Backward then accumulates into these views in place (autograd adds into an existing .grad), so one
    `zero_()` clears them all and one cast reads them all.
    """
    grads = torch.zeros_like(flat)
    for p in net.parameters():
        offset = p.data.storage_offset() - flat.storage_offset()
        p.grad = grads[offset : offset + p.numel()].as_strided(p.shape, p.stride())
    return grads


class Bf16Mirror:
    """A bf16 copy of a float32 network whose parameters are views of `master_flat` (see `flatten_parameters`).

    Per step: `zero_grad()`, forward and backward through `net`, `pull_gradients()` (bf16 gradients into the
    master's float32 `.grad`), the optimiser's step on the master, `push_weights()` (the master into the mirror).
    The optimiser must not reset the master's gradients to None: they are views of one flat buffer.
    """

    def __init__(self, master: torch.nn.Module, master_flat: torch.Tensor, memory_format: torch.memory_format):
        self.master = master
        self.net = copy.deepcopy(master).to(dtype=torch.bfloat16, memory_format=memory_format)
        self.flat = flatten_parameters(self.net)
        self.master_flat = master_flat
        self.grads = _flat_gradients(self.net, self.flat)
        self.master_grads = _flat_gradients(master, master_flat)
        self.push_weights()

    def zero_grad(self) -> None:
        self.grads.zero_()

    def pull_gradients(self) -> None:
        """The mirror's gradients, as float32, into the master's gradient buffer."""
        self.master_grads.copy_(self.grads)

    def push_weights(self) -> None:
        """The master's float32 weights, rounded to bf16, into the mirror."""
        self.flat.copy_(self.master_flat)

    def sync_buffers(self) -> None:
        """Batch norm's running statistics, which only the mirror updates, back into the master (as float32)."""
        with torch.no_grad():
            for mine, theirs in zip(self.master.buffers(), self.net.buffers(), strict=True):
                mine.copy_(theirs)
