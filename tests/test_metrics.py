"""PSNR / SSIM: one definition (skimage, data_range 1.0, out clipped), dtype-driven conversion, errors."""

import math

import numpy as np
import pytest
from skimage import data, img_as_float
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bdn.errors import BdnError
from bdn.metrics import psnr, psnr_ssim, ssim, to_float01


@pytest.fixture(scope="module")
def grey() -> np.ndarray:
    return img_as_float(data.camera()[::2, ::2])  # 256x256 float64 in [0, 1]


@pytest.fixture(scope="module")
def colour() -> np.ndarray:
    return img_as_float(data.astronaut()[::2, ::2])  # 256x256x3


def noisy(image: np.ndarray, sigma: float = 20, seed: int = 0) -> np.ndarray:
    """Noisy version kept inside [0, 1], so clipping plays no part in the comparison with skimage."""
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma / 255, image.shape), 0, 1)


# --- to_float01 ------------------------------------------------------------------------------------


def test_to_float01_by_dtype():
    assert np.array_equal(to_float01(np.array([0, 51, 255], np.uint8)), [0.0, 0.2, 1.0])
    assert np.array_equal(to_float01(np.array([0, 13107, 65535], np.uint16)), [0.0, 0.2, 1.0])
    assert np.array_equal(to_float01(np.array([False, True])), [0.0, 1.0])
    for arr in (to_float01(np.array([0, 255], np.uint8)), to_float01(np.array([True]))):
        assert arr.dtype == np.float64


def test_to_float01_leaves_floats_unscaled():
    values = np.array([-0.5, 0.25, 3.0, 200.0], np.float32)  # out of range on purpose: no guessing
    out = to_float01(values)
    assert out.dtype == np.float64 and np.array_equal(out, values.astype(np.float64))
    original = np.array([0.1, 0.2])
    assert to_float01(original) is not original  # a copy: callers may modify it


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int8, np.uint32, np.complex64])
def test_to_float01_refuses_dtypes_without_a_range(dtype):
    with pytest.raises(BdnError, match=f"dtype {np.dtype(dtype)} not supported"):
        to_float01(np.zeros(4, dtype))


# --- agreement with skimage ------------------------------------------------------------------------


def test_grey_matches_skimage(grey):
    out = noisy(grey)
    assert psnr(grey, out) == peak_signal_noise_ratio(grey, out, data_range=1.0)
    assert ssim(grey, out) == structural_similarity(grey, out, data_range=1.0)
    assert psnr_ssim(grey, out) == (psnr(grey, out), ssim(grey, out))


def test_colour_matches_skimage(colour):
    out = noisy(colour)
    assert psnr(colour, out) == peak_signal_noise_ratio(colour, out, data_range=1.0)
    assert ssim(colour, out) == structural_similarity(colour, out, data_range=1.0, channel_axis=-1)
    assert psnr_ssim(colour, out) == (psnr(colour, out), ssim(colour, out))


def test_colour_psnr_pools_channels_and_ssim_averages_them(colour):
    out = noisy(colour)
    mse = np.mean((colour - out) ** 2)
    assert psnr(colour, out) == pytest.approx(10 * math.log10(1 / mse), abs=1e-10)
    per_channel = [structural_similarity(colour[..., c], out[..., c], data_range=1.0) for c in range(3)]
    assert ssim(colour, out) == pytest.approx(np.mean(per_channel), abs=1e-12)


def test_float32_input_matches_float64(grey):
    out = noisy(grey)
    assert psnr(grey.astype(np.float32), out.astype(np.float32)) == pytest.approx(psnr(grey, out), abs=1e-4)


# --- known values ----------------------------------------------------------------------------------


