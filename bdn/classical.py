"""Classical denoisers: non-local means, median, adaptive median, adaptive (Lee) Wiener and BM3D.

Every function takes a float image in [0,1], grey (H, W) or RGB (H, W, 3), and returns float32 of the same shape
clipped to [0,1]; the input is never modified. `sigma` is the Gaussian noise std in 0-255 units; left out (None)
it is estimated with `bdn.noise.estimate_noise_level` (white or camera noise), so each method works
blind. Bad parameters raise BdnError.

Numbers quoted below were measured with bm3d 4.0.3, scikit-image 0.26, scipy 1.17 on a shared 2-core machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

from bdn.errors import BdnError

# --- non-local means -------------------------------------------------------------------------------------------
# Backend: scikit-image's denoise_nl_means (fast_mode=True, sigma given), not OpenCV's fastNlMeansDenoising*.
# Measured (sigma 25, 512x512, single run): grey camera() OpenCV 28.77 dB in 0.16 s, scikit-image 29.20 dB in
# 0.41 s; RGB astronaut() OpenCV Colored (Lab, h = hColor = sigma) 26.99 dB in 0.96 s, scikit-image 30.68 dB in
# 0.61 s. With each backend tuned, the mean PSNR over 6 Train400 crops (ids 7 53 121 188 266 342) at sigma
# 15/25/50 was OpenCV (8-bit; patch 3 or 5, h 0.85-1.1 sigma) 29.75/27.01/23.56 and scikit-image 29.58/27.17/24.07
# dB; the 16-bit OpenCV variant (NORM_L1) was no better (29.74/26.99/23.35), so 8-bit quantisation is not the issue.
# On colour (coffee and chelsea crops, scikit-image's samples) OpenCV's best h/hColor trailed by 2.5-2.7 dB at every
# sigma (29.22/26.74/23.83 against 31.75/29.43/26.46): scikit-image compares patches jointly over RGB and subtracts
# the expected noise distance 2 sigma^2. A little slower on grey, better on grey at sigma >= 25 and much better on
# colour: scikit-image is the default and only backend.
# Tuning (same 6 Train400 crops, noise seeds 0-5): patch 5 beat 3 and 7 at every sigma; search 13x13
# (patch_distance 6) matched or beat 21x21 at k = 0.6 and is faster; for h = k sigma, k in {0.4 .. 1.0}, the best
# k was 0.7 at sigma 15 (29.63 dB; 0.6 gives 29.58), 0.6 at 25 (27.17) and 0.6 at 50 (24.07). The colour crops
# preferred 0.5-0.6 (0.6 within 0.12 dB of the best). So k = 0.6 everywhere.
NLM_H_FACTOR = 0.6
NLM_PATCH_SIZE = 5
NLM_SEARCH_SIZE = 13

# --- median ----------------------------------------------------------------------------------------------------
# Window from sigma: on the Train400 crops a 3x3 median beat 5x5 up to sigma 25 (24.75 vs 24.16 dB at 25) and lost
# from about 30 on (23.00 vs 23.39 at 35); 7x7 gains only 0.1 dB over 5x5 at sigma 50. So 3 below 30, else 5.
MEDIAN_SIGMA_SWITCH = 30.0
# scipy.ndimage.median_filter on floats keeps full precision; cv2.medianBlur would quantise to 8 bits. At 512x512
# scipy took 47/131/216 ms (grey, window 3/5/7) and 144/366/665 ms (RGB): fast enough, so no 8-bit round trip.

# --- BM3D ------------------------------------------------------------------------------------------------------
# Profiles of the bm3d package we accept, with the largest block size each uses. 'refilter' is left out because
# bm3d 4.0.3 fails on it with a scalar sigma (a PSD shape mismatch), 'deb' because it is tuned for deblurring.
# The compiled core segfaults on an image exactly one block square (8x8 for 'np') and raises on smaller ones, so
# we ask for at least block size + 1 pixels a side.
BM3D_BLOCK_SIZE = {"np": 8, "high": 8, "vn": 11, "vn_old": 12}
# Below this sigma (0-255 units, 1/100 of a grey level) BM3D has nothing to remove; return the input.
BM3D_MIN_SIGMA = 0.01

# Cost, one 512x512 image, sigma 25, shared 2-core machine (single runs, so rough): grey / RGB nlm 0.53 / 0.83 s,
# median 0.12 / 0.17 s, adaptive_median 0.73 / 2.06 s, adaptive_wiener 0.03 / 0.09 s, bm3d 25 / 65 s (single
# threaded; the bm3d binary also costs about 1 s grey / 3 s RGB per call however small the image).

# Smallest image side (pixels) each method needs with its default parameters, for the registry to refuse smaller
# images up front. Blind use (sigma None) also needs what bdn.noise.estimate_sigma needs (16x16).
MIN_SIZE: dict[str, int] = {
    "nlm": NLM_PATCH_SIZE,
    "median": 5,  # the largest window the sigma rule picks
    "adaptive_median": 7,  # the default max_size
    "adaptive_wiener": 5,  # the default window
    "bm3d": BM3D_BLOCK_SIZE["np"] + 1,
}


# --- shared checks ---------------------------------------------------------------------------------------------
def _as_image(image: np.ndarray, method: str) -> np.ndarray:
    """Return the image as a float32 array (a copy when converted), or raise BdnError for what no filter takes."""
    if not isinstance(image, np.ndarray) or image.dtype.kind != "f":
        kind = type(image).__name__ if not isinstance(image, np.ndarray) else f"{image.dtype} array"
        raise BdnError(f"{method}: image must be a float array in [0,1], got {kind}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise BdnError(f"{method}: image must be grey (H, W) or RGB (H, W, 3), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise BdnError(f"{method}: image holds NaN or infinite values")
    return image.astype(np.float32, copy=False)


def _check_side(image: np.ndarray, method: str, min_side: int, why: str) -> None:
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        raise BdnError(
            f"{method}: image is {width}x{height}, too small ({why} needs at least {min_side} pixels a side)"
        )


def _check_sigma(sigma: object, method: str) -> float | None:
    """Validate a given sigma (0-255 units); None stays None."""
    if sigma is None:
        return None
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
        raise BdnError(f"{method}: sigma must be a number >= 0 (0-255 scale), got {sigma!r}")
    value = float(sigma)
    if not math.isfinite(value) or value < 0:
        raise BdnError(f"{method}: sigma must be a finite number >= 0 (0-255 scale), got {value:g}")
    return value


def _resolve_sigma(image: np.ndarray, sigma: object, method: str) -> float:
    """The given sigma, validated, or a blind estimate from the image."""
    value = _check_sigma(sigma, method)
    if value is not None:
        return value
    # Imported here so that this module does not depend on bdn.noise unless a sigma has to be estimated.
    from bdn.noise import estimate_noise_level

    return float(estimate_noise_level(image))


def _check_window(value: object, name: str, method: str) -> int:
    """An odd integer window side >= 3."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 3 or value % 2 == 0:
        raise BdnError(f"{method}: {name} must be an odd integer >= 3, got {value!r}")
    return int(value)


