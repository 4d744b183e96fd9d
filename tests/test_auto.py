"""Issue 19, item 5: `--method auto` looks at the image, picks a method and says which."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage import data as skdata

import bdn
from bdn.auto import IMPULSE_METHOD, REAL_COLOUR_MODEL, WHITE_GREY_MODEL, look, pick
from bdn.cli import main
from bdn.errors import BdnWarning
from bdn.io import write_image

GREY = skdata.camera()[:128, :128] / 255.0
COLOUR = skdata.astronaut()[:128, :128] / 255.0


def _clipped(image, kind, strength):
    return np.clip(bdn.add_noise(image, kind, strength, seed=0), 0, 1).astype(np.float32)


@pytest.mark.parametrize(
    ("image", "kind", "strength", "expected"),
    [
        (GREY, "gaussian", 25, WHITE_GREY_MODEL),
        (GREY, "gaussian", 50, WHITE_GREY_MODEL),  # clipped black/white outliers, yet not impulse noise
        (COLOUR, "gaussian", 25, "nlm"),
        (GREY, "salt_pepper", 0.05, IMPULSE_METHOD),
        (COLOUR, "salt_pepper", 0.01, IMPULSE_METHOD),
    ],
)
def test_picks_by_noise(image, kind, strength, expected):
    assert pick(look(_clipped(image, kind, strength)))[0] == expected


def test_correlated_colour_noise_goes_to_the_real_noise_model():
    rng = np.random.default_rng(0)
    noise = gaussian_filter(rng.normal(size=COLOUR.shape), (1.0, 1.0, 0)) * 0.12  # correlated, as cameras make it
    seen = look(np.clip(COLOUR + noise, 0, 1).astype(np.float32))
    assert seen.correlated and seen.colour
    assert pick(seen)[0] == REAL_COLOUR_MODEL


def test_auto_says_what_it_picked_and_gives_that_result():
    noisy = _clipped(GREY, "salt_pepper", 0.05)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", BdnWarning)
        out = bdn.denoise(noisy, "auto")
    assert [str(w.message) for w in said if issubclass(w.category, BdnWarning)][0].startswith(
        f"auto: picked {IMPULSE_METHOD} ("
    )
    assert np.array_equal(out, bdn.denoise(noisy, IMPULSE_METHOD))


def test_equal_channels_are_denoised_as_grey():
    noisy = _clipped(GREY, "gaussian", 25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BdnWarning)
        out = bdn.denoise(np.repeat(noisy[..., None], 3, axis=2), "auto", sigma=25)
        grey = bdn.denoise(noisy, "auto", sigma=25)
    assert out.shape == (128, 128, 3) and np.array_equal(out[..., 1], grey)


def test_bdn_denoise_defaults_to_auto_and_prints_the_pick(tmp_path, capsys):
    write_image(tmp_path / "noisy.png", _clipped(GREY, "salt_pepper", 0.05))
    assert main(["denoise", str(tmp_path / "noisy.png"), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"auto: picked {IMPULSE_METHOD} (impulse noise" in out and "note: " in out


def test_row_and_record_name_the_weights_of_the_model_auto_ran(tmp_path, capsys):
    import json

    from bdn.record import record_path

    write_image(tmp_path / "grey.png", _clipped(GREY, "gaussian", 25))
    assert main(["denoise", str(tmp_path / "grey.png"), "-o", str(tmp_path / "out")]) == 0
    shipped = f"model_{WHITE_GREY_MODEL}_grey.safetensors"
    assert shipped in capsys.readouterr().out
    record = json.loads(record_path(tmp_path / "out" / "grey.png").read_text())
    assert record["options"]["method"] == "auto" and [w["name"] for w in record["weights"]] == [shipped]
