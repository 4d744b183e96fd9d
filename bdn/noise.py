"""Synthetic noise models and blind noise-level estimation.

Images are float arrays in [0, 1], grey (H, W) or colour (H, W, 3). Every model takes one strength
parameter (see `NOISE_MODELS` and `add_noise`); Gaussian-like strengths are on the 0-255 scale, as
papers quote them. Noise is drawn from a numpy Generator (`seed` or `rng`), never from global state, so a
seed fixes the result.

Salt and pepper hits whole pixel positions: a hit pixel becomes black (0 in every channel) or white (1 in
every channel). scikit-image's `random_noise(mode='s&p')` instead hits each array element on its own, which
on colour images makes coloured impulses; we follow the definition "fraction of pixels set to 0 or 1" and the
classic dead-pixel picture. On grey images the two agree.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bdn.errors import BdnError

__all__ = ["NOISE_MODELS", "NoiseModel", "add_noise", "estimate_sigma", "jpeg_roundtrip", "parse_noise"]

NoiseFunction = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class NoiseModel:
    """One noise model: its name, its strength parameter and the valid range of that strength.

    `function(x, strength, rng)` takes a float64 image in [0, 1] and returns the noisy float64 image,
    unclipped.
    The strength must lie in [minimum, maximum], or in (minimum, maximum] when `minimum_exclusive`.
    """

    name: str
    parameter: str
    default: float
    description: str
    function: NoiseFunction
    minimum: float = 0.0
    maximum: float = math.inf
    minimum_exclusive: bool = False

    def range_text(self) -> str:
        """The valid strength range in interval notation, for error messages."""
        left = "(" if self.minimum_exclusive else "["
        right = ")" if math.isinf(self.maximum) else "]"
        high = "inf" if math.isinf(self.maximum) else f"{self.maximum:g}"
        return f"{left}{self.minimum:g}, {high}{right}"


def _gaussian(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(0.0, sigma / 255.0, size=x.shape)


def _multiplicative(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x * (1.0 + rng.normal(0.0, sigma / 255.0, size=x.shape))


def _poisson(x: np.ndarray, peak: float, rng: np.random.Generator) -> np.ndarray:
    # Shot noise counts photons: a negative intensity has no meaning, so it is treated as no light at all.
    return rng.poisson(np.clip(x, 0.0, None) * peak).astype(np.float64) / peak


def _speckle(x: np.ndarray, variance: float, rng: np.random.Generator) -> np.ndarray:
    return x + x * rng.normal(0.0, math.sqrt(variance), size=x.shape)


def _salt_pepper(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    # One draw per pixel position (not per channel), so a hit pixel turns fully black or fully white.
    hit = rng.random(x.shape[:2]) < amount
    salt = rng.random(x.shape[:2]) < 0.5
    y = x.copy()
    y[hit & salt] = 1.0
    y[hit & ~salt] = 0.0
    return y


def _uniform(x: np.ndarray, half_width: float, rng: np.random.Generator) -> np.ndarray:
    w = half_width / 255.0
    return x + rng.uniform(-w, w, size=x.shape)


def _signal_dependent_std(x: np.ndarray, sigma: float) -> np.ndarray:
    """The std of a sensor's noise at intensity x: half shot noise (variance grows with x), half read noise
    (constant), scaled so that it is sigma/255 at mid-grey: var(x) = (sigma/255)^2 (x + 0.5)."""
    return (sigma / 255.0) * np.sqrt(np.clip(x, 0.0, None) + 0.5)


def _poisson_gaussian(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return x + _signal_dependent_std(x, sigma) * rng.standard_normal(x.shape)


# Bilinear demosaicing as two convolutions: red and blue are known on one pixel in four, green on one in two.
_DEMOSAIC_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 4.0
_DEMOSAIC_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float64) / 4.0
# A typical camera-to-sRGB colour correction matrix (rows sum to 1, so grey stays grey): it mixes each channel's
# noise into the others, which is where real photographs' cross-channel correlation comes from.
_COLOUR_CORRECTION = np.array([[1.6, -0.45, -0.15], [-0.25, 1.5, -0.25], [-0.05, -0.5, 1.55]])


def _bayer_masks(height: int, width: int) -> np.ndarray:
    """(H, W, 3) 0/1 masks of an RGGB colour filter array: which channel each sensor pixel records."""
    masks = np.zeros((height, width, 3))
    masks[0::2, 0::2, 0] = 1
    masks[0::2, 1::2, 1] = 1
    masks[1::2, 0::2, 1] = 1
    masks[1::2, 1::2, 2] = 1
    return masks


def _camera(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    # A camera's noise is drawn once per sensor pixel (each behind one colour filter) and then spread over
    # neighbours by demosaicing and over channels by the colour correction: correlated, as in real photographs.
    import cv2

    if x.ndim == 2:  # a grey sensor has no filter array; the interpolation still correlates neighbours
        sensor = _signal_dependent_std(x, sigma) * rng.standard_normal(x.shape)
        return x + cv2.filter2D(sensor, -1, _DEMOSAIC_G, borderType=cv2.BORDER_REFLECT)
    masks = _bayer_masks(*x.shape[:2])
    recorded = (x * masks).sum(axis=2)
    sensor = _signal_dependent_std(recorded, sigma) * rng.standard_normal(recorded.shape)
    noise = np.stack(
        [
            cv2.filter2D(
                sensor * masks[..., c], -1, _DEMOSAIC_G if c == 1 else _DEMOSAIC_RB, borderType=cv2.BORDER_REFLECT
            )
            for c in range(3)
        ],
        axis=2,
    )
    return x + noise @ _COLOUR_CORRECTION.T


NOISE_MODELS: dict[str, NoiseModel] = {
    m.name: m
    for m in (
        NoiseModel("gaussian", "sigma", 25.0, "additive Gaussian: y = x + n, n ~ N(0, (sigma/255)^2)", _gaussian),
        NoiseModel(
            "multiplicative",
            "sigma",
            25.0,
            "multiplicative Gaussian: y = x (1 + n), n ~ N(0, (sigma/255)^2)",
            _multiplicative,
        ),
        NoiseModel(
            "poisson",
            "peak",
            30.0,
            "Poisson (shot): y = Poisson(x * peak) / peak; smaller peak, more noise",
            _poisson,
            minimum_exclusive=True,
        ),
        NoiseModel("speckle", "variance", 0.01, "speckle: y = x + x n, n ~ N(0, variance)", _speckle),
        NoiseModel(
            "salt_pepper",
            "amount",
            0.05,
            "salt and pepper: a fraction `amount` of pixels set to 0 or 1, half each",
            _salt_pepper,
            maximum=1.0,
        ),
        NoiseModel("uniform", "half_width", 25.0, "uniform: y = x + n, n ~ U(-w/255, w/255)", _uniform),
        NoiseModel(
            "poisson_gaussian",
            "sigma",
            25.0,
            "shot and read noise: y = x + s(x) n, s(x)^2 = (sigma/255)^2 (x + 0.5); sigma at mid-grey",
            _poisson_gaussian,
        ),
        NoiseModel(
            "camera",
            "sigma",
            25.0,
            "a sensor's shot and read noise (sigma at mid-grey) on an RGGB mosaic, bilinearly demosaiced and "
            "colour-corrected: correlated between neighbours and channels",
            _camera,
        ),
    )
}


def _model(name: str) -> NoiseModel:
    """Look up a model by name (any case, '-' for '_'), or raise BdnError naming the choices."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in NOISE_MODELS:
        raise BdnError(f"noise model: unknown {name!r}; choose one of {', '.join(NOISE_MODELS)}")
    return NOISE_MODELS[key]


