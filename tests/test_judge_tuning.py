"""benchmarks/snapshot_features.py and benchmarks/judge_tuning.py on hand-made runs (48x48 colour PNG snapshots +
log.csv): the table's figures are the judges' own, and the snapshot replay chooses what bdn.judge_run chooses."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bdn.dip.judges import WMVJudge
from bdn.io import read_image, write_image
from bdn.judge_run import judge_run
from bdn.metrics import psnr

pytestmark = pytest.mark.usefixtures("torch_one_thread")
BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
SIZE, SAVE_ITER = 48, 25
# snapshot t = clean + level_t * pattern: the PSNR peaks where the level is least
LEVELS = {
    "a": [0.30, 0.22, 0.15, 0.10, 0.06, 0.04, 0.03, 0.035, 0.05, 0.07, 0.09, 0.11],
    "b": [0.30, 0.18, 0.09, 0.05, 0.03, 0.04, 0.06, 0.08, 0.10, 0.12, 0.14, 0.16],
}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    yield load("snapshot_features"), load("judge_tuning")
    for name in ("bench_snapshot_features", "bench_judge_tuning"):
        sys.modules.pop(name, None)


def make_dataset(root: Path, seed: int) -> Path:
    """root/run (<image>/<iter:05d>.png + log.csv with the 8-bit PSNR), root/real, root/mean; returns root."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    for name, levels in LEVELS.items():
        grey = 0.2 + 0.6 * x * y
        clean = np.stack([grey, grey * 0.9, grey * 0.8], -1).astype(np.float32)
        pattern = rng.standard_normal(clean.shape).astype(np.float32)
        write_image(root / "mean" / f"{name}_mean.png", clean)
        write_image(root / "real" / f"{name}_real.png", np.clip(clean + 0.08 * pattern, 0, 1))
        clean = read_image(root / "mean" / f"{name}_mean.png")[0]
        lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
        for index, level in enumerate(levels):
            iteration = (index + 1) * SAVE_ITER
            path = write_image(root / "run" / name / f"{iteration:05d}.png", np.clip(clean + level * pattern, 0, 1))
            lines.append(f"{iteration},{iteration:05d}.png,0.1,{psnr(clean, read_image(path)[0]):.8f},,")
        (root / "run" / name / "log.csv").write_text("\n".join(lines) + "\n")
    return root


def fake_scores(run: Path, out: Path) -> Path:
    """A test_BIQAN-like scores.csv whose mean score is the negated level: the best where the PSNR is."""
    rows = [
        (name, (k + 1) * SAVE_ITER, 10.0 - 20.0 * level, 0.5)
        for name, levels in LEVELS.items()
        for k, level in enumerate(levels)
    ]
    pd.DataFrame(rows, columns=["image", "iteration", "mean", "std"]).to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory, scripts):
    features, _ = scripts
    root = tmp_path_factory.mktemp("judges")
    train, test = make_dataset(root / "train", 0), make_dataset(root / "test", 1)
    out = root / "stats.csv.gz"
    argv = ["--runs", f"T={train / 'run'}", f"X={test / 'run'}", "--noisy", f"T={train / 'real'}", f"X={test / 'real'}"]
    argv += [
        "--scores",
        f"T={fake_scores(train / 'run', root / 'st.csv')}",
        f"X={fake_scores(test / 'run', root / 'sx.csv')}",
    ]
    assert features.main([*argv, "--windows", "3", "5", "--workers", "1", "--out", str(out)]) == 0
    return {"root": root, "train": train, "test": test, "stats": pd.read_csv(out), "path": out}


