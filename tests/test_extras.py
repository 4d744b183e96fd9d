"""BM3D is an extra (issue 18, item 4): its package is free for non-commercial use only, so `pip install bdn` leaves
it out; without it every way of asking for bm3d says in one line how to get it, and demo and bench go on without it.
The missing package is simulated (sys.modules["bm3d"] = None makes the import fail and find_spec answer None)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import bdn
from bdn import cli
from bdn.errors import BdnError

LINE = "bm3d needs the bm3d package (non-commercial licence): pip install 'bdn[bm3d]'"


@pytest.fixture
def no_bm3d(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bm3d", None)


@pytest.fixture
def noisy():
    return bdn.add_noise(np.full((32, 32), 0.5, np.float32), "gaussian", 25, seed=0)


def test_denoise_says_how_to_get_bm3d(no_bm3d, noisy):
    with pytest.raises(BdnError) as error:
        bdn.denoise(noisy, method="bm3d", sigma=25)
    assert str(error.value) == LINE
    from bdn.classical import bm3d

    with pytest.raises(BdnError, match="pip install 'bdn\\[bm3d\\]'"):
        bm3d(noisy, sigma=25)  # called directly, past the registry
    assert bdn.denoise(noisy, method="median", sigma=25).shape == noisy.shape  # the others are untouched


def test_the_cli_says_it_in_one_line(no_bm3d, tmp_path, capsys):
    Image.fromarray(np.full((32, 32), 128, np.uint8)).save(tmp_path / "a.png")
    assert cli.main(["denoise", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-m", "bm3d"]) == 1
    err = capsys.readouterr().err
    assert LINE in err and "Traceback" not in err
    assert not (tmp_path / "out" / "a.png").exists()


def test_demo_skips_bm3d_with_a_note(no_bm3d, tmp_path, capsys):
    from bdn.demo import run_demo

    table = run_demo(tmp_path, methods=["median", "bm3d"], progress=False)
    assert "bm3d" not in set(table.method) and "median" in set(table.method)
    assert f"bdn demo: skipping bm3d: {LINE}" in capsys.readouterr().err


def test_bench_skips_bm3d_with_a_note(no_bm3d, tmp_path, capsys):
    from bdn.bench import run_bench

    with pytest.raises(BdnError) as error:  # nothing left to measure: the line itself is the error
        run_bench(["bm3d"], ["Set12"], [25], out_root=tmp_path)
    assert str(error.value) == LINE
    assert f"bdn bench: skipping bm3d: {LINE}" in capsys.readouterr().err


def test_with_bm3d_installed_nothing_is_missing():
    from bdn.methods import missing_extra

    pytest.importorskip("bm3d")
    assert missing_extra("bm3d") is None and missing_extra("nlm") is None