def _check_strength(model: NoiseModel, strength: object) -> float:
    """Return the strength as a float, or raise BdnError saying which range it must lie in."""
    where = f"{model.name} noise {model.parameter}"
    if isinstance(strength, (bool, np.bool_)) or not isinstance(strength, numbers.Real):
        raise BdnError(f"{where}: expected a number in {model.range_text()}, got {strength!r}")
    value = float(strength)
    too_low = value <= model.minimum if model.minimum_exclusive else value < model.minimum
    if not math.isfinite(value) or too_low or value > model.maximum:
        raise BdnError(f"{where}: must be in {model.range_text()}, got {value:g}")
    return value


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    """Return the image as float64, or raise BdnError when it is not a float grey or RGB array."""
    arr = np.asarray(image)
    if not np.issubdtype(arr.dtype, np.floating):
        # Integer images would need a guess about their range; converting is the caller's job (to_float01).
        raise BdnError(f"{what}: image must be float in [0, 1], got dtype {arr.dtype} (convert with to_float01)")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise BdnError(f"{what}: image must be grey (H, W) or colour (H, W, 3), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise BdnError(f"{what}: image contains NaN or infinite values")
    return arr.astype(np.float64)


def add_noise(
    image: np.ndarray,
    model: str = "gaussian",
    strength: float | None = None,
    *,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    clip: bool = False,
) -> np.ndarray:
    """Return `image` with synthetic noise of `model` at `strength` (None: the model's default), as float32.

    Not clipped by default, following the benchmark convention (noise added, values may leave [0, 1]). Noise is
    drawn from a numpy Generator, never from global state. The input is never modified.

    Parameters
    ----------
    image : numpy.ndarray
        Float, grey (H, W) or colour (H, W, 3), values in [0, 1], finite. Integer images are refused (convert
        them with `bdn.metrics.to_float01`).
    model : str, default 'gaussian'
        A key of `NOISE_MODELS` (any case, '-' for '_'), with its strength parameter, default and valid range:

        - 'gaussian': sigma (0-255 units), default 25, [0, inf); y = x + n, n ~ N(0, (sigma/255)^2).
        - 'multiplicative': sigma (0-255 units), default 25, [0, inf); y = x (1 + n), n ~ N(0, (sigma/255)^2).
        - 'poisson': peak, default 30, (0, inf); y = Poisson(x * peak) / peak (negative values count as 0);
          smaller peak, more noise.
        - 'speckle': variance, default 0.01, [0, inf); y = x + x n, n ~ N(0, variance).
        - 'salt_pepper': amount, default 0.05, [0, 1]; that fraction of pixel positions set to 0 or 1, half
          each, in every channel at once (a hit pixel turns fully black or fully white).
        - 'uniform': half_width w (0-255 units), default 25, [0, inf); y = x + n, n ~ U(-w/255, w/255).
        - 'poisson_gaussian': sigma (0-255 units), default 25, [0, inf); shot plus read noise,
          y = x + s(x) n with s(x)^2 = (sigma/255)^2 (x + 0.5): sigma at mid-grey, more in the highlights.
        - 'camera': sigma (0-255 units), default 25, [0, inf); 'poisson_gaussian' drawn once per pixel of an
          RGGB sensor, bilinearly demosaiced and colour-corrected, so the noise is correlated between
          neighbours and channels (a grey image: between neighbours) as in a camera's photographs.
    strength : float, optional
        The model's strength parameter; None: the model's default.
    seed : int, optional
        Seed of a fresh ``numpy.random.default_rng`` for reproducible noise.
    rng : numpy.random.Generator, optional
        A generator to draw from (it advances). Give `seed` or `rng`, not both; neither draws fresh entropy.
    clip : bool, default False
        Clip the result to [0, 1].

    Returns
    -------
    numpy.ndarray
        The noisy image, float32, the shape of `image`.

    Raises
    ------
    BdnError
        For an unknown model, a strength that is not a number or lies outside the model's range, both `seed` and
        `rng` given, and an image that is not float, not (H, W) or (H, W, 3), or holds NaN or infinite values.

    Examples
    --------
    >>> import numpy as np
    >>> import bdn
    >>> clean = np.full((64, 64, 3), 0.5)
    >>> noisy = bdn.add_noise(clean, "gaussian", 25, seed=0)
    >>> noisy.dtype, round(float(np.std(noisy - clean) * 255))
    (dtype('float32'), 25)
    >>> np.array_equal(noisy, bdn.add_noise(clean, "gaussian", 25, seed=0))  # a seed fixes the noise
    True
    >>> hit = bdn.add_noise(clean, "salt_pepper", 0.1, seed=0, clip=True)
    >>> sorted(np.unique(hit).tolist())
    [0.0, 0.5, 1.0]
    >>> bdn.add_noise(clean, "poisson", 0)
    Traceback (most recent call last):
    ...
    bdn.errors.BdnError: poisson noise peak: must be in (0, inf), got 0
    """
    spec = _model(model)
    value = spec.default if strength is None else _check_strength(spec, strength)
    if seed is not None and rng is not None:
        raise BdnError("add_noise: give seed or rng, not both")
    x = _check_image(image, "add_noise")
    generator = rng if rng is not None else np.random.default_rng(seed)
    y = spec.function(x, value, generator)
    if clip:
        y = np.clip(y, 0.0, 1.0)
    return y.astype(np.float32)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """`image` (float [0, 1], grey or RGB) saved as an 8-bit JPEG at `quality` (1-100) and read back, as float32:
    what a camera or a web upload does to a noisy photograph after the noise (blocks, smeared chroma)."""
    import cv2

    from bdn.io import quantise

    if not 1 <= int(quality) <= 100:
        raise BdnError(f"JPEG quality must be in [1, 100], got {quality}")
    pixels = quantise(np.asarray(image), np.uint8)
    colour = pixels.ndim == 3
    bgr = np.ascontiguousarray(pixels[..., ::-1]) if colour else pixels  # OpenCV stores colour as BGR
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise BdnError("JPEG encoding failed")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR if colour else cv2.IMREAD_GRAYSCALE)
    return (decoded[..., ::-1] if colour else decoded).astype(np.float32) / 255.0


