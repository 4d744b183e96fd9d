"""benchmarks/dip_peaks.py on hand-made run folders: peaks, the price of each cap, the least cap within a level."""

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bdn.dip.runfolder import log_csv, seed_txt
from bdn.io import write_image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import dip_peaks  # noqa: E402


def fake_run(root: Path, curves: dict[str, list[float]], every: int = 20, size: int = 8) -> Path:
    """root in `bdn run`'s layout: per image, a snapshot every `every` iterations with the given 8-bit PSNRs."""
    for image, psnrs in curves.items():
        iterations = [every * (k + 1) for k in range(len(psnrs))]
        pairs = list(zip(iterations, psnrs, strict=True))
        for iteration in iterations:
            write_image(root / image / f"{iteration:05d}.png", np.full((size, size, 3), 0.5, np.float32))
        history = [
            {"iteration": i, "snapshot": True, "loss": 0.1, "psnr": p + 0.01, "ssim": 0.9, "psnr_raw": p}
            for i, p in pairs
        ]
        (root / image / "log.csv").write_text(log_csv(history))
        (root / f"{image}.txt").write_text(seed_txt(image, {i: (p, 0.9) for i, p in pairs}))
    return root


def test_image_row_by_hand():
    curve = pd.DataFrame({"iteration": [20, 40, 60, 80, 100], "psnr": [30.0, 32.0, 31.5, 32.25, 32.2]})
    row = dip_peaks.image_row(curve, at=[60, 70, 100, 120], within=0.3)
    assert row["peak_psnr"] == 32.25 and row["peak_iteration"] == 80
    assert row["best@60"] == 32.0 and row["loss@60"] == pytest.approx(0.25)  # the best up to the cap, not its last
    assert row["best@70"] == 32.0  # snapshots at or before the cap
    assert row["best@100"] == 32.25 and row["loss@100"] == 0.0
    assert math.isnan(row["best@120"]) and math.isnan(row["loss@120"])  # the fit never ran to 120
    assert row["first_within"] == 40  # 32.0 is within 0.3 dB of 32.25
    assert dip_peaks.image_row(curve, at=[80], within=0.0)["first_within"] == 80


def test_main_writes_the_table_with_means(tmp_path, capsys):
    run = fake_run(tmp_path / "run", {"b": [20.0, 25.0, 24.0], "a": [20.0, 26.0, 22.0, 27.0]})
    out = tmp_path / "out"
    assert dip_peaks.main(["--runs", f"full={run}", "--at", "40", "60", "80", "--out", str(out)]) == 0
    table = pd.read_csv(out / "peaks.csv")
    assert table["image"].tolist() == ["a", "b", "mean of 2"]
    assert table["pixels"].tolist()[:2] == ["8x8", "8x8"]
    assert table["peak_psnr"].tolist() == pytest.approx([27.0, 25.0, 26.0])
    assert table["peak_iteration"].tolist() == [80, 40, 60]
    assert table["loss@40"].tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert table["loss@60"].tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert table["best@80"].iloc[0] == 27.0 and math.isnan(table["best@80"].iloc[1])  # b stopped at 60
    assert table["loss@80"].iloc[2] == 0.0  # the mean over the images with a figure
    text = (out / "peaks.md").read_text()
    assert "Command: `python benchmarks/dip_peaks.py --runs full=" in text and "mean of 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    "runs, more, message",
    [
        ("x={empty}", [], "no run_BDN image folders"),
        ("x={missing}", [], "no such folder"),
        ("x={empty}", ["--at", "0"], "--at takes iterations >= 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, runs, more, message):
    (tmp_path / "empty").mkdir()
    runs = runs.format(empty=tmp_path / "empty", missing=tmp_path / "nope")
    code = dip_peaks.main(["--runs", runs, *more, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing half-written
