"""A bias-free FFDNet-style denoiser: the DnCNN body run at half resolution on 2x2 pixel blocks.

FFDNet (Zhang, Zuo and Zhang 2018, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image Denoising")
rearranges the image into four half-resolution sub-images (pixel unshuffle), denoises them together with a plain
stack of 3x3 convolutions, batch norms and ReLUs, and shuffles the result back. Each 3x3 convolution at half
resolution then covers twice the reach of one at full resolution at a quarter of the FLOPs (a quarter of the
positions; the wider first and last layers see 4C channels): 15 layers of 64 reach 31 pixels for about a fifth of
BF-DnCNN's work per pixel. Here it is made bias-free as Mohan et al. 2020 ("Robust and Interpretable Blind Image
Denoising via Bias-Free Convolutional Neural Networks") do for DnCNN: no bias in any convolution, a batch norm that
only divides, so f(a y) = a f(y) in eval mode. Unlike FFDNet it takes no noise-level map: bdn's models are blind.

The half-resolution body is a `DnCNN` on 4C channels (predicting the noise of the unshuffled image and subtracting
it); the pixel shuffle is linear and undoes the unshuffle exactly, so the whole is y - shuffle(noise), and
`bdn.models.fast.fold_norms` folds the body's norms as it does DnCNN's. Odd sides are reflect-padded to even
inside and cropped back.
"""

from __future__ import annotations

import torch
from torch import nn

from bdn.models.dncnn import DnCNN
from bdn.models.layers import pad_to_multiple
from bdn.models.registry import register_model

SCALE = 2  # the side of a pixel block: the body runs at 1/SCALE resolution
DEPTH, FEATURES = 15, 64  # FFDNet's grey shape
# Receptive field: DEPTH 3x3 layers at half resolution reach DEPTH blocks either way, so an output pixel depends on
# input pixels up to 2 * DEPTH + 1 = 31 away (31 on one side of its 2x2 block, 30 on the other); the tile overlap
# keeps 5 to spare, on the grid of 2.
REACH = SCALE * DEPTH + 1 + 5


class FFDNet(nn.Module):
    """PixelUnshuffle(2) -> DnCNN body on 4C channels (first conv + ReLU, depth-2 x [conv, norm, ReLU], last conv,
    its output subtracted) -> PixelShuffle(2); bias-free unless `bias_free=False`."""

    def __init__(self, channels: int = 1, depth: int = DEPTH, features: int = FEATURES, bias_free: bool = True) -> None:
        super().__init__()
        self.channels, self.bias_free = channels, bias_free
        self.unshuffle, self.shuffle = nn.PixelUnshuffle(SCALE), nn.PixelShuffle(SCALE)
        self.body = DnCNN(SCALE * SCALE * channels, depth=depth, features=features, bias_free=bias_free)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, SCALE)
        out = self.shuffle(self.body(self.unshuffle(padded)))  # = padded - shuffle(predicted noise)
        return out[..., :height, :width]


@register_model(
    "bf_ffdnet",
    bias_free=True,
    reach=REACH,
    multiple=SCALE,
    summary="bias-free FFDNet, 15 layers x 64 at half resolution (2x2 pixel shuffle), no noise map",
)
def bf_ffdnet(channels: int = 1) -> FFDNet:
    """FFDNet's grey shape (15 layers of 64 channels), bias-free, for grey or colour images."""
    return FFDNet(channels, bias_free=True)


@register_model(
    "bf_ffdnet_biased",
    bias_free=False,
    reach=REACH,
    multiple=SCALE,
    summary="bf_ffdnet with biases (its twin)",
)
def bf_ffdnet_biased(channels: int = 1) -> FFDNet:
    """Its biased twin (biases and standard batch norms), for the generalisation test."""
    return FFDNet(channels, bias_free=False)
