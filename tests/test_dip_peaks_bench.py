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
    curve = pd.DataFrame({"iteration": [20, 40, 60, 80], "psnr": [30.0, 32.0, 32.25, 32.2]})
    row = dip_peaks.image_row(curve, at=[40, 50, 100], within=0.3)
    assert row["peak_psnr"] == 32.25 and row["peak_iteration"] == 60
    assert row["psnr@40"] == 32.0 and row["loss@40"] == pytest.approx(0.25)
    assert row["psnr@50"] == 32.0  # the last snapshot at or before the cap
    assert math.isnan(row["psnr@100"]) and math.isnan(row["loss@100"])  # the fit never ran to 100
    assert row["first_within"] == 40  # 32.0 is within 0.3 dB of 32.25
    assert dip_peaks.image_row(curve, at=[80], within=0.0)["first_within"] == 60


def test_main_writes_the_table_with_means(tmp_path, capsys):
    run = fake_run(tmp_path / "run", {"b": [20.0, 25.0, 24.0], "a": [20.0, 22.0, 26.0]})
    out = tmp_path / "out"
    assert dip_peaks.main(["--runs", f"full={run}", "--at", "40", "60", "--out", str(out)]) == 0
    table = pd.read_csv(out / "peaks.csv")
    assert table["image"].tolist() == ["a", "b", "mean of 2"]
    assert table["pixels"].tolist()[:2] == ["8x8", "8x8"]
    assert table["peak_psnr"].tolist() == pytest.approx([26.0, 25.0, 25.5])
    assert table["peak_iteration"].tolist() == pytest.approx([60, 40, 50])
    assert table["loss@40"].tolist() == pytest.approx([4.0, 0.0, 2.0])
    assert table["loss@60"].tolist() == pytest.approx([0.0, 1.0, 0.5])
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
