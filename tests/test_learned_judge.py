"""The learned judge (biqan/combined.py): its features, online and offline, its weights file, its fitting script."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bdn.dip.judges import NEEDS_NOISY, WMVJudge, make_judge
from bdn.errors import BdnError
from bdn.io import write_image
from bdn.judge_run import judge_run
from biqan.combined import FEATURES, CombinedJudge, feature_table, load_weights

pytestmark = pytest.mark.usefixtures("torch_one_thread")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


class Brightness(nn.Module):
    """Stand-in BIQAN: a softmax over scores 1..10 centred on 1 + 9 * mean brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = 1.0 + 9.0 * x.mean(dim=(1, 2, 3))
        k = torch.arange(1, 11, dtype=x.dtype, device=x.device)
        return torch.softmax(-((k[None, :] - centre[:, None]) ** 2) / 2.0, dim=1)


def weights_file(tmp_path: Path, weights=(-0.4, 1.2, -0.6, 0.5, -0.2), bias=-0.1) -> Path:
    path = tmp_path / "judge.json"
    path.write_text(json.dumps({"features": list(FEATURES), "weights": list(weights), "bias": bias}))
    return path


def test_feature_table_by_hand():
    residuals = np.array([4e-3, 2e-3, 1e-3, 5e-4, 4e-4])
    variances = np.array([np.nan, np.nan, 3e-5, 2e-5, 6e-5])
    means = np.array([5.0, 6.0, 5.5, 7.0, 6.5])
    table = feature_table(residuals, 5.1, variances, means)
    assert table.shape == (5, len(FEATURES))
    rho, slope, wmv, rel, trend = table.T
    assert rho == pytest.approx(np.log(residuals) - 2 * math.log(5.1 / 255))
    assert slope.tolist() == pytest.approx([0, 0, 0, math.log(5e-4 / 4e-3), math.log(4e-4 / 2e-3)])
    assert wmv.tolist() == pytest.approx([0, 0, 0, 0, math.log(6e-5 / 2e-5)])  # 0 before a window, at a minimum
    assert rel.tolist() == pytest.approx([0, 0, -0.5, 0, -0.5])
    assert trend.tolist() == pytest.approx([0, 0, 0, 2.0, 0.5])
    assert np.isfinite(feature_table(residuals, 5.1, variances, np.full(5, np.nan))).all()  # no BIQAN: zeros


def test_online_judge_predicts_from_its_parts_figures(tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (24, 24, 3)).astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.05, clean.shape), 0, 1).astype(np.float32)
    path = weights_file(tmp_path)
    judge = make_judge("learned", noisy=noisy, weights=path, sigma=12.0, every=5, model=Brightness())
    assert isinstance(judge, CombinedJudge) and "learned" in NEEDS_NOISY
    wmv = WMVJudge(window=3, patience=10**9, stride=5, source="ema")
    residuals, means, iterates = [], [], []
    for step in range(1, 41):
        t = step / 40
        image = np.clip((1 - t) * 0.5 + t * noisy + 0.02 * np.sin(step), 0, 1).astype(np.float32)
        judge.update(step, image)
        if step % 5 == 0:
            iterates.append(step)
            residuals.append(float(np.mean((image.astype(np.float64) - noisy) ** 2)))
            eight_bit = torch.from_numpy(np.rint(image * 255) / 255).float().permute(2, 0, 1)[None]  # as scored
            means.append(float(Brightness()(eight_bit)[0].numpy() @ np.arange(1, 11)))
            wmv.update(step, image)
    variances = dict(wmv.variances)
    table = feature_table(np.array(residuals), 12.0, np.array([variances.get(i, np.nan) for i in iterates]), means)
    model = load_weights(path)
    expected = table @ np.array(model["weights"]) + model["bias"]
    assert [i for i, _ in judge.scores] == iterates
    assert [p for _, p in judge.scores] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-4)
    assert judge.choice() == iterates[int(np.argmax(expected))] == judge.latest_choice
    # Resumed from its state, it goes on as it would have.
    again = make_judge("learned", noisy=noisy, weights=path, sigma=12.0, every=5, model=Brightness())
    again.load_state(judge.state(), torch.device("cpu"))
    assert again.scores == judge.scores and again.choice() == judge.choice()


def test_patience_stops_and_bad_options_are_one_line(tmp_path):
    noisy = np.full((16, 16), 0.5, np.float32)
    judge = CombinedJudge(
        noisy, weights=weights_file(tmp_path, weights=(0, 0, 0, 0, 0)), sigma=5.0, patience=2, model=Brightness()
    )
    stops = [judge.update(i, noisy) for i in (1, 2, 3)]
    assert stops == [False, False, True] and judge.choice() == 1  # equal predictions: the first
    with pytest.raises(BdnError, match="judge learned: needs the noisy image"):
        CombinedJudge(None, model=Brightness())
    with pytest.raises(BdnError, match="judge learned: patience must be"):
        CombinedJudge(noisy, sigma=5.0, patience=0, model=Brightness())
    (tmp_path / "bad.json").write_text(json.dumps({"features": ["rho"], "weights": [1.0], "bias": 0}))
    with pytest.raises(BdnError, match="bad.json: not a learned judge's weights"):
        CombinedJudge(noisy, weights=tmp_path / "bad.json", sigma=5.0, model=Brightness())
    with pytest.raises(BdnError, match="judge learned: the saved state is damaged"):
        judge.load_state({"judge": "noise"}, torch.device("cpu"))


