"""PRIDNet (Zhao, Lam, Lun 2019, "Pyramid Real Image Denoising Network"), scaled down to run on a CPU.

Three stages, as in the paper:
1. noise estimation: a few convolutions and a channel-attention module, so channels that carry noise evidence
   are weighted up per image (real noise varies in level and colour from camera to camera);
2. multi-scale denoising: the features are average-pooled at several scales (1, 2, 4, 8, 16), each pooled map
   goes through its own small U-Net and is upsampled back; coarse scales see wide context cheaply, fine ones
   keep detail; all of them are concatenated with the stage-1 features;
3. kernel-selecting fusion: branches with 3x3, 5x5 and 7x7 kernels whose outputs are weighted per channel by a
   softmax over branches computed from globally pooled features (selective-kernel style), so the network picks
   its receptive field per image.

The output is residual: a final convolution (`head`, zero at start so a fresh model is the identity) predicts the
noise and out = input - noise. The paper's network predicts the clean image directly; the residual form starts
training at the noisy input's PSNR instead of far below it. Weights start He-normal (`he_init`): with PyTorch's
default the features fade through the stages and the head has little to learn from. Channel attention and the
fusion's pooling are global over the image, so a tiled image can differ slightly from the whole one. Any input
size: the input is padded inside to a multiple of the coarsest pooling times the small U-Net's own factor 2, and
cropped back.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import conv, pad_to_multiple
from bdn.models.registry import register_model
from bdn.models.unet import conv_pair, he_init


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average per channel -> bottleneck -> sigmoid gate per channel."""

    def __init__(self, features: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(features // reduction, 4)
        self.squeeze = nn.Conv2d(features, hidden, 1)
        self.excite = nn.Conv2d(hidden, features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(F.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))))
        return x * gate


class SmallUNet(nn.Module):
    """One pyramid branch: a two-level U-Net (pair, pool, pair at twice the width, upsample, concat, pair).

    Its input side must be even (the pyramid pads for it)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.down = conv_pair(features, features)
        self.bottom = conv_pair(features, 2 * features)
        self.up = conv_pair(3 * features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = self.down(x)
        deep = self.bottom(F.max_pool2d(skip, 2))
        deep = F.interpolate(deep, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.up(torch.cat([skip, deep], dim=1))


class KernelSelectingFusion(nn.Module):
    """Selective-kernel fusion: branches of different kernel sizes, mixed by per-channel softmax weights.

    U = sum of the branches; s = global average of U; z = a small FC of s; one FC per branch gives logits, a
    softmax over branches gives each branch's weight per channel; out = sum_i weight_i * branch_i.
    """

    def __init__(self, in_channels: int, features: int, kernels: tuple[int, ...] = (3, 5, 7)) -> None:
        super().__init__()
        # 1x1 squeeze first: the branches then run on `features` channels, not the wide concatenation (CPU cost)
        self.squeeze = conv(in_channels, features, 1, True)
        self.branches = nn.ModuleList(conv(features, features, k, True) for k in kernels)
        hidden = max(features // 2, 8)
        self.reduce = nn.Linear(features, hidden)
        self.select = nn.Linear(hidden, features * len(kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.squeeze(x))
        outs = torch.stack([F.relu(branch(x)) for branch in self.branches], dim=1)  # N, B, C, H, W
        pooled = outs.sum(dim=1).mean(dim=(2, 3))  # N, C
        logits = self.select(F.relu(self.reduce(pooled))).view(x.shape[0], len(self.branches), -1)
        weights = torch.softmax(logits, dim=1)[..., None, None]  # N, B, C, 1, 1
        return (weights * outs).sum(dim=1)


class PRIDNet(nn.Module):
    """Channel attention -> pyramid of small U-Nets -> kernel-selecting fusion -> noise; out = x - noise."""

    def __init__(self, channels: int = 1, features: int = 16, scales: tuple[int, ...] = (1, 2, 4, 8, 16)) -> None:
        super().__init__()
        self.channels, self.bias_free = channels, False
        self.scales = tuple(scales)
        self.multiple = 2 * max(self.scales)  # pooled maps must still be even for the small U-Nets
        self.estimate = nn.Sequential(
            conv(channels, features, 3, True),
            nn.ReLU(),
            conv(features, features, 3, True),
            nn.ReLU(),
            conv(features, features, 3, True),
            nn.ReLU(),
        )
        self.attention = ChannelAttention(features)
        self.pyramid = nn.ModuleList(SmallUNet(features) for _ in self.scales)
        self.fusion = KernelSelectingFusion(features * (len(self.scales) + 1), features)
        self.head = conv(features, channels, 3, True)
        he_init(self)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, self.multiple)
        h = self.attention(self.estimate(padded))
        levels = [h]
        for scale, unet in zip(self.scales, self.pyramid, strict=True):
            pooled = F.avg_pool2d(h, scale) if scale > 1 else h
            out = unet(pooled)
            levels.append(
                out if scale == 1 else F.interpolate(out, size=h.shape[-2:], mode="bilinear", align_corners=False)
            )
        noise = self.head(self.fusion(torch.cat(levels, dim=1)))
        return (padded - noise)[..., :height, :width]


@register_model(
    "pridnet",
    bias_free=False,
    reach=128,  # its tiles get 128 pixels of context, on the grid of its coarsest pooling
    multiple=32,
    exact_tiles=False,  # channel attention and the fusion's weights pool over the whole tile
    shipped=("colour",),
    summary="PRIDNet (Zhao et al. 2019): channel attention, pyramid pooling, kernel fusion",
)
def pridnet(channels: int) -> PRIDNet:
    """The registry's PRIDNet: 16 features, pooling scales 1-16."""
    return PRIDNet(channels)
