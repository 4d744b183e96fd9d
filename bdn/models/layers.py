"""Building blocks of the feed-forward denoisers, each one scale-equivariant where a bias-free model needs it.

A bias-free network holds no additive constant, so in eval mode f(a y) = a f(y) for a > 0: convolutions without
bias, ReLU, and a batch norm that only divides by a stored standard deviation. Layers here that are not plainly
linear (the depthwise normalisation, the smooth ReLU, the block gates) are built so that this stays true.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Relative to the features' own scale: keeps divisions finite on an all-zero input without a fixed floor, which
# would break scale equivariance for tiny inputs.
_TINY = 1e-12


class BiasFreeBatchNorm2d(nn.Module):
    """Batch norm that only divides (Mohan et al. 2020): x / (std + eps) * weight, no mean removed or bias added.

    Training divides by the batch's standard deviation per channel and keeps a running variance; eval divides by
    sqrt(running_var) + eps (eps after the square root, as the official BF-CNN code does). `bias` and
    `running_mean` exist only so the official checkpoints load as they are; they are never used.
    """

    def __init__(self, channels: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum  # momentum None: a plain average over the batches seen
        self.seen = 0  # batches averaged while momentum is None (reset by whoever sets it to None)
        self.weight = nn.Parameter(torch.ones(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            var = x.float().var(dim=(0, 2, 3), unbiased=False)  # float32 statistics under bf16 autocast too
            with torch.no_grad():
                if self.momentum is None:
                    self.seen += 1
                    self.running_var.lerp_(var.detach(), 1.0 / self.seen)
                else:
                    self.running_var.lerp_(var.detach(), self.momentum)
            std = var.sqrt()
        else:
            std = self.running_var.sqrt()
        return x * (self.weight / (std + self.eps)).view(1, -1, 1, 1)


def norm_layer(channels: int, bias_free: bool) -> nn.Module:
    """The batch norm of a model: bias-free (divide only) or PyTorch's standard one for a biased twin."""
    return BiasFreeBatchNorm2d(channels) if bias_free else nn.BatchNorm2d(channels)


def conv(in_channels: int, out_channels: int, kernel: int, bias: bool, groups: int = 1) -> nn.Conv2d:
    """A 'same' convolution (zero padding: reflection would not change equivariance but costs memory traffic)."""
    return nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias, groups=groups)


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over the channels at each pixel: shape (N, 1, H, W). Per pixel, not per image, so the
    layers using it stay local (tiles give the whole image's result; the adaptive filters stay compact)."""
    return x.pow(2).mean(dim=1, keepdim=True).sqrt()


def _image_rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square per sample, over channels and pixels: shape (N, 1, 1, 1)."""
    return x.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()


class ScaleNorm(nn.Module):
    """The non-learnable normalisation after a depthwise convolution (the seed's addition, not channel-wise).

    It divides the features by their RMS over the channels at each pixel so that the following smooth ReLU sees a unit
    scale and can cut small responses (sparsity); it multiplies back by the RMS of the block's input, so the
    whole stays scale-equivariant: dw(a x) / rms(dw(a x)) * rms(a x) = a * (the same for x).
    """

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return x / (_rms(x) + _TINY) * _rms(reference)


class DiffReLU(nn.Module):
    """A differentiable ReLU that stays scale-equivariant: x * sigmoid(k x / s), s = the RMS of x over channels.

    The plain smooth ReLU x * sigmoid(k x) bends at a fixed scale, which a bias-free model cannot have; measuring
    the bend against the features' own scale makes f(a x) = a f(x). `threshold` shifts the bend up by that many
    RMS units, so responses under it are damped (the sparsifying use). k is learned when `learn=True`.
    """

    def __init__(self, sharpness: float = 4.0, threshold: float = 0.0, learn: bool = False) -> None:
        super().__init__()
        k = torch.tensor(float(sharpness))
        self.sharpness = nn.Parameter(k) if learn else k
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = _rms(x) + _TINY
        return x * torch.sigmoid(self.sharpness * (x - self.threshold * s) / s)


class BlockGate(nn.Module):
    """An on/off gate per residual block, decided from the block's input (scale-invariant, so equivariance holds).

    The input's mean absolute value per channel, divided by its RMS (invariant to the input's scale), goes through
    a linear layer to one logit. Training multiplies the block's output by sigmoid(logit); eval switches the block
    fully on or off (logit > 0), so an 'off' block costs nothing for that image. The logit's bias is harmless
    here: it acts on a scale-free summary, never on pixel values. The decision is per image, so a gated model
    is the one family whose tiles can differ from the whole image (each tile decides for itself).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.score = nn.Linear(channels, 1)
        nn.init.zeros_(self.score.weight)
        nn.init.constant_(self.score.bias, 2.0)  # start open: a fresh gated model is the plain resnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        summary = x.abs().mean(dim=(2, 3)) / (_image_rms(x).flatten(1) + _TINY)
        logit = self.score(summary).view(-1, 1, 1, 1)
        return torch.sigmoid(logit) if self.training else (logit > 0).to(x.dtype)


def activation(name: str) -> nn.Module:
    """'relu' or 'diffrelu' (both scale-equivariant)."""
    if name == "relu":
        return nn.ReLU(inplace=False)
    if name == "diffrelu":
        return DiffReLU()
    raise ValueError(f"unknown activation {name!r}")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad height and width up to a multiple (a linear map: equivariance holds); returns the padded
    tensor and the original (H, W). Sides shorter than the pad fall back to replicate padding."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)