def parse_noise(spec: str) -> tuple[str, float | None]:
    """Parse a CLI noise spec like "gaussian:25", "poisson:10" or "gaussian" into (model, strength or None).

    The model name is normalised and the strength validated, so the result can go straight to add_noise.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise BdnError(f"noise spec: expected MODEL or MODEL:STRENGTH (e.g. gaussian:25), got {spec!r}")
    name, sep, rest = spec.strip().partition(":")
    model = _model(name)
    if not sep:
        return model.name, None
    try:
        value = float(rest.strip())
    except ValueError:
        raise BdnError(
            f"noise spec {spec!r}: {model.parameter} must be a number (e.g. {model.name}:{model.default:g})"
        ) from None
    return model.name, _check_strength(model, value)


def _sigma_mad(x: np.ndarray) -> float:
    from skimage.restoration import estimate_sigma as sk_estimate_sigma

    channel_axis = -1 if x.ndim == 3 else None
    return float(sk_estimate_sigma(x, channel_axis=channel_axis, average_sigmas=True))


_PATCH = 8  # patch side for the PCA estimator, as in Chen et al.
_MAX_STRIDE = _PATCH  # larger strides would skip pixels altogether
# Patch counts relative to the patch dimension d. With too few patches the sample eigenvalues spread out
# (Marchenko-Pastur) and the mean-equals-median rule cuts the tail short, so the estimate drops: measured on
# 128x128 colour crops, stride 3 (n ~ 9 d) reads ~8% low while stride 1 (n ~ 76 d) is within ~2%.
_PATCHES_WANTED = 100
_PATCHES_NEEDED = 8


def _grey_if_channels_equal(x: np.ndarray) -> np.ndarray:
    """A grey picture stored as RGB has three equal channels: treat it as grey (PCA would read 0 noise)."""
    if x.ndim == 3 and np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2]):
        return x[..., 0]
    return x


def _patch_count(shape: tuple[int, ...], stride: int) -> int:
    rows = (shape[0] - _PATCH) // stride + 1
    cols = (shape[1] - _PATCH) // stride + 1
    return max(rows, 0) * max(cols, 0)


def _pca_stride(x: np.ndarray) -> int | None:
    """The largest stride that still gives plenty of patches, or None when the image is too small for PCA."""
    dim = _PATCH * _PATCH * (x.shape[2] if x.ndim == 3 else 1)
    if _patch_count(x.shape, 1) < _PATCHES_NEEDED * dim:
        return None
    for stride in range(_MAX_STRIDE, 1, -1):
        if _patch_count(x.shape, stride) >= _PATCHES_WANTED * dim:
            return stride
    return 1


def _patch_covariance(x: np.ndarray, stride: int) -> np.ndarray:
    """Covariance of the _PATCH x _PATCH (x C) patches taken every `stride` pixels, accumulated in row blocks.

    Row blocks keep memory bounded on large photos; the image mean is removed first so the
    sum-of-products formula does not lose precision.
    """
    x = x - x.mean(axis=(0, 1))
    if x.ndim == 2:
        x = x[:, :, None]
    windows = np.lib.stride_tricks.sliding_window_view(x, (_PATCH, _PATCH), axis=(0, 1))
    windows = windows[::stride, ::stride]  # (rows, cols, C, patch, patch)
    dim = windows.shape[2] * _PATCH * _PATCH
    total = np.zeros(dim)
    products = np.zeros((dim, dim))
    count = 0
    block = max(1, 20000 // windows.shape[1])
    for start in range(0, windows.shape[0], block):
        rows = windows[start : start + block].reshape(-1, dim)
        total += rows.sum(axis=0)
        products += rows.T @ rows
        count += rows.shape[0]
    mean = total / count
    return products / count - np.outer(mean, mean)


def _sigma_pca(x: np.ndarray, stride: int) -> float:
    """Patch-PCA noise level of Chen, Zhu & Heng (ICCV 2015), in [0, 1] units.

    Clean patches lie near a low-dimensional subspace, so the smallest eigenvalues of the patch covariance are
    noise only, each about sigma^2. Take the largest set of smallest eigenvalues whose mean is also their
    median (as many above the mean as below it) and return the square root of that mean. Colour channels are
    stacked into one 8x8x3 patch vector, which assumes the same sigma in every channel.
    """
    eigenvalues = np.sort(np.clip(np.linalg.eigvalsh(_patch_covariance(x, stride)), 0.0, None))
    for count in range(eigenvalues.size, 0, -1):
        tail = eigenvalues[:count]
        tau = tail.mean()
        if np.count_nonzero(tail > tau) == np.count_nonzero(tail < tau):
            return math.sqrt(tau)
    return math.sqrt(eigenvalues[0])  # not reached: one value is always its own median


SIGMA_METHODS = ("auto", "pca", "mad")


def estimate_sigma(image: np.ndarray, method: str = "auto") -> float:
    """Blind estimate of additive Gaussian noise std in 0-255 units, for a float grey or RGB image in [0, 1].

    A colour image whose three channels are equal is treated as grey. Expect an over-estimate on strongly
    textured images (e.g. skimage's grass) and an under-estimate when noisy values were clipped to [0, 1]. For
    real photographs, whose noise is spatially correlated, `estimate_noise_level` is the figure to use.

    Parameters
    ----------
    image : numpy.ndarray
        Float, grey (H, W) or colour (H, W, 3), values in [0, 1], finite, at least 16x16 pixels.
    method : {'auto', 'pca', 'mad'}, default 'auto'
        - 'mad': scikit-image's wavelet MAD estimator (Donoho), averaged over colour channels. Image texture
          leaks into the finest wavelet band and reads as noise, so it over-estimates, most at low sigma.
        - 'pca': patch-PCA estimator of Chen, Zhu & Heng (ICCV 2015) on 8x8 (colour: 8x8x3) patches.
          Excellent on colour, where correlated channels leave many pure-noise directions; on grey 8x8 patches
          texture fills nearly all 64 directions and it over-estimates more than 'mad'. Needs about 8 x 64 (grey)
          or 8 x 192 (colour) patches, i.e. at least ~30x30 grey or ~47x47 colour pixels.
        - 'auto': 'pca' for colour images large enough for it, else 'mad' - the better of the two on every
          scikit-image sample we measured.

    Returns
    -------
    float
        The estimated noise standard deviation, 0-255 units.

    Raises
    ------
    BdnError
        For an unknown method; an image that is not float, not (H, W) or (H, W, 3), holds NaN or infinite values
        or is smaller than 16x16; and an image too small for method 'pca' when that is asked for.

    Examples
    --------
    >>> import bdn
    >>> from skimage import data
    >>> clean = data.astronaut()[::4, ::4] / 255.0  # 128x128 colour
    >>> noisy = bdn.add_noise(clean, "gaussian", 25, seed=0)
    >>> 22 < bdn.estimate_sigma(noisy) < 28  # 'auto': patch PCA on colour
    True
    >>> bdn.estimate_sigma(noisy, method="mad") > bdn.estimate_sigma(noisy, method="pca")  # texture reads as noise
    True
    """
    if method not in SIGMA_METHODS:
        raise BdnError(f"estimate_sigma: unknown method {method!r}; choose one of {', '.join(SIGMA_METHODS)}")
    x = _grey_if_channels_equal(_check_image(image, "estimate_sigma"))
    if min(x.shape[:2]) < 16:
        raise BdnError(f"estimate_sigma: image is {x.shape[1]}x{x.shape[0]}, needs at least 16x16 pixels")
    stride = _pca_stride(x)
    if method == "pca" and stride is None:
        raise BdnError(f"estimate_sigma: image is {x.shape[1]}x{x.shape[0]}, too small for method 'pca'; use 'mad'")
    use_pca = method == "pca" or (method == "auto" and x.ndim == 3 and stride is not None)
    sigma = _sigma_pca(x, stride) if use_pca else _sigma_mad(x)
    return 255.0 * sigma


# Real camera noise is spatially correlated (demosaicing, in-camera denoising, JPEG), so its energy sits below the
# finest wavelet band that estimate_sigma reads: on PolyU's training split the full-resolution estimate is 8x below
# std(noisy - clean), on CC 4x, and a white-noise denoiser given it does nothing. Averaging 2x2 blocks halves white
# noise but not correlated noise, so twice the estimate at half resolution recovers its std (PolyU train: 3.2 vs a
# measured 4.4; CC 4.9 vs 5.5). For white Gaussian noise the half-resolution figure reads higher only through image
# texture: on Train400 crops the ratio of the two stayed below 2.8 (sigma 2) and 1.4 (sigma >= 25), while on PolyU's
# training split it was 2.9 to 40 (mean 11). Above this ratio the noise is taken as correlated.
CORRELATED_RATIO = 3.0


def _half_resolution(x: np.ndarray) -> np.ndarray:
    height, width = (x.shape[0] // 2) * 2, (x.shape[1] // 2) * 2
    x = x[:height, :width]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def estimate_noise_level(image: np.ndarray) -> float:
    """The noise level (0-255 units) a blind denoiser should assume, white or spatially correlated noise alike.

    White noise: `estimate_sigma(image)`. Correlated noise (real photographs; see CORRELATED_RATIO): twice the
    wavelet estimate of the 2x2-averaged image, which measures the std that the finest band misses.
    """
    fine = estimate_sigma(image)
    x = _grey_if_channels_equal(_check_image(image, "estimate_noise_level"))
    if min(x.shape[:2]) < 32:  # the half-resolution image must itself be large enough to measure
        return fine
    coarse = 2.0 * 255.0 * _sigma_mad(_half_resolution(x))
    return coarse if coarse > CORRELATED_RATIO * fine else fine