def _check_h(h: object) -> float:
    """nlm's filter strength: a finite number > 0 (0-255 units)."""
    if isinstance(h, bool) or not isinstance(h, (int, float, np.integer, np.floating)) or not 0 < h < math.inf:
        raise BdnError(f"nlm: h must be a number > 0 (0-255 scale), got {h!r}")
    return float(h)


def _check_profile(profile: object) -> str:
    if not isinstance(profile, str) or profile not in BM3D_BLOCK_SIZE:
        raise BdnError(f"bm3d: unknown profile {profile!r}; choose one of {', '.join(BM3D_BLOCK_SIZE)}")
    return profile


def check_params(method: str, params: dict) -> None:
    """The checks a classical method makes of its parameters, made without an image (bdn denoise makes them once,
    before any image is read); BdnError naming the parameter."""
    _check_sigma(params.get("sigma"), method)
    windows = {
        "nlm": ("patch_size", "search_size"),
        "median": ("size",),
        "adaptive_median": ("max_size",),
        "adaptive_wiener": ("size",),
    }
    for name in windows.get(method, ()):
        if params.get(name) is not None:
            _check_window(params[name], name, method)
    if method == "nlm" and params.get("h") is not None:
        _check_h(params["h"])
    if method == "bm3d":
        _check_profile(params.get("profile", "np"))


