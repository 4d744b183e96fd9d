"""Feed-forward denoisers: one file a family, and this registry so `load_model(name)` finds them.

A registry entry names a builder `channels -> nn.Module` and whether the model is bias-free (a property the tests
check: f(a y) = a f(y) in eval mode). Adding a model is one builder plus one line in `_entries()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from bdn.errors import BdnError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int], nn.Module]  # channels (1 or 3) -> a fresh, randomly initialised module
    bias_free: bool
    summary: str


def _resnet(channels: int, blocks: int, stem: int, kind: str, bias_free: bool, pyramid: tuple[str, int] | None):
    from bdn.models.pyramid import PyramidDenoiser
    from bdn.models.resnet import ResNetDenoiser

    base = ResNetDenoiser(channels, blocks=blocks, stem_kernel=stem, kind=kind, bias_free=bias_free)
    return base if pyramid is None else PyramidDenoiser(base, levels=pyramid[1], kind=pyramid[0])


def _dncnn(channels: int, bias_free: bool):
    from bdn.models.dncnn import DnCNN

    return DnCNN(channels, bias_free=bias_free)


def _family(module: str, builder: str, channels: int):
    """A model built by `builder(channels)` in bdn/models/<module>.py, imported on first use."""
    from importlib import import_module

    return getattr(import_module(f"bdn.models.{module}"), builder)(channels)


_ENCODER_DECODERS = {  # name: (module, builder, summary); none is bias-free
    "autoencoder": ("autoencoder", "builder", "convolutional autoencoder (seed 002's baseline), stride-4 bottleneck"),
    "rednet": ("rednet", "builder", "RED-Net-10 (Mao et al. 2016): conv/deconv x 64, symmetric skips every 2"),
    "mwcnn": ("mwcnn", "builder", "MWCNN (Liu et al. 2018): U-Net with Haar wavelet down and inverse up"),
    "pridnet": ("pridnet", "pridnet", "PRIDNet (Zhao et al. 2019): channel attention, pyramid pooling, kernel fusion"),
    "pixelshuffle_unet": ("unet", "pixelshuffle_unet", "seed 003's U-Net: to 1/32, pixel-shuffle up, sigmoid"),
    "unet": ("unet", "unet", "seed 004's U-Net: conv pairs, 4 poolings, transposed-conv up, residual output"),
    "vae": ("unet", "vae", "seed 004's convolutional VAE (spatial latent; the KL term in last_kl)"),
}

_RESNETS = {  # name: (blocks, stem kernel, kind)
    "resnet_5x5_bn_3x3": (5, 5, "plain"),
    "sparse_resnet_5x5_bn_3x3": (5, 5, "sparse"),
    "sparse_resnet_4x5_bn_3x3": (4, 5, "sparse"),
    "gated_resnet_5x5_bn_3x3": (5, 5, "gated"),
}
_PYRAMIDS = {"lp": "laplacian", "gp": "gaussian"}


def _entries() -> list[ModelSpec]:
    entries = [
        ModelSpec("bf_dncnn", partial(_dncnn, bias_free=True), True, "bias-free DnCNN, 20 layers x 64 (Mohan et al.)"),
        ModelSpec("dncnn", partial(_dncnn, bias_free=False), False, "DnCNN with biases, the bias-free one's twin"),
    ]
    for name, (blocks, stem, kind) in _RESNETS.items():
        what = f"{kind} resnet, {stem}x{stem} stem, {blocks} blocks of bias-free batch norm + 3x3"
        entries.append(
            ModelSpec(
                name, partial(_resnet, blocks=blocks, stem=stem, kind=kind, bias_free=True, pyramid=None), True, what
            )
        )
        entries.append(
            ModelSpec(
                f"{name}_biased",
                partial(_resnet, blocks=blocks, stem=stem, kind=kind, bias_free=False, pyramid=None),
                False,
                f"{name} with biases (its twin)",
            )
        )
        for short, pyramid in _PYRAMIDS.items():
            entries.append(
                ModelSpec(
                    f"{short}3_{name}",
                    partial(_resnet, blocks=blocks, stem=stem, kind=kind, bias_free=True, pyramid=(pyramid, 3)),
                    True,
                    f"{name} shared over a 3-level {pyramid} pyramid",
                )
            )
    for name, (module, builder, what) in _ENCODER_DECODERS.items():
        entries.append(ModelSpec(name, partial(_family, module, builder), False, what))
    return entries


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _entries()}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise BdnError(f"unknown model {name!r}; choose from {', '.join(MODELS)}") from None


def build_model(name: str, channels: int = 1) -> nn.Module:
    """A fresh (untrained) model of a registered architecture for grey (1) or colour (3) images."""
    if channels not in (1, 3):
        raise BdnError(f"channels must be 1 (grey) or 3 (colour), got {channels!r}")
    return get_model_spec(name).build(channels)


def load_model(name: str, channels: int = 1, *, weights=None, device="cpu"):
    """A trained denoiser ready to use (eval mode), wrapped to take uint8 [N,H,W,C] or float [N,C,H,W] tensors.

    `weights` is a .safetensors file written by bdn (`python -m bdn.train` or `save_weights`); left out, the
    weights shipped with bdn for `name` and `channels`.
    """
    from bdn.models.weights import load_weights, shipped_weights
    from bdn.models.wrap import ImageDenoiser

    path = shipped_weights(name, channels) if weights is None else weights
    net, _ = load_weights(path, expect_name=name, expect_channels=channels)
    return ImageDenoiser(net).to(device).eval()


__all__ = ["MODELS", "ModelSpec", "build_model", "get_model_spec", "load_model"]