def test_shipped_weights_load():
    model = load_weights()
    assert model["features"] == list(FEATURES) and len(model["weights"]) == len(FEATURES)
    assert "PolyU-train" in model["trained_on"]


def test_judge_run_replays_the_learned_judge(tmp_path):
    rng = np.random.default_rng(1)
    clean = rng.uniform(0.2, 0.8, (32, 32)).astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1)
    write_image(tmp_path / "real" / "a_real.png", noisy)
    lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
    for index, level in enumerate((0.6, 0.3, 0.1, 0.05, 0.3, 0.6)):
        iteration = 20 * (index + 1)
        snapshot = np.clip(level * noisy + (1 - level) * clean, 0, 1)
        write_image(tmp_path / "run" / "a" / f"{iteration:05d}.png", snapshot)
        lines.append(f"{iteration},{iteration:05d}.png,0.1,{30 - 10 * level},,")
    (tmp_path / "run" / "a" / "log.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(BdnError, match="judge learned: needs the noisy images the run fitted"):
        judge_run(tmp_path / "run", "learned")
    table = judge_run(tmp_path / "run", "learned", noisy_path=tmp_path / "real", model=Brightness(), sigma=25.0)
    assert table.loc[0, "judge"] == "learned" and table.loc[0, "iteration"] in (20, 40, 60, 80, 100, 120)
    assert table.loc[0, "gap"] >= 0


def test_fitting_script_writes_weights_the_judge_loads(tmp_path, capsys):
    from learned_judge import main

    rng = np.random.default_rng(2)
    rows = []
    for dataset in ("PolyU-train", "CC"):
        for image in ("x", "y", "z"):
            peak = rng.integers(10, 30)
            for k in range(40):
                rows.append(
                    {
                        "dataset": dataset,
                        "image": image,
                        "iteration": 20 * (k + 1),
                        "psnr": 35 - 0.01 * (k - peak) ** 2,
                        "mse_noisy": 0.01 * math.exp(-k / 10) + 1e-4,
                        "sigma": 5.0,
                        "var3": np.nan if k < 2 else 1e-5 * (1 + 0.01 * (k - peak) ** 2),
                        "biqan_mean": 6 - 0.001 * (k - peak) ** 2,
                    }
                )
    pd.DataFrame(rows).to_csv(tmp_path / "stats.csv", index=False)
    out = tmp_path / "out"
    argv = ["--stats", str(tmp_path / "stats.csv"), "--out", str(out), "--weights", str(tmp_path / "w.json")]
    assert main(argv) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["dataset"]) == {"PolyU-train", "CC"} and (summary["mean_gap"] >= 0).all()
    assert load_weights(tmp_path / "w.json")["trained_on"].startswith("PolyU-train rows of stats.csv")
    assert main(["--stats", str(tmp_path / "stats.csv"), "--tune", "Nope", "--out", str(out)]) == 1
    assert "--tune Nope: no such dataset" in capsys.readouterr().err
    both = ["--stats", str(tmp_path / "stats.csv"), "--tune", "PolyU-train", "CC", "--out", str(out)]
    assert main([*both, "--weights", str(tmp_path / "both.json")]) == 0  # several datasets pooled
    assert load_weights(tmp_path / "both.json")["trained_on"].startswith("PolyU-train + CC rows of stats.csv")
    assert load_weights(tmp_path / "both.json")["weights"] != load_weights(tmp_path / "w.json")["weights"]
    assert main([*argv, "--patience", "3", "--cv"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["judge"]) == {"learned", "learned without BIQAN", "learned (CV)", "learned without BIQAN (CV)"}
    assert set(summary.loc[summary["judge"].str.endswith("(CV)"), "dataset"]) == {"PolyU-train"}  # only --tune's
    # --until: the fits as they stood at iteration 400 (20 snapshots of 40)
    assert main([*argv, "--until", "400"]) == 0
    until = pd.read_csv(out / "summary.csv").set_index(["judge", "dataset"])
    early = pd.DataFrame(rows).query("iteration <= 400").groupby(["dataset", "image"])["psnr"].max()
    assert until.loc[("learned", "CC"), "oracle_psnr"] == pytest.approx(early["CC"].mean())
    assert early["CC"].mean() < pd.DataFrame(rows).groupby(["dataset", "image"])["psnr"].max()["CC"].mean()
    assert main(["--stats", str(tmp_path / "stats.csv"), "--until", "0", "--out", str(out)]) == 1
    assert "--until: must be >= 1, got 0" in capsys.readouterr().err


def test_replay_with_patience_stops_as_the_judge_does():
    from learned_judge import replay

    rows = pd.DataFrame({"dataset": "d", "image": "a", "iteration": [20, 40, 60, 80, 100]})
    for name in FEATURES:
        rows[name] = 0.0
    rows["rho"] = [0.0, 1.0, 0.5, 0.4, 2.0]  # the prediction, with weight 1 on rho
    rows["psnr"] = [30.0, 33.0, 32.0, 31.0, 34.0]
    rows["gap"] = rows["psnr"].max() - rows["psnr"]
    weights = np.array([1.0] + [0.0] * (len(FEATURES) - 1))
    assert replay(rows, weights, 0.0)["iteration"].tolist() == [100]  # no stop: the best of all
    assert replay(rows, weights, 0.0, patience=2)["iteration"].tolist() == [40]  # two without a better one: stop
    assert replay(rows, weights, 0.0, patience=3)["iteration"].tolist() == [100]