def _window(image: np.ndarray, size: int) -> tuple[int, ...]:
    """A size x size window over rows and columns only, so colour channels are filtered separately."""
    return (size, size) if image.ndim == 2 else (size, size, 1)


def _finish(out: np.ndarray) -> np.ndarray:
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


# --- the denoisers ---------------------------------------------------------------------------------------------
def nlm(
    image: np.ndarray,
    sigma: float | None = None,
    *,
    h: float | None = None,
    patch_size: int | None = None,
    search_size: int | None = None,
) -> np.ndarray:
    """Non-local means (scikit-image, fast mode): each pixel becomes a weighted mean of pixels with similar patches.

    h: filter strength in 0-255 units (default NLM_H_FACTOR * sigma); patch_size: odd patch side (default 5);
    search_size: odd side of the search window around each pixel (default 13). Colour patches are compared over
    all three channels at once. sigma is needed even when h is given (estimated when None): scikit-image
    subtracts the expected noise distance 2 sigma^2 from patch distances.
    """
    from skimage.restoration import denoise_nl_means

    img = _as_image(image, "nlm")
    patch = NLM_PATCH_SIZE if patch_size is None else _check_window(patch_size, "patch_size", "nlm")
    search = NLM_SEARCH_SIZE if search_size is None else _check_window(search_size, "search_size", "nlm")
    _check_side(img, "nlm", patch, f"patch_size {patch}")
    s = _resolve_sigma(img, sigma, "nlm")
    strength = NLM_H_FACTOR * s if h is None else _check_h(h)
    if strength <= 0:  # sigma 0 and no h: nothing to smooth (and h = 0 would divide by zero)
        return _finish(img.copy())
    out = denoise_nl_means(
        img,
        patch_size=patch,
        patch_distance=search // 2,
        h=strength / 255.0,
        sigma=s / 255.0,
        fast_mode=True,
        channel_axis=-1 if img.ndim == 3 else None,
    )
    return _finish(out)


def median(image: np.ndarray, sigma: float | None = None, *, size: int | None = None) -> np.ndarray:
    """Median filter over a size x size window, per channel, in float precision.

    size defaults from sigma: 3 below sigma 30, 5 from 30 up (see MEDIAN_SIGMA_SWITCH). With size given, sigma is
    only validated, never estimated.
    """
    img = _as_image(image, "median")
    if size is None:
        s = _resolve_sigma(img, sigma, "median")
        window = 3 if s < MEDIAN_SIGMA_SWITCH else 5
    else:
        _check_sigma(sigma, "median")
        window = _check_window(size, "size", "median")
    _check_side(img, "median", window, f"window {window}")
    return _finish(ndi.median_filter(img, size=_window(img, window), mode="reflect"))


def adaptive_median(image: np.ndarray, sigma: float | None = None, *, max_size: int = 7) -> np.ndarray:
    """Adaptive median filter (Hwang & Haddad 1995) for impulse (salt and pepper) noise, per channel.

    For windows 3, 5, ..., max_size: where the window median is not an extreme (zmin < zmed < zmax), keep the pixel
    if it is not an extreme either, else replace it by zmed; otherwise try the next window. Pixels undecided at
    max_size get that window's median. Only impulses are replaced, so edges and texture survive. sigma is accepted
    for a uniform interface and ignored (validated only): the filter has no noise-level parameter.
    """
    img = _as_image(image, "adaptive_median")
    _check_sigma(sigma, "adaptive_median")
    largest = _check_window(max_size, "max_size", "adaptive_median")
    _check_side(img, "adaptive_median", largest, f"max_size {largest}")
    out = img.copy()
    undecided = np.ones(img.shape, dtype=bool)
    for size in range(3, largest + 1, 2):
        window = _window(img, size)
        zmin = ndi.minimum_filter(img, size=window, mode="reflect")
        zmax = ndi.maximum_filter(img, size=window, mode="reflect")
        zmed = ndi.median_filter(img, size=window, mode="reflect")
        # Level A: the median is not an impulse, so this window can judge the pixel (level B).
        decide = undecided & (zmin < zmed) & (zmed < zmax)
        level_b = np.where((zmin < img) & (img < zmax), img, zmed)
        out[decide] = level_b[decide]
        undecided &= ~decide
    out[undecided] = zmed[undecided]  # still undecided at max_size: that window's median
    return _finish(out)