def test_the_table_holds_the_judges_own_figures(table):
    stats, run = table["stats"], table["train"] / "run"
    a = stats[(stats["dataset"] == "T") & (stats["image"] == "a")].sort_values("iteration")
    assert a["iteration"].tolist() == [(k + 1) * SAVE_ITER for k in range(12)]
    snapshots = [read_image(p)[0] for p in sorted((run / "a").glob("0*.png"))]
    noisy = read_image(table["train"] / "real" / "a_real.png")[0]
    np.testing.assert_allclose(a["mse_noisy"], [np.mean((s - noisy) ** 2) for s in snapshots], rtol=1e-5)
    judge = WMVJudge(window=3, patience=1000)
    for iteration, image in zip(a["iteration"], snapshots, strict=True):
        judge.update(int(iteration), image)
    np.testing.assert_allclose(a["var3"].dropna(), [v for _, v in judge.variances], rtol=1e-5)
    assert a["var3"].isna().sum() == 2 and a["var5"].isna().sum() == 4
    assert a["biqan_mean"].iloc[0] == pytest.approx(10.0 - 20.0 * 0.30)


def test_the_replay_chooses_what_judge_run_chooses(table, scripts):
    _, tuning = scripts
    stats, run = table["stats"], table["train"] / "run"
    for name, group in stats[stats["dataset"] == "T"].groupby("image"):
        g = group.sort_values("iteration").reset_index(drop=True)
        wmv = judge_run(run, "wmv", window=3, patience=2, write=False).set_index("image")
        assert g["iteration"].iloc[tuning.wmv_choice(g, 3, 2)] == wmv.loc[name, "judge_iteration"]
        noise = judge_run(run, "noise", noisy_path=table["train"] / "real", factor=1.1, write=False).set_index("image")
        assert g["iteration"].iloc[tuning.noise_choice(g, 1.1)] == noise.loc[name, "judge_iteration"]
        # the stand-in scores peak where the PSNR does
        assert g["psnr"].iloc[tuning.biqan_choice(g, 0, None)] == g["psnr"].max()


def test_settings_are_chosen_on_the_tuning_set_alone(table, scripts, tmp_path):
    _, tuning = scripts
    out = tmp_path / "tuning"
    assert tuning.main(["--stats", str(table["path"]), "--tune", "T", "--out", str(out)]) == 0
    sweep, summary = pd.read_csv(out / "sweep.csv"), pd.read_csv(out / "summary.csv")
    for family, picked in summary[summary["dataset"] == "T"].groupby("family"):
        on_tune = sweep[(sweep["family"] == family) & (sweep["dataset"] == "T")]
        assert picked["mean_gap"].iloc[0] == pytest.approx(on_tune["mean_gap"].min())
        # the test set gets that same setting, whatever would have been best there
        assert (
            summary[(summary["family"] == family) & (summary["dataset"] == "X")]["settings"].tolist()
            == picked["settings"].tolist()
        )
    fixed = {"last snapshot", "noise as bdn's default", "wmv as shipped", "seed recipe", "biqan shipped default"}
    assert set(summary["family"]) == fixed | {"noise", "wmv", "biqan"}
    default = summary[summary["family"] == "noise as bdn's default"].set_index("dataset")
    at_one = sweep[(sweep["family"] == "noise") & (sweep["settings"] == "factor 1.00")].set_index("dataset")
    assert default.loc["X", "mean_gap"] == pytest.approx(at_one.loc["X", "mean_gap"])
    last = summary[summary["family"] == "last snapshot"].set_index("dataset")
    stats = table["stats"]
    final = stats.sort_values("iteration").groupby(["dataset", "image"]).tail(1)
    assert last.loc["X", "chosen_psnr"] == pytest.approx(final[final["dataset"] == "X"]["psnr"].mean())
    # BIQAN's Spearman: the stand-in score is the negated level, so its ranks are the PSNR's
    ranks = pd.read_csv(out / "spearman.csv").set_index("dataset")
    assert ranks.loc["X", "images"] == 2 and ranks.loc["X", "mean"] == pytest.approx(1.0)
    assert "BIQAN's score vs PSNR (Spearman" in (out / "summary.md").read_text()
    assert "X | 2 |" in (out / "summary.md").read_text() and "T (tuning set)" in (out / "summary.md").read_text()


