"""benchmarks/judges_pipeline.sh's keep and table steps on hand-made fits: the committed table grows one finished
fit at a time, as a machine that is not kept would leave it, and the table is made from it alone."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bdn.io import read_image, write_image
from bdn.metrics import psnr

pytestmark = pytest.mark.usefixtures("torch_one_thread")
ROOT = Path(__file__).resolve().parent.parent
SIZE, SAVE_ITER = 40, 20
LEVELS = [0.3, 0.2, 0.12, 0.07, 0.04, 0.03, 0.05, 0.08]  # each snapshot: clean + level * pattern


def fit(out: Path, name: str, seed: int) -> None:
    """A finished fit of image `name` in out/skip64_c256 (snapshots, log.csv, done.json) and its noisy image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    clean = np.stack([0.2 + 0.6 * x * y] * 3, -1).astype(np.float32)
    pattern = rng.standard_normal(clean.shape).astype(np.float32)
    write_image(out / "polyu_train" / "real" / f"{name}_real.png", np.clip(clean + 0.1 * pattern, 0, 1))
    folder = out / "skip64_c256" / name
    lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
    for index, level in enumerate(LEVELS):
        iteration = (index + 1) * SAVE_ITER
        path = write_image(folder / f"{iteration:05d}.png", np.clip(clean + level * pattern, 0, 1))
        lines.append(f"{iteration},{path.name},0.1,{psnr(clean, read_image(path)[0]):.6f},,")
    (folder / "log.csv").write_text("\n".join(lines) + "\n")
    (folder / "done.json").write_text("{}\n")


def pipeline(tmp_path: Path, *steps: str, biqan: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "BIN": str(Path(sys.executable).parent),
        "KEPT": str(tmp_path / "kept.csv.gz"),
        "BIQAN": str(biqan),
        "DATA": str(tmp_path / "data"),
    }
    script = ROOT / "benchmarks" / "judges_pipeline.sh"
    return subprocess.run(["bash", str(script), *steps], env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def networks(tmp_path_factory) -> tuple[Path, Path]:
    import torch

    from biqan.model import build_biqan, save_biqan

    root = tmp_path_factory.mktemp("biqan")
    torch.manual_seed(0)
    first = save_biqan(root / "a.safetensors", build_biqan(), protocol="native", crop=32)
    torch.manual_seed(1)
    second = save_biqan(root / "b.safetensors", build_biqan(), protocol="native", crop=32)
    return first, second


def test_keep_grows_the_committed_table_and_table_reads_it_alone(tmp_path, networks):
    first, second = networks
    out = tmp_path / "out"
    fit(out, "a", 0)
    done = pipeline(tmp_path, "keep", biqan=first)
    assert done.returncode == 0, done.stderr
    kept = pd.read_csv(tmp_path / "kept.csv.gz")
    assert set(kept["image"]) == {"a"} and set(kept["dataset"]) == {"PolyU-train"}
    assert kept["iteration"].tolist() == [(k + 1) * SAVE_ITER for k in range(len(LEVELS))]
    assert kept["biqan_mean"].between(1, 10).all() and kept["scored_by"].str.startswith("a.safetensors ").all()

    # the machine is lost: a's snapshots go, the table stays; the next machine fits b
    import shutil

    shutil.rmtree(out / "skip64_c256" / "a")
    fit(out, "b", 1)
    done = pipeline(tmp_path, "keep", biqan=first)
    assert done.returncode == 0, done.stderr
    grown = pd.read_csv(tmp_path / "kept.csv.gz")
    assert set(grown["image"]) == {"a", "b"}
    assert grown[grown["image"] == "a"].reset_index(drop=True).equals(kept)

    # another BIQAN's scores are refused in one line, and the table is left as it was
    refused = pipeline(tmp_path, "keep", biqan=second)
    assert refused.returncode != 0
    assert "its BIQAN scores are by a.safetensors" in refused.stderr
    assert pd.read_csv(tmp_path / "kept.csv.gz").equals(grown)

    # the table from the committed rows alone: the snapshots of b go too
    shutil.rmtree(out / "skip64_c256")
    done = pipeline(tmp_path, "table", biqan=first)
    assert done.returncode == 0, done.stderr
    summary = pd.read_csv(out / "judges_table" / "summary.csv")
    assert set(summary["dataset"]) == {"PolyU-train"} and (summary["images"] == 2).all()
    early = pd.read_csv(out / "judges_table_3000" / "summary.csv")  # every fit ended before 3,000: the same
    assert early["mean_gap"].tolist() == pytest.approx(summary["mean_gap"].tolist())
    learned = pd.read_csv(out / "learned_table" / "summary.csv")
    assert "learned (CV)" in set(learned["judge"])


def test_no_fit_and_unknown_steps_are_one_line(tmp_path, networks):
    done = pipeline(tmp_path, "keep", biqan=networks[0])
    assert done.returncode != 0 and done.stderr.strip().splitlines() == [
        f"judges_pipeline.sh: keep: no finished fit under {tmp_path / 'out'}"
    ]
    done = pipeline(tmp_path, "nope", biqan=networks[0])
    assert done.returncode != 0 and "unknown step 'nope'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
