"""The user-facing module around a trained denoiser: uint8 [N,H,W,C] in, uint8 out (the seed's example), or
float [N,C,H,W] in [0,1] in, float out. The raw network stays reachable as `.net` (explain and export use it)."""

from __future__ import annotations

import torch
from torch import nn


class ImageDenoiser(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            if images.ndim != 4:
                raise ValueError(f"uint8 input must be [N,H,W,C], got shape {tuple(images.shape)}")
            x = images.permute(0, 3, 1, 2).float() / 255.0
            out = self.net(x).clamp(0.0, 1.0)
            return (out * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        if images.ndim != 4:
            raise ValueError(f"float input must be [N,C,H,W], got shape {tuple(images.shape)}")
        return self.net(images).clamp(0.0, 1.0)