def test_constant_offset_of_0_1_is_20_db():
    clean = np.full((64, 64), 0.5)
    assert psnr(clean, clean + 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr(clean, clean - 0.1) == pytest.approx(20.0, abs=1e-9)
    assert psnr(np.full((64, 64, 3), 0.5), np.full((64, 64, 3), 0.6)) == pytest.approx(20.0, abs=1e-9)


def test_identical_images_give_inf_psnr_and_ssim_one(grey, colour):
    for image in (grey, colour):
        with np.errstate(all="raise"):  # and no divide-by-zero warning leaks out
            assert psnr(image, image) == math.inf
        assert ssim(image, image) == pytest.approx(1.0)


def test_ssim_drops_with_noise(grey):
    assert 1 > ssim(grey, noisy(grey, 10)) > ssim(grey, noisy(grey, 30)) > 0


# --- dtypes ----------------------------------------------------------------------------------------


def test_uint8_and_float_versions_agree(grey, colour):
    for image in (grey, colour):
        clean8 = np.round(image * 255).astype(np.uint8)
        out8 = np.round(noisy(image) * 255).astype(np.uint8)
        clean_f, out_f = clean8 / 255.0, out8 / 255.0
        assert psnr(clean8, out8) == psnr(clean_f, out_f)
        assert ssim(clean8, out8) == ssim(clean_f, out_f)
        # Mixed: uint8 clean against a float output.
        assert psnr_ssim(clean8, out_f) == psnr_ssim(clean_f, out_f)


def test_uint16_handled(grey):
    clean16 = np.round(grey * 65535).astype(np.uint16)
    out16 = np.round(noisy(grey) * 65535).astype(np.uint16)
    clean_f, out_f = clean16 / 65535.0, out16 / 65535.0
    assert psnr(clean16, out16) == psnr(clean_f, out_f)
    assert ssim(clean16, out16) == ssim(clean_f, out_f)
    # The range comes from the dtype: the same picture in 8 and 16 bits compares as identical.
    clean8 = np.round(grey * 255).astype(np.uint8)
    assert psnr(clean8.astype(np.uint16) * 257, clean8) == math.inf


def test_bool_images():
    clean = np.zeros((32, 32), bool)
    out = clean.copy()
    out[:, :16] = True  # half the pixels wrong by 1: mse 0.5
    assert psnr(clean, out) == pytest.approx(10 * math.log10(2))


# --- clipping --------------------------------------------------------------------------------------


def test_out_is_clipped_not_rounded(grey):
    raw = grey + np.random.default_rng(1).normal(0, 25 / 255, grey.shape)  # leaves [0, 1]
    assert raw.min() < 0 and raw.max() > 1
    clipped = np.clip(raw, 0, 1)
    assert psnr(grey, raw) == peak_signal_noise_ratio(grey, clipped, data_range=1.0)
    assert ssim(grey, raw) == structural_similarity(grey, clipped, data_range=1.0)
    assert psnr(grey, raw) != peak_signal_noise_ratio(grey, raw, data_range=1.0)
    # Not rounded to 8 bits: an error well below one 8-bit step is measured as it is.
    assert psnr(np.full((16, 16), 0.5), np.full((16, 16), 0.501)) == pytest.approx(60.0, abs=1e-6)


def test_clipping_can_only_help_a_clean_image_in_range(grey):
    raw = grey + np.random.default_rng(2).normal(0, 40 / 255, grey.shape)
    assert psnr(grey, raw) > peak_signal_noise_ratio(grey, raw, data_range=1.0)


def test_clean_is_not_clipped():
    clean = np.full((16, 16), 1.2)  # an out-of-range reference is the caller's business, measured as given
    assert psnr(clean, np.full((16, 16), 1.0)) == pytest.approx(10 * math.log10(1 / 0.04))


def test_inputs_not_modified(grey):
    raw = grey + 0.3
    before = raw.copy()
    psnr_ssim(grey, raw)
    assert np.array_equal(raw, before)


# --- errors ----------------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes(grey, colour):
    with pytest.raises(BdnError, match=r"shape \(256, 256\) but output has shape \(256, 256, 3\)") as info:
        psnr(grey, colour)
    assert "\n" not in str(info.value)
    for fn in (ssim, psnr_ssim):
        with pytest.raises(BdnError, match=r"\(256, 256\).*\(128, 128\)"):
            fn(grey, grey[:128, :128])


@pytest.mark.parametrize("shape", [(16, 16, 1), (16, 16, 4), (16,), (2, 16, 16, 3)])
def test_bad_shapes(shape):
    image = np.zeros(shape)
    with pytest.raises(BdnError, match="grey \\(H, W\\) or colour \\(H, W, 3\\)"):
        psnr(image, image)


def test_ssim_on_tiny_images_is_a_clear_error():
    tiny = np.zeros((5, 40))
    with pytest.raises(BdnError, match="at least 7x7"):
        ssim(tiny, tiny)
    assert psnr(tiny, tiny + 0.1) == pytest.approx(20.0)  # PSNR has no such limit


def test_unsupported_dtype_in_metrics():
    with pytest.raises(BdnError, match="int64 not supported"):
        psnr(np.zeros((8, 8), np.int64), np.zeros((8, 8), np.int64))
