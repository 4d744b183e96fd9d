"""bdn images as torch tensors and back, and the 8-bit values a saved image holds.

bdn's image layout is numpy float32, grey (H, W) or colour (H, W, 3), values in [0, 1] (what
``bdn.io.read_image`` returns and ``bdn.io.write_image`` takes). Networks take (N, C, H, W) tensors. Every
conversion between the two goes through here, so the channel order, the copy rules and the dtype are decided
once:

- ``to_chw``: an image (numpy in bdn's layout, or a tensor already channels-first) to (C, H, W) in the asked
  dtype on the asked device, its memory order kept (a view where no copy is needed: a reference image compared
  with iterates sums in the same order as it always has); ``to_nchw``: (1, C, H, W) and contiguous, a network's
  input; ``batch_to_nchw`` for a stack of images.
- ``to_image``: a tensor (H, W), (C, H, W) or (1, C, H, W) back to bdn's layout, float32, on the host, a copy
  of its own (callers keep it while the tensor's buffer is reused).
- ``to_8bit`` / ``rounded_to_8bit``: rint(clip(x, 0, 1) * 255) computed in float32, exactly the samples
  ``write_image`` stores in an 8-bit file, for numpy arrays and tensors alike (torch.round rounds half to even,
  as np.rint does).
"""

from __future__ import annotations

import numpy as np
import torch

from bdn.errors import BdnError
from bdn.io import quantise

__all__ = ["batch_to_nchw", "rounded_to_8bit", "to_8bit", "to_chw", "to_image", "to_nchw"]


def to_chw(
    image: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """An image as a (C, H, W) tensor of `dtype` on `device` (None: the CPU for numpy input, the tensor's own
    device for a tensor); colour numpy input gives a channels-first view of its channels-last memory.

    numpy follows bdn's layout, (H, W) or (H, W, C); a tensor is taken as channels-first already: (H, W),
    (C, H, W) or (1, C, H, W). The values are converted straight to `dtype` (a float64 image asked for in
    float64 keeps every digit). BdnError for any other shape.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach()
        t = t[0] if t.ndim == 4 and t.shape[0] == 1 else t
        t = t[None] if t.ndim == 2 else t
        if t.ndim != 3:
            raise BdnError(f"an image tensor must be (H, W), (C, H, W) or (1, C, H, W), got {list(image.shape)}")
    else:
        arr = np.asarray(image)
        if arr.ndim not in (2, 3):
            raise BdnError(f"an image must be (H, W) or (H, W, C), got shape {arr.shape}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t.to(device=device, dtype=dtype)


def to_nchw(
    image: np.ndarray | torch.Tensor, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """An image as a contiguous (1, C, H, W) tensor of `dtype` on `device`: a network's input (see `to_chw`)."""
    return to_chw(image, dtype, device)[None].contiguous()


def batch_to_nchw(images: np.ndarray) -> torch.Tensor:
    """A stack of images, (N, H, W) grey or (N, H, W, C) colour, as an (N, C, H, W) tensor of the same dtype.

    A view of the stack's memory where it is contiguous already (training batches are built fresh each time).
    """
    t = torch.from_numpy(np.ascontiguousarray(images))
    if t.ndim == 3:
        return t[:, None]
    if t.ndim == 4:
        return t.permute(0, 3, 1, 2)
    raise BdnError(f"a stack of images must be (N, H, W) or (N, H, W, C), got shape {tuple(t.shape)}")


def to_image(tensor: torch.Tensor) -> np.ndarray:
    """A tensor (H, W), (C, H, W) or (1, C, H, W) as a bdn image: float32 (H, W) or (H, W, C) on the host, a copy.

    The values are kept as they are (not clipped, not rescaled: a uint8 tensor gives 0..255).
    """
    x = tensor.detach()
    x = x[0] if x.ndim == 4 and x.shape[0] == 1 else x
    if x.ndim == 3:
        x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
    if x.ndim not in (2, 3):
        raise BdnError(f"an image tensor must be (H, W), (C, H, W) or (1, C, H, W), got {list(tensor.shape)}")
    return np.array(x.cpu().numpy(), dtype=np.float32)


def to_8bit(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The 8-bit samples write_image stores, rint(clip(x, 0, 1) * 255) in float32, as uint8 of the same kind
    (numpy stays numpy, a tensor stays on its device, its layout unchanged)."""
    if isinstance(image, torch.Tensor):
        return torch.round(image.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    return quantise(np.asarray(image), np.dtype(np.uint8))


def rounded_to_8bit(image: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The image as written to an 8-bit file and read back: `to_8bit(image) / 255` in float32, of the same kind."""
    if isinstance(image, torch.Tensor):
        return to_8bit(image).float() / 255.0
    return to_8bit(image).astype(np.float32) / np.float32(255.0)
