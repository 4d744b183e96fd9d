"""bdn: blind image denoising.

The Python API in one place: read and write images, add noise, measure, denoise.

    import bdn
    noisy, info = bdn.read_image("photo.jpg")
    clean = bdn.denoise(noisy, method="nlm")           # noise level estimated
    bdn.write_image("photo_denoised.jpg", clean, info)  # same bit depth and mode as the input

    model = bdn.load_model("resnet_5x5_bn_3x3", channels=1)  # a trained network: uint8 [N,H,W,C] in and out
"""

from bdn.errors import BdnError, BdnWarning
from bdn.io import read_image, write_image
from bdn.methods import METHODS, denoise
from bdn.metrics import psnr, psnr_ssim, ssim
from bdn.noise import add_noise, estimate_noise_level, estimate_sigma

__version__ = "0.1.0"


def __getattr__(name: str):
    # bdn.load_model is bdn.models.load_model, imported (with torch) when first asked for: `import bdn` stays light.
    if name == "load_model":
        from bdn.models import load_model

        return load_model
    raise AttributeError(f"module 'bdn' has no attribute {name!r}")


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
