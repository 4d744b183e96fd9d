"""The front door: `bdn denoise` on files, folders and globs; bad input gives one line and a non-zero exit."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from bdn.cli import main, parse_params
from bdn.errors import BdnError


@pytest.fixture
def photos(tmp_path):
    """A folder with an 8-bit colour PNG, a 16-bit grey TIFF, a text file named .png and a truncated JPEG."""
    folder = tmp_path / "in"
    folder.mkdir()
    colour = data.astronaut()[100:196, 100:196]
    Image.fromarray(colour).save(folder / "colour.png")
    grey16 = data.camera()[200:296, 200:296].astype(np.uint16) * 257
    cv2.imwrite(str(folder / "grey16.tif"), grey16)
    (folder / "notes.png").write_text("not an image at all")
    Image.fromarray(colour).save(folder / "cut.jpg", quality=90)
    payload = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(payload[: len(payload) // 2])
    return folder


def test_batch_goes_past_bad_files_and_names_them(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["denoise", str(photos), "-o", str(out), "--method", "median"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "grey16.tif"]
    failed = [line for line in captured.err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2
    assert any("notes.png" in line for line in failed)
    assert any("cut.jpg" in line for line in failed)
    assert "Traceback" not in captured.err
    assert "2 denoised, 0 skipped, 2 failed" in captured.out


def test_output_keeps_bit_depth_and_mode(photos, tmp_path):
    out = tmp_path / "out"
    main(["denoise", str(photos / "grey16.tif"), str(photos / "colour.png"), "-o", str(out), "-m", "median"])
    grey = cv2.imread(str(out / "grey16.tif"), cv2.IMREAD_UNCHANGED)
    assert grey.dtype == np.uint16 and grey.shape == (96, 96)
    colour = cv2.imread(str(out / "colour.png"), cv2.IMREAD_UNCHANGED)
    assert colour.dtype == np.uint8 and colour.shape == (96, 96, 3)


def test_single_input_to_a_file_name_and_resume(photos, tmp_path, capsys):
    target = tmp_path / "clean.png"
    assert main(["denoise", str(photos / "colour.png"), "-o", str(target), "-m", "median"]) == 0
    first = target.read_bytes()
    assert main(["denoise", str(photos / "colour.png"), "-o", str(target), "-m", "adaptive_wiener"]) == 0
    assert "exists, skipped" in capsys.readouterr().out
    assert target.read_bytes() == first  # a finished result is never redone unasked
    args = ["denoise", str(photos / "colour.png"), "-o", str(target), "-m", "adaptive_wiener", "--overwrite"]
    assert main(args) == 0
    assert target.read_bytes() != first


def test_glob_pattern(photos, tmp_path):
    out = tmp_path / "out"
    assert main(["denoise", str(photos / "*.png"), "-o", str(out), "-m", "median"]) == 1  # notes.png fails
    assert [p.name for p in out.iterdir()] == ["colour.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["denoise", "missing.png", "-o", "out", "-m", "median"], "missing.png: no such file or folder"),
        (["denoise", "{img}", "-o", "out", "-m", "nope"], "unknown method 'nope'"),
        (["denoise", "{img}", "-o", "out", "-m", "median", "--param", "radius=3"], "median has no parameter radius"),
        (["denoise", "{img}", "-o", "out", "-m", "median", "--param", "size"], "--param takes NAME=VALUE"),
        (["denoise", "{img}", "-o", "out", "-m", "median", "--sigma", "-5"], "sigma"),
        (["denoise", "{tiny}", "-o", "out", "-m", "bm3d"], "tiny.png: image too small: 4x4 pixels, the minimum is 16"),
    ],
)
def test_bad_input_gives_one_line(args, message, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "tiny.png")
    args = [a.format(img=photos / "colour.png", tiny=tmp_path / "tiny.png") for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_parse_params_types():
    assert parse_params(["size=5", "h=0.5", "profile=lc"]) == {"size": 5, "h": 0.5, "profile": "lc"}
    with pytest.raises(BdnError):
        parse_params(["=3"])


def test_console_entry_point_runs_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bdn.cli", "denoise", str(tmp_path / "none.png"), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "none.png" in result.stderr


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("nlm", "median", "adaptive_median", "adaptive_wiener", "bm3d"):
        assert name in out
