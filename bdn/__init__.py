"""bdn: blind image denoising.

The Python API in one place: read and write images, add noise, measure, denoise.

    import bdn
    noisy, info = bdn.read_image("photo.jpg")
    clean = bdn.denoise(noisy, method="nlm")           # noise level estimated
    bdn.write_image("photo_denoised.jpg", clean, info)  # same bit depth and mode as the input
"""

from bdn.errors import BdnError
from bdn.io import read_image, write_image
from bdn.methods import METHODS, denoise
from bdn.metrics import psnr, psnr_ssim, ssim
from bdn.noise import add_noise, estimate_noise_level, estimate_sigma

__version__ = "0.1.0"

__all__ = [
    "BdnError",
    "METHODS",
    "add_noise",
    "denoise",
    "estimate_noise_level",
    "estimate_sigma",
    "psnr",
    "psnr_ssim",
    "read_image",
    "ssim",
    "write_image",
]
