"""Feed-forward denoisers: one file a family, each registering its models (bdn/models/registry.py) so that
`load_model(name)` finds them and callers read their facts (bias-free, tile reach, size multiple, shipped weights)
from `get_model_spec(name)`.

A new model is one file whose builder carries `@register_model(...)`, plus its import below.
"""

from __future__ import annotations

# Imported for their registrations
from bdn.models import autoencoder, dncnn, mwcnn, pridnet, rednet, resnet, unet  # noqa: F401
from bdn.models.registry import MODELS, ModelSpec, build_model, get_model_spec, list_models


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


__all__ = ["MODELS", "ModelSpec", "build_model", "get_model_spec", "list_models", "load_model"]
