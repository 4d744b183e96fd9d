"""Tests for bdn.classical: each filter denoises, keeps shape and dtype, works blind, and refuses bad input.

Images are 96x96 crops of scikit-image's camera() (grey) and astronaut() (RGB) with Gaussian noise sigma 25 made
here with a fixed seed. Measured PSNR gains over the noisy input (grey / RGB, dB; blind within 0.06 of these):
nlm 7.44 / 7.13, median 4.45 / 4.81, adaptive_median 2.26 / 2.25, adaptive_wiener 5.75 / 5.49, bm3d 8.60 / 9.47.
The bounds below sit about 0.5 dB under them. BM3D costs about 1 s (grey) and 3 s (RGB) a call whatever the size
(a fixed cost inside the bm3d binary), so it is called as little as possible.
"""

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from bdn.classical import (
    BM3D_BLOCK_SIZE,
    CLASSICAL_METHODS,
    MIN_SIZE,
    adaptive_median,
    adaptive_wiener,
    bm3d,
    median,
    nlm,
)
from bdn.errors import BdnError

SIGMA = 25
CLEAN = {
    "grey": data.camera()[160:256, 192:288].astype(np.float32) / 255,
    "rgb": data.astronaut()[30:126, 160:256].astype(np.float32) / 255,
}
NOISY = {
    kind: clean + np.random.default_rng(1).normal(0, SIGMA / 255, clean.shape).astype(np.float32)
    for kind, clean in CLEAN.items()
}
MIN_GAIN = {  # dB over the noisy input (clipped to [0,1]) at sigma 25
    ("nlm", "grey"): 7.0,
    ("nlm", "rgb"): 6.6,
    ("median", "grey"): 4.0,
    ("median", "rgb"): 4.3,
    ("adaptive_median", "grey"): 1.8,
    ("adaptive_median", "rgb"): 1.8,
    ("adaptive_wiener", "grey"): 5.3,
    ("adaptive_wiener", "rgb"): 5.0,
    ("bm3d", "grey"): 8.1,
    ("bm3d", "rgb"): 9.0,
}


def psnr(clean: np.ndarray, image: np.ndarray) -> float:
    return peak_signal_noise_ratio(clean, np.clip(image, 0, 1), data_range=1.0)


def gain(kind: str, out: np.ndarray) -> float:
    return psnr(CLEAN[kind], out) - psnr(CLEAN[kind], NOISY[kind])


def salt_and_pepper(clean: np.ndarray, amount: float, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).random(clean.shape)
    noisy = clean.copy()
    noisy[u < amount / 2] = 0.0
    noisy[(u >= amount / 2) & (u < amount)] = 1.0
    return noisy


def test_registry_lists_every_method_with_a_min_size():
    expected = {"nlm", "median", "adaptive_median", "adaptive_wiener", "bm3d"}
    assert set(CLASSICAL_METHODS) == expected
    assert set(MIN_SIZE) == expected
    assert MIN_SIZE["bm3d"] == BM3D_BLOCK_SIZE["np"] + 1
    assert all(isinstance(v, int) and v >= 3 for v in MIN_SIZE.values())


@pytest.mark.parametrize("kind", ["grey", "rgb"])
@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_denoises_gaussian_and_keeps_shape_dtype_and_input(name, kind):
    noisy = NOISY[kind]
    before = noisy.copy()
    out = CLASSICAL_METHODS[name](noisy, SIGMA)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(noisy, before), "input was modified"
    assert gain(kind, out) > MIN_GAIN[(name, kind)]


@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_blind_sigma_estimate_denoises_as_well(name):
    out = CLASSICAL_METHODS[name](NOISY["grey"])  # sigma estimated by bdn.noise.estimate_sigma
    assert out.shape == NOISY["grey"].shape and out.dtype == np.float32
    assert gain("grey", out) > MIN_GAIN[(name, "grey")]


@pytest.mark.parametrize("name", [n for n in CLASSICAL_METHODS if n != "bm3d"])
def test_float64_input_gives_float32(name):
    out = CLASSICAL_METHODS[name](NOISY["grey"].astype(np.float64), SIGMA)
    assert out.dtype == np.float32


@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_min_size_is_enough_and_one_less_is_refused(name):
    side = MIN_SIZE[name]
    image = np.random.default_rng(3).random((side, side + 5)).astype(np.float32)
    out = CLASSICAL_METHODS[name](image, 40)  # sigma 40: median picks its larger (5x5) window
    assert out.shape == image.shape and np.isfinite(out).all()
    with pytest.raises(BdnError, match="too small"):
        CLASSICAL_METHODS[name](image[: side - 1], 40)


@pytest.mark.parametrize("kind", ["grey", "rgb"])
def test_adaptive_median_removes_salt_and_pepper(kind):
    clean = CLEAN[kind]
    noisy = salt_and_pepper(clean, 0.10, seed=2)
    before = psnr(clean, noisy)
    adaptive = psnr(clean, adaptive_median(noisy))
    assert adaptive - before > 15.0  # measured 19.65 (grey), 17.59 (RGB)
    # It only replaces impulses, so it beats a plain 3x3 median (measured by 5.4 / 4.3 dB).
    assert adaptive - psnr(clean, median(noisy, size=3)) > 3.0


def test_adaptive_median_replaces_an_isolated_impulse_exactly():
    image = np.full((20, 20), 0.5, dtype=np.float32)
    image[10, 10] = 1.0
    image[3, 15] = 0.0
    np.testing.assert_array_equal(adaptive_median(image), np.full((20, 20), 0.5, dtype=np.float32))


