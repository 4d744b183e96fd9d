"""benchmarks/biqan_judges.py on two tiny hand-made runs (3 images x 15 snapshots of 32x32 PNGs + log.csv with
PSNR each) and a stand-in BIQAN (an untrained MobileNetV3-small saved with crop 32): every judge on the same
snapshots, the summary's numbers, and the run folders left exactly as they were."""

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bdn
from bdn.io import read_image, write_image

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "biqan_judges.py"
SIZE, SAVE_ITER = 32, 20
# Per image, snapshot t is clean + level_t * a fixed pattern: the PSNR peaks where the level is least.
LEVELS = {
    "a": [0.30, 0.25, 0.20, 0.15, 0.10, 0.06, 0.03, 0.02, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16],
    "b": [0.30, 0.20, 0.12, 0.05, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15, 0.17, 0.19, 0.21, 0.23],
    "c": [0.30, 0.28, 0.26, 0.24, 0.22, 0.20, 0.18, 0.16, 0.14, 0.12, 0.10, 0.08, 0.06, 0.04, 0.03],
}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("biqan_judges_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def fake_dataset(root: Path, colour: bool, seed: int) -> dict[str, float]:
    """root/run (run_BDN's layout: <image>/<iter:05d>.png + log.csv with the 8-bit snapshots' PSNR), root/real
    (<image>_real.png, the noisy images fitted) and root/mean (<image>_mean.png). Returns image -> best PSNR."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    best = {}
    for name, levels in LEVELS.items():
        grey = (0.25 + 0.5 * x * y + 0.05 * rng.random()).astype(np.float32)
        clean = np.stack([grey, grey * 0.9, grey * 0.8], -1) if colour else grey
        pattern = rng.standard_normal(clean.shape).astype(np.float32)
        clean = read_image(write_image(root / "mean" / f"{name}_mean.png", clean))[0]
        write_image(root / "real" / f"{name}_real.png", np.clip(clean + 0.1 * pattern, 0, 1))
        lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
        psnrs = []
        for index, level in enumerate(levels):
            iteration = (index + 1) * SAVE_ITER
            path = write_image(root / "run" / name / f"{iteration:05d}.png", np.clip(clean + level * pattern, 0, 1))
            psnrs.append(bdn.psnr(clean, read_image(path)[0]))
            lines.append(f"{iteration},{path.name},0.1,{psnrs[-1]:.10f},,")
        (root / "run" / name / "log.csv").write_text("\n".join(lines) + "\n")
        best[name] = max(float(f"{p:.10f}") for p in psnrs)
    return best


def tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("judges")
    best = {"CC": fake_dataset(root / "CC", True, 1), "PolyU": fake_dataset(root / "PolyU", False, 2)}
    import torch

    from biqan.model import build_biqan, save_biqan

    torch.manual_seed(0)
    checkpoint = save_biqan(root / "biqan.safetensors", build_biqan(), protocol="native", crop=32)
    return {"root": root, "best": best, "checkpoint": checkpoint}


def runs_args(root: Path, datasets=("CC", "PolyU")) -> list[str]:
    return ["--runs", *[f"{d}={root / d / 'run'}" for d in datasets]]


def test_every_judge_on_the_same_snapshots(bench, data, tmp_path):
    root, out = data["root"], tmp_path / "out"
    before = tree(root)
    argv = [
        *runs_args(root),
        "--biqan",
        str(data["checkpoint"]),
        "--noisy",
        f"CC={root / 'CC' / 'real'}",
        f"PolyU={root / 'PolyU' / 'real'}",
        "--wmv-window",
        "3",
        "--wmv-patience",
        "4",
        "--biqan-start-index",
        "2",
        "--device",
        "cpu",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    assert tree(root) == before  # read only: no choice.json, no result.png, nothing changed
    assert not list(root.rglob("choice.json"))

    per_image = pd.read_csv(out / "per_image.csv")
    judges = ["biqan", "seed recipe", "wmv", "noise", "learned", "last", "oracle"]
    assert set(per_image["judge"]) == set(judges) and len(per_image) == 2 * 7 * 3
    assert (per_image["snapshots"] == 15).all()
    for (dataset, image), group in per_image.groupby(["dataset", "image"]):
        # Same snapshots for every judge: one oracle per image, the best recorded PSNR.
        assert group["oracle_psnr"].tolist() == pytest.approx([data["best"][dataset][image]] * 7, abs=1e-9)
        assert (group["psnr"] <= group["oracle_psnr"] + 1e-12).all()
        assert group["gap"].tolist() == pytest.approx((group["oracle_psnr"] - group["psnr"]).tolist())
    oracle = per_image[per_image["judge"] == "oracle"]
    assert (oracle["gap"] == 0).all() and (oracle["iteration"] == oracle["oracle_iteration"]).all()
    assert oracle[oracle["dataset"] == "CC"]["iteration"].tolist() == [160, 100, 300]  # the least levels
    last = per_image[per_image["judge"] == "last"]
    assert (last["iteration"] == 15 * SAVE_ITER).all()  # no judge: the final snapshot, best only for "c"
    assert last.set_index(["dataset", "image"])["gap"].gt(0).tolist() == [True, True, False] * 2

    # biqan: what test_BIQAN's own path chooses with the checkpoint's protocol and crop.
    from biqan.model import load_biqan
    from biqan.select import choose, score_run

    model, _ = load_biqan(data["checkpoint"])
    for dataset in ("CC", "PolyU"):
        scores = score_run(model, root / dataset / "run", protocol="native", crop=32)
        for key, start, smooth in (("biqan", 2, None), ("seed recipe", 40, 0.8)):
            rows = per_image[(per_image["judge"] == key) & (per_image["dataset"] == dataset)]
            assert dict(zip(rows["image"], rows["iteration"], strict=True)) == choose(scores, start, smooth)

    summary = pd.read_csv(out / "summary.csv")
    assert summary["judge"].tolist() == [j for j in judges for _ in range(2)]
    assert summary["dataset"].tolist() == ["CC", "PolyU"] * 7
    for row in summary.itertuples():
        group = per_image[(per_image["judge"] == row.judge) & (per_image["dataset"] == row.dataset)]
        assert row.images == 3
        assert row.mean_gap == pytest.approx(group["gap"].mean())
        assert row.worst_gap == pytest.approx(group["gap"].max())
        assert row.worst_image == group.loc[group["gap"].idxmax(), "image"]
        assert row.chosen_psnr == pytest.approx(group["psnr"].mean())
        assert row.oracle_psnr == pytest.approx(np.mean(list(data["best"][row.dataset].values())))
        assert row.chosen_psnr <= row.oracle_psnr + 1e-12
    oracle_rows = summary[summary["judge"] == "oracle"]
    assert (oracle_rows["mean_gap"] == 0).all() and (oracle_rows["worst_gap"] == 0).all()
    biqan_cc = summary[(summary["judge"] == "biqan") & (summary["dataset"] == "CC")].iloc[0]
    assert biqan_cc.goal == "mean <= 0.15, worst <= 0.5 on CC"
    assert biqan_cc.goal_met == ("yes" if biqan_cc.mean_gap <= 0.15 and biqan_cc.worst_gap <= 0.5 else "no")
    assert summary.loc[summary["judge"] == "wmv", "settings"].iloc[0] == "window 3, patience 4"

    text = (out / "summary.md").read_text()
    assert f"python benchmarks/biqan_judges.py --runs CC={root / 'CC' / 'run'}" in text
    assert "--wmv-window 3" in text and "Command (20" in text
    worst = summary[(summary["judge"] == "wmv") & (summary["dataset"] == "PolyU")].iloc[0]
    assert f"{worst.worst_gap:.3f} ({worst.worst_image})" in text
    assert "seed recipe on CC: 3 image(s) have no more than start_index 40 snapshots" in text
    assert "tuned on PolyU's training split only" in text
    assert "BIQAN's score vs PSNR on CC" in text  # its rank correlation (undefined for this stand-in's scores)


def test_until_measures_every_judge_as_if_the_fits_had_stopped_there(bench, data, tmp_path):
    root, out = data["root"], tmp_path / "out"
    argv = [*runs_args(root, ("CC",)), "--biqan", str(data["checkpoint"]), "--biqan-start-index", "2"]
    argv += ["--noisy", f"CC={root / 'CC' / 'real'}", "--device", "cpu", "--no-progress"]
    assert bench.main([*argv, "--until", "150", "--out", str(out)]) == 0
    per_image = pd.read_csv(out / "per_image.csv")
    assert (per_image["snapshots"] == 7).all() and (per_image["iteration"] <= 150).all()
    oracle = per_image[per_image["judge"] == "oracle"].set_index("image")
    # a peaks at 160 (past the cap: its best so far is 140), b at 100, c rises to the end (140).
    assert oracle["iteration"].to_dict() == {"a": 140, "b": 100, "c": 140}
    last = per_image[per_image["judge"] == "last"].set_index("image")
    assert (last["iteration"] == 140).all() and last.loc["a", "gap"] == 0 and last.loc["b", "gap"] > 0
    assert "CC: 3 images from" in (text := (out / "summary.md").read_text())
    assert "7 snapshots each (those at or before iteration 150: --until)" in text and "--until 150" in text
    assert bench.main([*argv, "--until", "0", "--out", str(tmp_path / "none")]) == 1
    assert not (tmp_path / "none").exists()


def test_skipped_rows_are_noted_and_classical_methods_measured(bench, data, tmp_path):
    root, out = data["root"], tmp_path / "out"
    argv = [
        *runs_args(root),
        "--noisy",
        f"CC={root / 'CC' / 'real'}",
        "--clean",
        f"CC={root / 'CC' / 'mean'}",
        "--classical",
        "nlm",
        "--wmv-window",
        "100",
        "--no-progress",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(zip(summary["judge"], summary["dataset"], strict=True)) == [
        ("wmv", "CC"),
        ("wmv", "PolyU"),
        ("noise", "CC"),
        ("last", "CC"),
        ("last", "PolyU"),
        ("oracle", "CC"),
        ("oracle", "PolyU"),
        ("nlm", "CC"),
    ]
    text = (out / "summary.md").read_text()
    assert "biqan and seed recipe: skipped (no --biqan checkpoint given)" in text
    assert "noise on PolyU: skipped (no --noisy PolyU=FOLDER)" in text
    assert "nlm on PolyU: skipped (needs --noisy and --clean PolyU=FOLDER)" in text
    # A wmv window (100) longer than the 15 snapshots: said, not hidden.
    assert "wmv on CC: 3 image(s) have fewer snapshots than the window (100)" in text
    per_image = pd.read_csv(out / "per_image.csv")
    nlm = per_image[per_image["judge"] == "nlm"].set_index("image")
    noisy = read_image(root / "CC" / "real" / "a_real.png")[0]
    clean = read_image(root / "CC" / "mean" / "a_mean.png")[0]
    assert nlm.loc["a", "psnr"] == pytest.approx(bdn.psnr(clean, bdn.denoise(noisy, "nlm")))
    assert nlm["gap"].isna().all() and nlm.loc["a", "oracle_psnr"] == pytest.approx(data["best"]["CC"]["a"])
    row = summary[summary["judge"] == "nlm"].iloc[0]
    assert np.isnan(row.mean_gap) and row.chosen_psnr == pytest.approx(nlm["psnr"].mean())
    # --classical alone: both classical methods (bm3d takes seconds even on 32x32: not run here).
    assert bench.main([*runs_args(root, ("PolyU",)), "--classical", "--no-progress", "--out", str(out)]) == 0
    assert "nlm, bm3d on PolyU: skipped" in (out / "summary.md").read_text()


def test_bad_input_fails_in_one_line_before_writing(bench, data, tmp_path, capsys):
    root, out = data["root"], tmp_path / "out"
    cases = [
        (["--noisy", f"SIDD={root}"], "--noisy SIDD="),
        (["--wmv-window", "1"], "judge wmv: window must be an integer >= 2"),
        (["--biqan", str(tmp_path / "none.safetensors")], "no such BIQAN checkpoint"),
        (["--biqan-smooth", "lots"], "expected a number or none"),
    ]
    for extra, message in cases:
        assert bench.main([*runs_args(root, ("CC",)), *extra, "--no-progress", "--out", str(out)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("benchmarks/biqan_judges.py: error: ") and message in err[0]
    assert not out.exists()