def adaptive_wiener(image: np.ndarray, sigma: float | None = None, *, size: int = 5) -> np.ndarray:
    """Locally adaptive Wiener (Lee) filter, per channel.

    With local mean m and variance v over a size x size window and noise variance n = (sigma/255)^2:
    out = m + max(v - n, 0) / max(v, n) * (x - m). Flat areas (v <= n) become their local mean; detail (v >> n)
    is kept. Unlike scipy.signal.wiener, which without a noise argument takes n as the mean of the local variances
    (signal included, so it over-estimates the noise and over-smooths, worst at low noise), n here is the given or
    estimated sigma. Window 5 on 6 Train400 crops and camera(): ours beat scipy.signal.wiener(y, 5) by 5-12 dB at
    sigma 5, 0.6-4.1 dB at 15, -0.1 to +1.7 dB at 25, and was level (within 0.4 dB either way) at 50.
    """
    img = _as_image(image, "adaptive_wiener")
    window = _check_window(size, "size", "adaptive_wiener")
    _check_side(img, "adaptive_wiener", window, f"window {window}")
    noise_var = (_resolve_sigma(img, sigma, "adaptive_wiener") / 255.0) ** 2
    # float64: E[x^2] - E[x]^2 loses most of its digits in float32 where the local variance is small.
    x = img.astype(np.float64)
    win = _window(img, window)
    mean = ndi.uniform_filter(x, size=win, mode="reflect")
    var = np.maximum(ndi.uniform_filter(x * x, size=win, mode="reflect") - mean * mean, 0.0)
    denominator = np.maximum(var, noise_var)
    # denominator 0 only where the window is constant and sigma is 0: x equals the mean there, any gain will do.
    gain = np.divide(np.maximum(var - noise_var, 0.0), denominator, out=np.ones_like(var), where=denominator > 0)
    return _finish(mean + gain * (x - mean))


def bm3d(image: np.ndarray, sigma: float | None = None, *, profile: str = "np") -> np.ndarray:
    """BM3D (Dabov et al. 2007) through the `bm3d` package: both stages (hard thresholding, then Wiener).

    Grey uses bm3d.bm3d, colour bm3d.bm3d_rgb (CBM3D in the opponent colour space). profile: 'np' (default, the
    package's normal profile), 'high', 'vn' or 'vn_old'. A sigma below BM3D_MIN_SIGMA returns the input (clipped).
    """
    img = _as_image(image, "bm3d")
    _check_profile(profile)
    _check_side(img, "bm3d", BM3D_BLOCK_SIZE[profile] + 1, f"profile {profile!r}")
    s = _resolve_sigma(img, sigma, "bm3d")
    if s < BM3D_MIN_SIGMA:
        return _finish(img.copy())
    try:
        import bm3d as bm3d_lib  # here, not at the top: importing it takes about 2 s
    except ImportError:
        from bdn.methods import EXTRAS

        raise BdnError(EXTRAS["bm3d"][1]) from None

    # ALL_STAGES (the package default) reproduces the published numbers: Set12 01 / 02 (cameraman, house) at
    # sigma 25, noise seed 0 not clipped, gave 29.42 / 32.86 dB against the 29.45 / 32.85 quoted for BM3D (DnCNN
    # paper, Table 3); hard thresholding alone gave 28.89 / 32.33.
    if img.ndim == 2:
        out = bm3d_lib.bm3d(img, sigma_psd=s / 255.0, profile=profile, stage_arg=bm3d_lib.BM3DStages.ALL_STAGES)
    else:
        out = bm3d_lib.bm3d_rgb(img, sigma_psd=s / 255.0, profile=profile)
    return _finish(np.asarray(out).reshape(img.shape))


CLASSICAL_METHODS: dict[str, Callable[..., np.ndarray]] = {
    "nlm": nlm,
    "median": median,
    "adaptive_median": adaptive_median,
    "adaptive_wiener": adaptive_wiener,
    "bm3d": bm3d,
}
