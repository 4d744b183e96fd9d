"""`--method auto`: a cheap blind look at the image picks the method bdn's own bench says is best for it.

The look (about a tenth of a second on a 512x512 image) measures four things: the share of impulse pixels, the
noise level, grey or colour, and whether the noise is spatially correlated as a real camera's is. A few rules, each
citing the measurement it comes from, turn them into one of the fast methods, and a BdnWarning says which one was
picked and why (`bdn denoise` prints it as a `note:` line).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bdn.errors import BdnWarning

# A pixel is an impulse when it is black or white in every channel and at least this far (in [0, 1]) from its 3x3
# median in some channel: clean photographs have next to none (skimage camera, astronaut, coffee, moon: <= 0.001 %),
# 0.2 % salt and pepper gives 0.14-0.2 %.
IMPULSE_JUMP = 0.25
# Impulse noise when at least this share of pixels are impulses AND the image with them replaced by their medians
# reads as nearly clean (below IMPULSE_REST_SIGMA): strong Gaussian or shot noise clipped to [0, 1] also leaves
# black and white outliers (camera at sigma 75: 6.5 %), but what remains once they are replaced still reads 40-65;
# after salt and pepper (0.2 % to 20 %) it reads 0.4-6.3 (skimage camera, astronaut and moon, measured for this
# module).
IMPULSE_SHARE = 0.001
IMPULSE_REST_SIGMA = 15.0
# Correlated (real camera) noise at or below this level goes to the colour network trained on real pairs; PolyU's
# and CC's levels read 3-5 (bdn/noise.py, CORRELATED_RATIO's comment).
REAL_NOISE_MAX = 20.0

# The picks, from bdn's own bench (benchmarks/records/):
# - impulse noise: adaptive_median reaches 31 dB where NLM and BM3D reach 17-21 (issue 19's measurement).
IMPULSE_METHOD = "adaptive_median"
# - real camera noise, colour: mwcnn, the best fast method on both real sets (CC 36.24 dB, PolyU held-out 38.35;
#   NLM 35.99 / 37.69; bench_models_cpu.md), 0.26 s a 512x512 image.
REAL_COLOUR_MODEL = "mwcnn"
# - white (synthetic) noise, grey: resnet_5x5_bn_3x3, above NLM at every level on Set12 and BSD68 (Set12 31.35 /
#   29.09 / 25.74 dB at sigma 15 / 25 / 50 against 31.15 / 28.65 / 24.98; BSD68 sigma 25 28.34 against 27.72;
#   bf_models_cpu.md, classical.md); BM3D is higher but an optional extra and 20-40x slower.
WHITE_GREY_MODEL = "resnet_5x5_bn_3x3"
# - everything else (white colour noise, grey correlated noise, strong correlated noise): NLM, the best classical
#   method on the real sets (classical.md) and above every colour network on synthetic colour noise (Photos sigma
#   25, given the true sigma: 30.43 dB; the best network, RED-Net fine-tuned on mixed noise, 28.72 blind;
#   models_colour_mixed_cpu.md).
FALLBACK = "nlm"


class Picked(BdnWarning):
    """auto's note of the method it picked; `.method` names it (bdn denoise lists that method's weights)."""

    def __init__(self, message: str, method: str) -> None:
        super().__init__(message)
        self.method = method


@dataclass(frozen=True)
class Look:
    """What auto measured of an image."""

    colour: bool  # three channels that are not all equal
    impulse_share: float  # share of pixels that are black/white outliers of their 3x3 neighbourhood
    rest_sigma: float  # noise level (0-255) of the image with those pixels replaced by their medians
    sigma: float  # white-noise estimate (bdn.estimate_sigma), 0-255
    level: float  # the level a blind denoiser should assume (bdn.estimate_noise_level), 0-255
    correlated: bool  # spatially correlated noise, as real cameras make it


def look(image: np.ndarray) -> Look:
    """Measure `image` (float, grey or RGB, in [0, 1], at least 16x16) for `pick`."""
    from scipy.ndimage import median_filter

    from bdn.noise import CORRELATED_RATIO, _grey_if_channels_equal, _half_resolution, _sigma_mad, estimate_sigma

    x = _grey_if_channels_equal(np.asarray(image, dtype=np.float32))
    colour = x.ndim == 3
    planes = x if colour else x[..., None]
    median = np.stack([median_filter(planes[..., c], size=3, mode="reflect") for c in range(planes.shape[2])], -1)
    extreme = (planes <= 0.0).all(-1) | (planes >= 1.0).all(-1)
    impulses = extreme & (np.abs(planes - median).max(-1) > IMPULSE_JUMP)
    share = float(impulses.mean())
    rest_sigma = float("nan")
    if share >= IMPULSE_SHARE:
        repaired = np.where(impulses[..., None], median, planes)
        rest_sigma = estimate_sigma(repaired if colour else repaired[..., 0])
    sigma = estimate_sigma(x)
    level, correlated = sigma, False
    if min(x.shape[:2]) >= 32:  # as bdn.noise.estimate_noise_level: twice the half-resolution wavelet estimate
        coarse = 2.0 * 255.0 * _sigma_mad(_half_resolution(x))
        if coarse > CORRELATED_RATIO * sigma:
            level, correlated = coarse, True
    return Look(colour, share, rest_sigma, sigma, level, correlated)


def _shipped(model: str, colour: str) -> bool:
    from bdn.tensorfile import shipped_files

    return f"{model}_{colour}" in shipped_files("model_")


def pick(seen: Look) -> tuple[str, str]:
    """(method, why) for what `look` measured."""
    if seen.impulse_share >= IMPULSE_SHARE and seen.rest_sigma < IMPULSE_REST_SIGMA:
        return IMPULSE_METHOD, f"impulse noise: {100 * seen.impulse_share:.1f} % black/white outlier pixels"
    kind = "colour" if seen.colour else "grey"
    if seen.correlated:
        noise = f"correlated noise as from a camera, level {seen.level:.1f}"
        if seen.colour and seen.level <= REAL_NOISE_MAX and _shipped(REAL_COLOUR_MODEL, "colour"):
            return REAL_COLOUR_MODEL, f"{kind}, {noise}"
        return FALLBACK, f"{kind}, {noise}"
    noise = f"white noise, sigma {seen.sigma:.1f}"
    if not seen.colour and _shipped(WHITE_GREY_MODEL, "grey"):
        return WHITE_GREY_MODEL, f"{kind}, {noise}"
    return FALLBACK, f"{kind}, {noise}"


def auto(image: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Denoise with the method `pick` chooses for this image; a BdnWarning names it ("auto: picked X (why)").

    `sigma` (0-255), when given, is passed to the picked method if it takes one (the trained models are blind);
    the look itself is always blind."""
    import inspect

    from bdn.methods import denoise, method_function

    seen = look(image)
    method, why = pick(seen)
    warnings.warn(Picked(f"auto: picked {method} ({why})", method), stacklevel=2)
    params = {}
    if sigma is not None and "sigma" in inspect.signature(method_function(method)).parameters:
        params["sigma"] = sigma
    if image.ndim == 3 and not seen.colour:  # three equal channels: denoised once, as grey
        return np.repeat(denoise(image[..., 0], method, **params)[..., None], 3, axis=2)
    return denoise(image, method, **params)
