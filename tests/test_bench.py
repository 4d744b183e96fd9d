"""`bdn bench` on tiny datasets made here: the table, its semantics and resuming."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from skimage import data

from bdn.bench import run_bench
from bdn.errors import BdnError
from bdn.noise import add_noise


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "Set12").mkdir(parents=True)
    camera = data.camera()
    for index, (top, left) in enumerate([(100, 100), (250, 200)]):
        Image.fromarray(camera[top : top + 64, left : left + 64]).save(root / "Set12" / f"{index:02d}.png")
    for kind in ("real", "mean"):
        (root / "CC" / kind).mkdir(parents=True)
    astronaut = data.astronaut()[100:164, 200:264].astype(np.float32) / 255
    for index in range(2):
        noisy = add_noise(astronaut, "gaussian", 10, seed=index, clip=True)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(root / "CC" / "real" / f"x{index}_real.png")
        Image.fromarray(np.round(astronaut * 255).astype(np.uint8)).save(root / "CC" / "mean" / f"x{index}_mean.png")
    monkeypatch.setenv("BDN_DATA", str(root))
    return root


def test_bench_table_and_semantics(data_root, tmp_path, capsys):
    summary = run_bench(
        ["noisy", "median"], ["Set12", "CC"], [15, 50], out_root=tmp_path / "bench", run_name="t", threads=1
    )
    run = tmp_path / "bench" / "t"
    for name in ("summary.csv", "summary.md", "per_image.csv", "psnr.png", "config.json"):
        assert (run / name).is_file(), name
    assert set(summary.columns) >= {"dataset", "sigma", "method", "images", "psnr", "ssim", "sec_per_image", "peak_mb"}
    # sigmas multiply the clean-only set and are ignored for real pairs
    assert sorted(summary[summary.dataset == "Set12"].sigma.unique()) == ["15", "50"]
    assert list(summary[summary.dataset == "CC"].sigma.unique()) == ["real"]
    assert (summary.images == 2).all()
    noisy_50 = summary.query("dataset == 'Set12' and sigma == '50' and method == 'noisy'").psnr.item()
    assert 14.0 < noisy_50 < 17.5  # 20 log10(255 / 50) = 14.2 dB; clipping the output to [0,1] lifts it
    median_50 = summary.query("dataset == 'Set12' and sigma == '50' and method == 'median'").psnr.item()
    assert median_50 > noisy_50 + 5
    assert (summary.peak_mb > 50).all()  # a real process measured, not a placeholder
    assert "median" in capsys.readouterr().out
    # rows follow the order asked for: datasets, then sigmas, then methods
    assert list(summary.dataset.unique()) == ["Set12", "CC"]
    assert list(summary.method[:2]) == ["noisy", "median"]


def test_bench_resumes_without_redoing_rows(data_root, tmp_path):
    args = (["median"], ["Set12"], [25])
    run_bench(*args, out_root=tmp_path / "bench", run_name="r", threads=1)
    rows_file = tmp_path / "bench" / "r" / "rows" / "median__Set12.csv"
    rows = pd.read_csv(rows_file, dtype={"sigma": str, "image": str})
    rows.loc[0, "psnr"] = 99.0  # a marker: a rerun must keep finished rows, not recompute them
    rows.to_csv(rows_file, index=False)
    rows_file.with_suffix(".json").write_text(json.dumps({"peak_rss_mb": 12345.0}))
    summary = run_bench(*args, out_root=tmp_path / "bench", run_name="r", threads=1)
    assert summary.images.item() == 2
    assert 99.0 in pd.read_csv(tmp_path / "bench" / "r" / "per_image.csv").psnr.to_list()
    # a resumed worker that measured nothing keeps the peak memory of the process that did the work
    assert json.loads(rows_file.with_suffix(".json").read_text())["peak_rss_mb"] == 12345.0
    assert summary.peak_mb.item() == 12345.0


def test_bench_refuses_unknown_names_before_working(data_root, tmp_path):
    with pytest.raises(BdnError, match="unknown method"):
        run_bench(["nope"], ["Set12"], [25], out_root=tmp_path)
    with pytest.raises(BdnError, match="unknown dataset"):
        run_bench(["median"], ["Kodak"], [25], out_root=tmp_path)
    with pytest.raises(BdnError, match="BSD68"):
        run_bench(["median"], ["BSD68"], [25], out_root=tmp_path)  # not in this data root


def test_dataset_can_carry_its_own_sigmas(data_root, tmp_path):
    summary = run_bench(["noisy"], ["Set12:50", "CC"], [15], out_root=tmp_path / "bench", run_name="s", threads=1)
    assert sorted(summary.sigma.unique()) == ["50", "real"]
    with pytest.raises(BdnError, match="NAME:SIGMA"):
        run_bench(["noisy"], ["Set12:abc"], [15], out_root=tmp_path)


def test_bench_from_the_command_line(data_root, tmp_path, capsys):
    from bdn.cli import main

    args = ["bench", "--methods", "noisy", "--datasets", "Set12", "--sigma", "25", "-o", str(tmp_path), "--run", "c"]
    assert main(args) == 0
    assert (tmp_path / "c" / "summary.md").is_file()
    assert main(["bench", "--methods", "nope", "-o", str(tmp_path)]) == 1
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_the_photos_set_needs_no_data_root(tmp_path, monkeypatch):
    from bdn.bench import bench_cases
    from bdn.data import PHOTOS

    monkeypatch.setenv("BDN_DATA", str(tmp_path / "nothing here"))
    cases = list(bench_cases("Photos", [25], limit=2, polyu_split="all", skip={("chelsea", "25")}))
    assert [(name, sigma) for name, sigma, *_ in cases] == [("astronaut", "25")]
    _, _, true_sigma, noisy, clean = cases[0]
    assert true_sigma == 25 and clean.shape == (512, 512, 3) and clean.dtype == np.float32
    assert np.std(noisy - clean) * 255 == pytest.approx(25, rel=0.02)
    summary = run_bench(["noisy"], ["Photos:50"], [15], out_root=tmp_path / "bench", run_name="p", threads=1, limit=1)
    assert summary.sigma.tolist() == ["50"] and summary.images.tolist() == [1]
    assert len(PHOTOS) == 4