def test_adaptive_median_keeps_pixels_that_are_not_impulses():
    ramp = np.tile(np.linspace(0.1, 0.9, 30, dtype=np.float32), (30, 1))
    # Inside, every pixel lies strictly between its neighbours: kept as is. (The first and last columns are the
    # window's extremes once the border is mirrored, so the filter treats them as impulses.)
    np.testing.assert_array_equal(adaptive_median(ramp, max_size=5)[:, 1:-1], ramp[:, 1:-1])


def test_adaptive_wiener_with_sigma_zero_is_identity():
    clean = CLEAN["grey"]
    np.testing.assert_allclose(adaptive_wiener(clean, 0), clean, atol=1e-6)
    flat = np.full((16, 16, 3), 0.25, dtype=np.float32)  # zero local variance: no 0/0
    np.testing.assert_allclose(adaptive_wiener(flat, 0), flat, atol=1e-7)


def test_adaptive_wiener_flattens_pure_noise_to_its_mean():
    noise = 0.5 + np.random.default_rng(4).normal(0, 10 / 255, (64, 64)).astype(np.float32)
    out = adaptive_wiener(noise, 10)
    assert out.std() < 0.35 * noise.std()


def test_median_window_follows_sigma():
    noisy = NOISY["grey"]
    np.testing.assert_array_equal(median(noisy, 10), np.clip(ndi.median_filter(noisy, 3, mode="reflect"), 0, 1))
    np.testing.assert_array_equal(median(noisy, 40), np.clip(ndi.median_filter(noisy, 5, mode="reflect"), 0, 1))
    np.testing.assert_array_equal(median(noisy, 40, size=3), median(noisy, 10))


def test_median_filters_colour_channels_separately():
    rgb = NOISY["rgb"]
    out = median(rgb, size=3)
    np.testing.assert_array_equal(out[..., 1], median(np.ascontiguousarray(rgb[..., 1]), size=3))


def test_nlm_sigma_zero_returns_input_clipped():
    noisy = NOISY["grey"]
    np.testing.assert_array_equal(nlm(noisy, 0), np.clip(noisy, 0, 1))


def test_nlm_larger_h_smooths_more():
    noisy = NOISY["grey"]
    assert nlm(noisy, SIGMA, h=40).std() < nlm(noisy, SIGMA, h=5).std()


def test_bm3d_flat_image_stays_flat():
    flat = np.full((24, 24), 0.4, dtype=np.float32)
    np.testing.assert_allclose(bm3d(flat, SIGMA), flat, atol=2e-3)


@pytest.mark.parametrize("sigma", [0, 1e-6])
def test_bm3d_zero_sigma_returns_input_clipped(sigma):
    noisy = NOISY["rgb"]
    np.testing.assert_array_equal(bm3d(noisy, sigma), np.clip(noisy, 0, 1))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda x: nlm(x, -1), "nlm: sigma must be a finite number >= 0"),
        (lambda x: median(x, float("nan")), "median: sigma must be a finite number >= 0"),
        (lambda x: bm3d(x, "25"), "bm3d: sigma must be a number"),
        (lambda x: adaptive_median(x, -5), "adaptive_median: sigma must be"),
        (lambda x: adaptive_wiener(x, float("inf")), "adaptive_wiener: sigma must be"),
        (lambda x: median(x, size=4), "median: size must be an odd integer >= 3, got 4"),
        (lambda x: median(x, 10, size=1), "size must be an odd integer >= 3, got 1"),
        (lambda x: adaptive_median(x, max_size=6), "max_size must be an odd integer >= 3, got 6"),
        (lambda x: adaptive_wiener(x, 10, size=2.0), "size must be an odd integer >= 3, got 2.0"),
        (lambda x: adaptive_wiener(x, 10, size=True), "size must be an odd integer >= 3, got True"),
        (lambda x: nlm(x, 10, patch_size=6), "nlm: patch_size must be an odd integer >= 3"),
        (lambda x: nlm(x, 10, search_size=0), "nlm: search_size must be an odd integer >= 3"),
        (lambda x: nlm(x, 10, h=0), "nlm: h must be a number > 0"),
        (lambda x: bm3d(x, 10, profile="fast"), "bm3d: unknown profile 'fast'; choose one of np"),
        (lambda x: bm3d(x, 10, profile="refilter"), "bm3d: unknown profile 'refilter'"),
    ],
)
def test_bad_parameters_raise_one_line_bdn_error(call, message):
    with pytest.raises(BdnError) as caught:
        call(NOISY["grey"][:32, :32])
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((32, 32), dtype=np.uint8), "image must be a float array in [0,1], got uint8 array"),
        ([[0.5, 0.5]], "image must be a float array in [0,1], got list"),
        (np.zeros((32, 32, 1), dtype=np.float32), "must be grey (H, W) or RGB (H, W, 3), got shape (32, 32, 1)"),
        (np.zeros((32, 32, 4), dtype=np.float32), "got shape (32, 32, 4)"),
        (np.full((32, 32), np.nan, dtype=np.float32), "image holds NaN or infinite values"),
    ],
)
@pytest.mark.parametrize("name", list(CLASSICAL_METHODS))
def test_bad_images_raise_bdn_error(name, image, message):
    with pytest.raises(BdnError) as caught:
        CLASSICAL_METHODS[name](image, 10)
    assert str(caught.value).startswith(f"{name}: ") and message in str(caught.value)


@pytest.mark.parametrize(("profile", "side"), [("np", 8), ("vn", 11), ("vn_old", 12)])
def test_bm3d_refuses_images_its_library_would_crash_on(profile, side):
    # bm3d 4.0.3 segfaults on an image exactly one block square; we must refuse it instead.
    with pytest.raises(BdnError, match=f"too small .*profile '{profile}'"):
        bm3d(np.full((side, side), 0.5, dtype=np.float32), 10, profile=profile)
