"""The convolutional autoencoder of seed 002: the baseline every encoder-decoder here should beat.

A plain bottleneck network, no skip connections (that is what makes it the baseline): a 3x3 stem, then one stage
per entry of `widths` after the first, each a stride-2 3x3 convolution (halving the size) and a 3x3 convolution;
the decoder mirrors it with stride-2 4x4 transposed convolutions (doubling the size; a kernel twice the stride,
so every output pixel gets the same number of taps and no checkerboard) each followed by a 3x3 convolution, and a
3x3 convolution back to the image's channels. ReLU after every layer but the last.

The output is linear (no sigmoid, no clamp): MSE on a linear output keeps its gradient at black and white pixels,
where a sigmoid saturates and can only approach 0 and 1, and everything that shows or scores an output
(`ImageDenoiser`, `bdn.denoise`, the bench) clips it to [0, 1] anyway.

Inputs of any size: reflect-padded inside to a multiple of the total stride (2^(len(widths) - 1)) and cropped back.
Default configuration, widths (32, 64, 128), stride 4: 487,585 parameters for grey, 488,739 for colour.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import conv, pad_to_multiple
from bdn.models.registry import register_model


class ConvAutoencoder(nn.Module):
    def __init__(self, channels: int = 1, widths: tuple[int, ...] = (32, 64, 128)) -> None:
        super().__init__()
        if not widths:
            raise ValueError("an autoencoder needs at least one width")
        self.channels, self.bias_free, self.widths = channels, False, tuple(widths)
        self.multiple = 2 ** (len(widths) - 1)  # the total stride: inputs are padded to it (and tiles aligned)
        self.stem = conv(channels, widths[0], 3, bias=True)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(wide_in, wide_out, 3, stride=2, padding=1),
                nn.ReLU(),
                conv(wide_out, wide_out, 3, bias=True),
                nn.ReLU(),
            )
            for wide_in, wide_out in zip(widths, widths[1:], strict=False)
        )
        self.up = nn.ModuleList(
            nn.Sequential(
                nn.ConvTranspose2d(wide_in, wide_out, 4, stride=2, padding=1),
                nn.ReLU(),
                conv(wide_out, wide_out, 3, bias=True),
                nn.ReLU(),
            )
            for wide_in, wide_out in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.head = conv(widths[0], channels, 3, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, self.multiple)
        h = F.relu(self.stem(padded))
        for stage in self.down:
            h = stage(h)
        for stage in self.up:
            h = stage(h)
        return self.head(h)[..., :height, :width]


# No weights ship: trained on PolyU-train it stays under the noisy input on CC (33.08 against 33.41 dB,
# benchmarks/records/bench_models_cpu.md); `bdn train` and `--weights` still serve it.
@register_model(
    "autoencoder",
    bias_free=False,
    # How far (in pixels) an input pixel can change the output, for the overlap of tiles: each 3x3 layer reaches
    # one of its own pixels, a 4x4 stride-2 transposed convolution one of its input's: 2 + 6 + 12 for the
    # default widths (tests measure it)
    reach=20,
    multiple=4,
    summary="convolutional autoencoder (seed 002's baseline), stride-4 bottleneck",
)
def builder(channels: int) -> nn.Module:
    """The registry's `autoencoder`: widths (32, 64, 128), total stride 4."""
    return ConvAutoencoder(channels)
