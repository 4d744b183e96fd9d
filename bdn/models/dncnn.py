"""DnCNN (Zhang et al. 2017) and its bias-free form (Mohan et al. 2020): the network predicts the noise.

Layer names follow the official bias-free-denoising code (first_layer, hidden_layer_list.i, bn_layer_list.i,
last_layer), so its published weights load into this module as they are: that is how bdn checks its own
implementation against theirs (benchmarks/bf_models.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import BiasFreeBatchNorm2d, conv, norm_layer
from bdn.models.registry import register_model

REACH = 24  # 20 layers of 3x3 reach 20 pixels; the tile overlap keeps 4 to spare


class DnCNN(nn.Module):
    def __init__(self, channels: int = 1, depth: int = 20, features: int = 64, bias_free: bool = True) -> None:
        super().__init__()
        self.channels, self.bias_free = channels, bias_free
        bias = not bias_free
        self.first_layer = conv(channels, features, 3, bias)
        self.hidden_layer_list = nn.ModuleList(conv(features, features, 3, bias) for _ in range(depth - 2))
        self.bn_layer_list = nn.ModuleList(norm_layer(features, bias_free) for _ in range(depth - 2))
        self.last_layer = conv(features, channels, 3, bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DnCNN's own initialisation (Zhang et al. 2017, kept by the BF-CNN code): He-normal convolutions and batch
        norm gains of +-0.025. PyTorch's defaults (gains of 1) make a fresh 15-20 layer stack's output hundreds of
        times the noise; the first steps then silence the bias-free ReLUs for good and the net stays the identity
        (measured: the loss stuck at the noise's own for 100 steps, where this start learns from the first)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d | BiasFreeBatchNorm2d):
                with torch.no_grad():
                    module.weight.normal_(0.0, math.sqrt(2.0 / 9.0 / 64.0)).clamp_(-0.025, 0.025)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.first_layer(x))
        for hidden, bn in zip(self.hidden_layer_list, self.bn_layer_list, strict=True):
            h = F.relu(bn(hidden(h)))
        return x - self.last_layer(h)


@register_model("bf_dncnn", bias_free=True, reach=REACH, summary="bias-free DnCNN, 20 layers x 64 (Mohan et al.)")
def bf_dncnn(channels: int = 1) -> DnCNN:
    """The published BF-DnCNN shape: 20 layers of 64 channels, bias-free."""
    return DnCNN(channels, bias_free=True)


@register_model("dncnn", bias_free=False, reach=REACH, summary="DnCNN with biases, the bias-free one's twin")
def dncnn(channels: int = 1) -> DnCNN:
    """Its biased twin (the standard DnCNN with batch norm), for the generalisation test."""
    return DnCNN(channels, bias_free=False)


def official_state(tensors: dict[str, torch.Tensor], bias_free: bool) -> dict[str, torch.Tensor]:
    """The official checkpoint's tensors as this module's state_dict: a bias-free batch norm keeps only its
    weight and running variance (the official file also stores a mean and a bias that its code never uses)."""
    if not bias_free:  # PyTorch's BatchNorm2d also counts batches; the official file has no counter
        counters = {
            k.replace(".running_var", ".num_batches_tracked"): torch.tensor(0)
            for k in tensors
            if k.endswith(".running_var")
        }
        return {**counters, **tensors}
    unused = (".running_mean", ".bias")
    return {k: v for k, v in tensors.items() if not (k.startswith("bn_layer_list.") and k.endswith(unused))}
