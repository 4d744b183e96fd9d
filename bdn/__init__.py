"""bdn: blind image denoising.

The Python API in one place: read and write images, add noise, measure, denoise.

    import bdn
    noisy, info = bdn.read_image("photo.jpg")
    clean = bdn.denoise(noisy, method="nlm")           # noise level estimated
    bdn.write_image("photo_denoised.jpg", clean, info)  # same bit depth and mode as the input

    model = bdn.load_model("gp3_resnet_5x5_bn_3x3", channels=1)  # a trained network: uint8 [N,H,W,C] in and out
"""

from bdn.errors import BdnError, BdnWarning
from bdn.io import read_image, write_image
from bdn.methods import METHODS, denoise
from bdn.metrics import psnr, psnr_ssim, ssim
from bdn.noise import add_noise, estimate_noise_level, estimate_sigma

__version__ = "0.1.0"


def load_model(name: str, channels: int = 1, *, weights=None, device="cpu"):
    """A trained feed-forward denoiser, ready to use (see `bdn.models.load_model`); imports torch only when called.

    Parameters
    ----------
    name : str
        A registered model (``bdn.models.list_models()``; those with shipped weights:
        ``list_models(shipped=True)``, or `bdn methods`).
    channels : int, default 1
        1 for grey images, 3 for colour.
    weights : str or pathlib.Path, optional
        A .safetensors file written by bdn (`bdn train` or ``bdn.models.weights.save_weights``) for this model
        and channel count; left out, the weights shipped with bdn for `name` and `channels`.
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
    >>> import bdn
    >>> model = bdn.load_model("resnet_5x5_bn_3x3", channels=1)
    >>> noisy = torch.randint(0, 256, (1, 32, 32, 1), dtype=torch.uint8)  # [N, H, W, C]
    >>> with torch.no_grad():
    ...     clean = model(noisy)
    >>> clean.shape, clean.dtype
    (torch.Size([1, 32, 32, 1]), torch.uint8)
    """
    from bdn.models import load_model as _load_model

    return _load_model(name, channels, weights=weights, device=device)


__all__ = [
    "BdnError",
    "BdnWarning",
    "METHODS",
    "add_noise",
    "denoise",
    "estimate_noise_level",
    "estimate_sigma",
    "load_model",
    "psnr",
    "psnr_ssim",
    "read_image",
    "ssim",
    "write_image",
]
