"""PSNR and SSIM, defined once for all of bdn.

Both images are brought to floats in [0, 1] by their dtype alone (`to_float01`), never by guessing from their
values; the output is then clipped to [0, 1] (not rounded to 8 bits) and scikit-image measures with
data_range=1.0 and its default options. Colour PSNR pools all channels; colour SSIM averages over channels.
"""

from __future__ import annotations

import numpy as np

from bdn.errors import BdnError

__all__ = ["psnr", "psnr_ssim", "ssim", "to_float01"]


def to_float01(image: np.ndarray) -> np.ndarray:
    """Return `image` as float64 with the range its dtype implies: uint8 / 255, uint16 / 65535, bool 0/1.

    Floats are returned unchanged (only widened to float64): they are taken to be in [0, 1] already. Other
    integer types have no agreed range, so they are refused rather than guessed at.
    """
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        return arr / 255.0
    if arr.dtype == np.uint16:
        return arr / 65535.0
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float64)
    raise BdnError(f"image dtype {arr.dtype} not supported: expected uint8, uint16, bool or float in [0, 1]")


def _pair(clean: np.ndarray, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 in [0, 1] (out clipped), after checking the shapes agree and are grey or RGB."""
    c, o = np.asarray(clean), np.asarray(out)
    if c.shape != o.shape:
        raise BdnError(f"metrics: clean image has shape {c.shape} but output has shape {o.shape}")
    if not (c.ndim == 2 or (c.ndim == 3 and c.shape[2] == 3)):
        raise BdnError(f"metrics: images must be grey (H, W) or colour (H, W, 3), got shape {c.shape}")
    return to_float01(c), np.clip(to_float01(o), 0.0, 1.0)


# scikit-image is imported inside the two functions below, not at the top: skimage.metrics loads scipy.stats (about
# 1 s), which `import bdn` should not pay (tests/test_light.py checks).
def _psnr(c: np.ndarray, o: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    # Identical images have zero error: skimage returns inf (with a divide warning, which we silence).
    with np.errstate(divide="ignore"):
        return float(peak_signal_noise_ratio(c, o, data_range=1.0))


def _ssim(c: np.ndarray, o: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    if min(c.shape[:2]) < 7:
        # skimage's default 7x7 window needs at least 7 pixels each way.
        raise BdnError(f"metrics: SSIM needs images of at least 7x7 pixels, got shape {c.shape}")
    return float(structural_similarity(c, o, data_range=1.0, channel_axis=-1 if c.ndim == 3 else None))


def psnr(clean: np.ndarray, out: np.ndarray) -> float:
    """PSNR in dB of `out` against `clean` (data_range 1.0, channels pooled); inf for identical images.

    Both images are brought to floats in [0, 1] by their dtype alone (`to_float01`), never by guessing from
    their values; `out` is then clipped to [0, 1] (not rounded to 8 bits) and scikit-image's
    ``peak_signal_noise_ratio`` measures with data_range 1.0.

    Parameters
    ----------
    clean : numpy.ndarray
        The reference: grey (H, W) or colour (H, W, 3); uint8 (/ 255), uint16 (/ 65535), bool (0/1) or float in
        [0, 1].
    out : numpy.ndarray
        The image measured, of the same shape and any of those dtypes.

    Returns
    -------
    float
        PSNR in dB, the squared error pooled over all channels; ``inf`` for identical images.

    Raises
    ------
    BdnError
        For shapes that differ or are not (H, W) or (H, W, 3), and dtypes other than those above.

    Examples
    --------
    >>> import numpy as np
    >>> import bdn
    >>> clean = np.full((8, 8), 0.5)
    >>> round(bdn.psnr(clean, clean + 0.1), 2)  # 10 log10(1 / 0.1^2)
    20.0
    >>> bdn.psnr(clean, np.full((8, 8), 128, np.uint8)) > 40  # 128 / 255 against 0.5
    True
    >>> bdn.psnr(clean, clean)
    inf
    """
    return _psnr(*_pair(clean, out))


def ssim(clean: np.ndarray, out: np.ndarray) -> float:
    """SSIM of `out` against `clean` (data_range 1.0, skimage defaults, colour averaged over channels).

    Both images are brought to floats in [0, 1] by their dtype alone (`to_float01`); `out` is then clipped to
    [0, 1] and scikit-image's ``structural_similarity`` measures with data_range 1.0 and its default options
    (a 7x7 uniform window).

    Parameters
    ----------
    clean : numpy.ndarray
        The reference: grey (H, W) or colour (H, W, 3), at least 7x7 pixels; uint8 (/ 255), uint16 (/ 65535),
        bool (0/1) or float in [0, 1].
    out : numpy.ndarray
        The image measured, of the same shape and any of those dtypes.

    Returns
    -------
    float
        SSIM, at most 1.0 (identical images); for colour, the mean over the three channels.

    Raises
    ------
    BdnError
        For shapes that differ, are not (H, W) or (H, W, 3) or are smaller than 7x7, and dtypes other than those
        above.

    Examples
    --------
    >>> import bdn
    >>> from skimage import data
    >>> clean = data.astronaut()[::8, ::8] / 255.0  # 64x64 colour
    >>> bdn.ssim(clean, clean)
    1.0
    >>> noisy = bdn.add_noise(clean, "gaussian", 25, seed=0)
    >>> bdn.ssim(clean, noisy) < bdn.ssim(clean, bdn.denoise(noisy, method="nlm"))
    True
    """
    return _ssim(*_pair(clean, out))


def psnr_ssim(clean: np.ndarray, out: np.ndarray) -> tuple[float, float]:
    """(PSNR, SSIM) of `out` against `clean`, converting and clipping once."""
    c, o = _pair(clean, out)
    return _psnr(c, o), _ssim(c, o)