def test_until_replays_the_fits_as_they_stood_then(table, scripts, tmp_path):
    _, tuning = scripts
    out = tmp_path / "until"
    assert tuning.main(["--stats", str(table["path"]), "--tune", "T", "--until", "150", "--out", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv").set_index(["family", "dataset"])
    stats = table["stats"]
    early = stats[stats["iteration"] <= 150]
    best = early.groupby(["dataset", "image"])["psnr"].max()
    assert summary.loc[("last snapshot", "T"), "oracle_psnr"] == pytest.approx(best["T"].mean())
    last = early[early["iteration"] == 150].set_index(["dataset", "image"])["psnr"]
    assert summary.loc[("last snapshot", "T"), "chosen_psnr"] == pytest.approx(last["T"].mean())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stats", "missing.csv"], "missing.csv: no such table"),
        (["--until", "0"], "--until: must be >= 1, got 0"),
        (["--tune", "Z"], "--tune Z: not a dataset of"),
    ],
)
def test_bad_input_is_one_line(table, scripts, tmp_path, capsys, argv, message):
    _, tuning = scripts
    if argv[0] in ("--tune", "--until"):
        argv = ["--stats", str(table["path"]), *argv]
    assert tuning.main([*argv, "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_features_bad_input_is_one_line(table, scripts, tmp_path, capsys):
    features, _ = scripts
    run = table["train"] / "run"
    assert features.main(["--runs", f"T={run}", "--noisy", f"Q={run}", "--out", str(tmp_path / "s.csv")]) == 1
    assert "--noisy Q=...: no --runs Q=FOLDER" in capsys.readouterr().err
    other = tmp_path / "other"
    write_image(other / "z_real.png", np.zeros((8, 8), np.float32))
    assert features.main(["--runs", f"T={run}", "--noisy", f"T={other}", "--out", str(tmp_path / "s.csv")]) == 1
    assert "no noisy image for a (2 of 2 missing)" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()


def test_merge_grows_one_table_across_machines_and_never_mixes_two_biqans(table, scripts, tmp_path, capsys):
    features, _ = scripts
    out = tmp_path / "kept.csv.gz"
    train, test = table["train"], table["test"]
    first = ["--runs", f"T={train / 'run'}", "--noisy", f"T={train / 'real'}"]
    first += ["--scores", f"T={fake_scores(train / 'run', tmp_path / 'st.csv')}", "--scored-by", "biqan A"]
    assert features.main([*first, "--windows", "3", "--workers", "1", "--merge", "--out", str(out)]) == 0
    # another machine holds only X's runs: with --merge the T rows stay, without it they go
    second = ["--runs", f"X={test / 'run'}", "--noisy", f"X={test / 'real'}", "--windows", "3", "--workers", "1"]
    scored = ["--scores", f"X={fake_scores(test / 'run', tmp_path / 'sx.csv')}"]
    assert features.main([*second, *scored, "--scored-by", "biqan A", "--merge", "--out", str(out)]) == 0
    kept = pd.read_csv(out)
    assert kept.groupby("dataset")["image"].nunique().to_dict() == {"T": 2, "X": 2}
    assert set(kept["scored_by"]) == {"biqan A"} and len(kept) == 4 * len(LEVELS["a"])
    # X again (its fits made anew): its rows are replaced, not doubled
    assert features.main([*second, *scored, "--scored-by", "biqan A", "--merge", "--out", str(out)]) == 0
    assert pd.read_csv(out).equals(kept)
    # scores of another BIQAN are refused, and the table is left as it was
    assert features.main([*second, *scored, "--scored-by", "biqan B", "--merge", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "its BIQAN scores are by biqan A, these by biqan B" in err and len(err.strip().splitlines()) == 1
    assert pd.read_csv(out).equals(kept)
    # --scored-only: an image that finished after the scoring waits for the next call
    only_a = tmp_path / "sa.csv"
    pd.read_csv(tmp_path / "sx.csv").query("image == 'a'").to_csv(only_a, index=False)
    part = tmp_path / "part.csv"
    assert features.main([*second, "--scores", f"X={only_a}", "--out", str(part)]) == 1  # b has no score
    assert features.main([*second, "--scores", f"X={only_a}", "--scored-only", "--out", str(part)]) == 0
    assert set(pd.read_csv(part)["image"]) == {"a"}
    assert features.main([*second, "--out", str(out)]) == 0  # no --merge: a new table
    assert set(pd.read_csv(out)["dataset"]) == {"X"}
