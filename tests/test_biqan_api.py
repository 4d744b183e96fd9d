"""biqan's public scoring API: biqan.score, biqan.Scorer, biqan.score_run (with the shipped network)."""

import subprocess
import sys

import numpy as np
import pytest
from skimage import data

import biqan
from bdn.errors import BdnError
from bdn.io import write_image
from biqan.api import _tiles_for

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def scorer():
    return biqan.Scorer()


def test_score_is_the_mean_of_the_distribution_and_scorer_equals_score(scorer):
    image = data.astronaut()[:96, :80] / 255.0
    p = scorer.distribution(image)
    assert p.shape == (10,) and abs(p.sum() - 1) < 1e-6 and (p >= 0).all()
    value = scorer(image)
    assert value == pytest.approx(float(p @ np.arange(1, 11)))
    assert 1.0 <= value <= 10.0
    assert biqan.score(image) == pytest.approx(value, abs=1e-6)


def test_any_size_grey_or_colour_and_integer_pixels(scorer):
    grey = data.camera()  # uint8, 512x512: scaled to [0, 1], scored on a 3 x 3 grid
    assert scorer(grey) == pytest.approx(scorer(grey / 255.0), abs=1e-6)
    assert 1.0 <= scorer(grey[:40, :300] / 255.0) <= 10.0  # smaller than the crop along one side
    assert 1.0 <= scorer(data.astronaut()[:50, :50, :1] / 255.0) <= 10.0  # (H, W, 1)


def test_tiles_cover_the_image():
    assert _tiles_for(100, 100, 224, "auto") == 1
    assert _tiles_for(512, 512, 224, "auto") == 3
    assert _tiles_for(300, 800, 224, "auto") == 4
    assert _tiles_for(512, 512, 224, 2) == 2
    with pytest.raises(BdnError, match="tiles must be 'auto' or a whole number >= 1, got 0"):
        _tiles_for(512, 512, 224, 0)
    with pytest.raises(BdnError, match="tiles must be"):
        biqan.Scorer(tiles="many")


def test_bad_images_are_one_line(scorer, tmp_path):
    with pytest.raises(BdnError, match="grey \\(H, W\\) or colour \\(H, W, 3\\), got shape \\(4, 4, 4\\)"):
        scorer(np.zeros((4, 4, 4)))
    with pytest.raises(BdnError, match="NaN or infinite"):
        scorer(np.full((40, 40), np.nan))
    (tmp_path / "fake.safetensors").write_bytes(b"not weights")
    with pytest.raises(BdnError, match="fake.safetensors"):
        biqan.Scorer(tmp_path / "fake.safetensors")


def test_score_run_scores_every_snapshot_beside_its_psnr(tmp_path, scorer):
    run = tmp_path / "run"
    clean = data.astronaut()[:64, :64] / 255.0
    rng = np.random.default_rng(0)
    lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
    for index, level in enumerate((0.2, 0.1, 0.05)):
        iteration = 20 * (index + 1)
        write_image(run / "a" / f"{iteration:05d}.png", np.clip(clean + level * rng.normal(size=clean.shape), 0, 1))
        lines.append(f"{iteration},{iteration:05d}.png,0.1,{20 + 5 * index},,")
    (run / "a" / "log.csv").write_text("\n".join(lines) + "\n")
    table = biqan.score_run(run)
    assert list(table.columns) == ["image", "iteration", "path", "score", "score_std", "psnr"]
    assert table["iteration"].tolist() == [20, 40, 60] and table["psnr"].tolist() == [20.0, 25.0, 30.0]
    from bdn.io import read_image

    for row in table.itertuples():
        assert row.score == pytest.approx(scorer(read_image(row.path)[0]), abs=1e-6)
        assert row.score_std > 0


def test_import_biqan_stays_light():
    code = "import biqan, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
