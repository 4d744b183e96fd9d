"""Multi-scale wrappers: one shared denoiser run on every level of a Gaussian or Laplacian pyramid, recomposed.

The pyramids are linear (a 5x5 binomial blur, decimation by 2, bilinear upsampling), so a bias-free model inside
gives a bias-free whole, and the coarse levels widen the receptive field at a third more cost instead of many
more layers (the seed's LapSRN-inspired addition). The input is reflect-padded to a multiple of 2^(levels-1)
inside and cropped back, so any image size works.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import pad_to_multiple


def pyramid_reach(base_reach: int, levels: int) -> int:
    """The tile overlap for a base model reaching `base_reach` pixels run on every level: at the coarsest level
    one pixel spans 2^(levels-1) input pixels, and each level's blur and upsampling reach 8 more."""
    return base_reach * 2 ** (levels - 1) + 8 * (levels - 1)


def blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial low-pass ([1, 4, 6, 4, 1] / 16 each way) per channel, reflect padding (replicate where a side is
    too short to reflect). Built as four 2x2 box averages in a row, which is exactly that kernel: no constant
    tensor to carry, so traced and exported graphs run on any device and any number of channels."""
    mode = "reflect" if min(x.shape[-2:]) > 2 else "replicate"
    x = F.pad(x, (2, 2, 2, 2), mode=mode)
    for _ in range(4):
        x = F.avg_pool2d(x, 2, stride=1)
    return x


def down(x: torch.Tensor) -> torch.Tensor:
    return blur(x)[..., ::2, ::2]


def up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def gaussian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[x, down(x), down(down(x)), ...]: `levels` images, finest first."""
    pyramid = [x]
    for _ in range(levels - 1):
        pyramid.append(down(pyramid[-1]))
    return pyramid


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels G_l - up(G_{l+1}) and the coarsest Gaussian level last; `recompose` inverts it exactly."""
    gaussian = gaussian_pyramid(x, levels)
    bands = [g - up(coarser, g.shape[-2:]) for g, coarser in zip(gaussian, gaussian[1:], strict=False)]
    return bands + [gaussian[-1]]


def recompose(levels: list[torch.Tensor]) -> torch.Tensor:
    out = levels[-1]
    for band in reversed(levels[:-1]):
        out = band + up(out, band.shape[-2:])
    return out


class PyramidDenoiser(nn.Module):
    """`base` (a shared denoiser) on every pyramid level; `kind` 'laplacian' or 'gaussian'.

    Laplacian: each band and the coarsest image denoised by `base`, then recomposed. Gaussian: each level
    denoised; the output keeps each level's own fine detail (D_l - up(down(D_l))) and takes its low-pass from
    the coarser, better-averaged result, recursively.
    """

    def __init__(self, base: nn.Module, levels: int = 3, kind: str = "laplacian") -> None:
        super().__init__()
        if kind not in ("laplacian", "gaussian"):
            raise ValueError(f"unknown pyramid kind {kind!r}; choose laplacian or gaussian")
        if levels < 1:
            raise ValueError("a pyramid needs at least 1 level")
        self.base, self.levels, self.kind = base, levels, kind
        self.bias_free = getattr(base, "bias_free", False)
        self.channels = getattr(base, "channels", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, 2 ** (self.levels - 1))
        if self.kind == "laplacian":
            out = recompose([self.base(level) for level in laplacian_pyramid(padded, self.levels)])
        else:
            denoised = [self.base(level) for level in gaussian_pyramid(padded, self.levels)]
            out = denoised[-1]
            for level in reversed(denoised[:-1]):
                size = level.shape[-2:]
                out = level - up(down(level), size) + up(out, size)
        return out[..., :height, :width]

    def sparsity(self) -> torch.Tensor | None:
        return self.base.sparsity() if hasattr(self.base, "sparsity") else None
