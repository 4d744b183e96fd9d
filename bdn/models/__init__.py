"""Feed-forward denoisers: one file a family, each registering its models (bdn/models/registry.py) so that
`load_model(name)` finds them and callers read their facts (bias-free, tile reach, size multiple, shipped weights)
from `get_model_spec(name)`.

A new model is one file whose builder carries `@register_model(...)`, plus its import below.
"""

from __future__ import annotations

# Imported for their registrations
from bdn.models import autoencoder, dncnn, ffdnet, mwcnn, pridnet, rednet, resnet, unet  # noqa: F401
from bdn.models.registry import MODELS, ModelSpec, build_model, get_model_spec, list_models


def load_model(name: str, channels: int = 1, *, weights=None, device="cpu"):
    """A trained denoiser ready to use (eval mode), wrapped to take uint8 [N,H,W,C] or float [N,C,H,W] tensors.

    `bdn.load_model` calls this one (without importing torch before it is called).

    Parameters
    ----------
    name : str
        A registered model (`list_models()`; those with shipped weights: ``list_models(shipped=True)``).
    channels : int, default 1
        1 for grey images, 3 for colour.
    weights : str or pathlib.Path, optional
        A .safetensors file written by bdn (`bdn train` or ``bdn.models.weights.save_weights``) for this model
        and channel count; left out, the weights shipped with bdn for `name` and `channels`
        (``checkpoints/model_<name>_<grey|colour>.safetensors``).
    device : str or torch.device, default 'cpu'
        Where the model is put.

    Returns
    -------
    bdn.models.wrap.ImageDenoiser
        A torch module in eval mode: uint8 [N, H, W, C] in, uint8 out, or float [N, C, H, W] in [0, 1] in,
        float out (clamped to [0, 1]). The raw network is its ``.net``.

    Raises
    ------
    BdnError
        For an unknown model; no shipped weights for `name` and `channels` (the message lists those that ship);
        and a weights file that is missing, not a bdn model file, holds another model or channel count, or whose
        tensors do not fit the model.

    Examples
    --------
    >>> import torch
    >>> from bdn.models import list_models, load_model
    >>> "resnet_5x5_bn_3x3" in list_models(shipped=True)
    True
    >>> model = load_model("resnet_5x5_bn_3x3", channels=3)
    >>> with torch.no_grad():
    ...     out = model(torch.rand(2, 3, 32, 32))  # float [N, C, H, W] in [0, 1]
    >>> out.shape, out.dtype, bool(out.min() >= 0 and out.max() <= 1)
    (torch.Size([2, 3, 32, 32]), torch.float32, True)
    >>> load_model("resnet_5x5_bn_3x3", channels=1, weights="missing.safetensors")
    Traceback (most recent call last):
    ...
    bdn.errors.BdnError: missing.safetensors: no such weights file
    """
    from bdn.models.weights import load_weights, shipped_weights
    from bdn.models.wrap import ImageDenoiser

    path = shipped_weights(name, channels) if weights is None else weights
    net, _ = load_weights(path, expect_name=name, expect_channels=channels)
    return ImageDenoiser(net).to(device).eval()


__all__ = ["MODELS", "ModelSpec", "build_model", "get_model_spec", "list_models", "load_model"]
