"""MWCNN (Liu et al. 2018): a U-Net whose downsampling is the 2-D Haar wavelet transform and upsampling its inverse.

Pooling or strided convolution throws information away; the orthonormal Haar DWT does not: it splits each 2x2
block into four subbands (the average and three differences) stacked as channels, so halving the size is exactly
invertible and the decoder's inverse transform (IWT) can put every detail back. The network enlarges the receptive
field like a U-Net at the cost of a plain CNN.

Structure, with widths (w_1, ..., w_L): the input (C channels) goes through L levels, each a DWT (c -> 4c
channels, half the size) and a block of two 3x3 convolutions with ReLU (4c -> w_i -> w_i), whose output e_i is
kept. The decoder climbs back: at level i a block of two 3x3 convolutions (w_i -> w_i with ReLU, then w_i -> 4c
linear, since wavelet subbands are signed), the IWT (4c -> c, twice the size), and the sum with e_{i-1} (MWCNN's
skip is a sum, not a concatenation). At the top the IWT gives C channels: a correction added to the input (the
residual learning of the paper). No batch norm (the paper has it): it ties an output to its batch, and at these
depths the network trains without it.

Inputs of any size: reflect-padded inside to a multiple of 2^L and cropped back.
Default configuration: widths (32, 64, 128), 3 levels (down to 1/8), 12 convolutions: 1,127,716 parameters for
grey and 1,132,332 for colour (the paper's is wider: 160, 256, 256 with more layers per level).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import conv, pad_to_multiple
from bdn.models.registry import register_model


def haar_dwt(x: torch.Tensor) -> torch.Tensor:
    """One level of the orthonormal 2-D Haar transform: [N, C, H, W] (H, W even) -> [N, 4C, H/2, W/2].

    Channels are grouped by subband, [LL, LH, HL, HH] each C channels: for each 2x2 block (a b / c d),
    LL = (a + b + c + d) / 2, LH = (a - b + c - d) / 2 (a difference along the width), HL = (a + b - c - d) / 2
    (along the height), HH = (a - b - c + d) / 2. The 4x4 matrix is half a Hadamard matrix: orthonormal, so the
    energy is kept and the inverse is the same matrix (haar_iwt).
    """
    n, c, h, w = x.shape
    blocks = F.pixel_unshuffle(x, 2).view(n, c, 4, h // 2, w // 2)  # per channel: a, b, c, d (row-major in 2x2)
    a, b, c_, d = blocks.unbind(2)
    subbands = (a + b + c_ + d, a - b + c_ - d, a + b - c_ - d, a - b - c_ + d)
    return torch.cat(subbands, dim=1) * 0.5


def haar_iwt(y: torch.Tensor) -> torch.Tensor:
    """The inverse of haar_dwt: [N, 4C, h, w] (subbands grouped as haar_dwt makes them) -> [N, C, 2h, 2w]."""
    n, c4, h, w = y.shape
    ll, lh, hl, hh = y.view(n, 4, c4 // 4, h, w).unbind(1)
    blocks = torch.stack((ll + lh + hl + hh, ll - lh + hl - hh, ll + lh - hl - hh, ll - lh - hl + hh), dim=2)
    return F.pixel_shuffle(blocks.reshape(n, c4, h, w) * 0.5, 2)


def _block(in_channels: int, mid: int, out_channels: int, last_relu: bool) -> nn.Sequential:
    layers = [conv(in_channels, mid, 3, bias=True), nn.ReLU(), conv(mid, out_channels, 3, bias=True)]
    return nn.Sequential(*layers, nn.ReLU()) if last_relu else nn.Sequential(*layers)


class MWCNN(nn.Module):
    def __init__(self, channels: int = 1, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        if not widths:
            raise ValueError("MWCNN needs at least one level")
        self.channels, self.bias_free, self.widths = channels, False, tuple(widths)
        self.multiple = 2 ** len(widths)  # inputs are padded to it (and tiles aligned to it)
        above = (channels, *widths[:-1])  # the channels each level's DWT takes and its IWT gives back
        self.encoder = nn.ModuleList(_block(4 * c, w, w, last_relu=True) for c, w in zip(above, widths, strict=True))
        self.decoder = nn.ModuleList(
            _block(w, w, 4 * c, last_relu=False) for c, w in zip(above, widths, strict=True)
        )  # decoder[i] serves level i + 1, like encoder[i]; forward runs it from the bottom up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, self.multiple)
        kept = []
        h = padded
        for block in self.encoder:
            h = block(haar_dwt(h))
            kept.append(h)
        for level in reversed(range(len(self.decoder))):
            if level < len(self.decoder) - 1:  # the bottom level's input is its own encoder output, nothing to add
                h = h + kept[level]
            h = haar_iwt(self.decoder[level](h))
        return (padded + h)[..., :height, :width]


@register_model(
    "mwcnn",
    bias_free=False,
    # How far (in pixels) an input pixel can change the output, for the overlap of tiles: level i's four 3x3
    # convolutions reach 4 of its pixels (2^i wide), its DWT/IWT pair half a pixel more: (8 + 1) + (16 + 2) +
    # (32 + 4) over the 3 levels (tests measure it)
    reach=63,
    multiple=8,
    shipped=("colour",),
    summary="MWCNN (Liu et al. 2018): U-Net with Haar wavelet down and inverse up",
)
def builder(channels: int) -> nn.Module:
    """The registry's `mwcnn`: widths (32, 64, 128), 3 Haar levels, residual output."""
    return MWCNN(channels)
