"""The BIQAN judge (biqan.judge) behind bdn's judge protocol, and offline replays of a run (bdn.judge_run).

Runs are made by hand (16x16 PNG snapshots + log.csv per image); the quality network is a stand-in whose mean score
grows with the mean brightness, so its choices are known in advance.
"""

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from bdn.cli import run_script
from bdn.dip.judges import NoiseJudge, WMVJudge, make_judge
from bdn.errors import BdnError
from bdn.io import read_image, write_image
from bdn.judge_run import judge_run
from bdn.metrics import psnr
from biqan.judge import BiqanJudge
from biqan.select import choose, score_run

main = partial(run_script, "judge", "bdn judge")

pytestmark = pytest.mark.usefixtures("torch_one_thread")
SAVE_ITER = 20
SIZE = 16


class Brightness(nn.Module):
    """Stand-in BIQAN: a softmax over scores 1..10 centred on 1 + 9 * mean brightness."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = 1.0 + 9.0 * x.mean(dim=(1, 2, 3))
        k = torch.arange(1, 11, dtype=x.dtype, device=x.device)
        return torch.softmax(-((k[None, :] - centre[:, None]) ** 2) / 2.0, dim=1)


def identity(image):
    return image


def biqan(**options) -> BiqanJudge:
    return BiqanJudge(Brightness(), transform=identity, **options)


def clean_image(colour: bool = False) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    grey = (0.2 + 0.6 * x * y).astype(np.float32)
    return np.stack([grey, grey * 0.9, grey * 0.8], -1) if colour else grey


def fake_run(root: Path, noise_levels: dict[str, list[float]], record_psnr: bool = True) -> tuple[Path, dict]:
    """A run whose snapshot t is clean + level_t * a fixed pattern (so its PSNR falls as the level grows), plus the
    clean and noisy images in folders named as bdn.data names them. Returns (run, {name: clean})."""
    run = root / "run"
    cleans = {}
    rng = np.random.default_rng(0)
    for name, levels in noise_levels.items():
        clean = clean_image(colour=name.endswith("c"))
        pattern = rng.standard_normal(clean.shape).astype(np.float32)
        write_image(root / "mean" / f"{name}_mean.png", clean)
        write_image(root / "real" / f"{name}_real.png", np.clip(clean + 0.1 * pattern, 0, 1))
        clean = read_image(root / "mean" / f"{name}_mean.png")[0]
        cleans[name] = clean
        folder = run / name
        lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
        for index, level in enumerate(levels):
            iteration = (index + 1) * SAVE_ITER
            path = write_image(folder / f"{iteration:05d}.png", np.clip(clean + level * pattern, 0, 1))
            value = f"{psnr(clean, read_image(path)[0]):.8f}" if record_psnr else ""
            lines.append(f"{iteration},{iteration:05d}.png,0.1,{value},,")
        (folder / "log.csv").write_text("\n".join(lines) + "\n")
    return run, cleans


LEVELS_A = [0.3, 0.2, 0.12, 0.06, 0.02, 0.04, 0.08, 0.1, 0.12, 0.14]  # the best at index 4 (iteration 100)
LEVELS_BC = [0.25, 0.1, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13]  # the best at index 2 (iteration 60)


@pytest.fixture
def run(tmp_path) -> Path:
    return fake_run(tmp_path, {"a": LEVELS_A, "bc": LEVELS_BC})[0]


def grey(level: int) -> np.ndarray:
    return np.full((SIZE, SIZE), level / 255.0, dtype=np.float32)


SPIKY = [40, 40, 40, 40, 40, 200, 40, 40, 40, 40, 160, 160, 160, 160, 40]


# --- the BIQAN judge --------------------------------------------------------------------------------------------


def test_biqan_judge_chooses_what_choose_chooses():
    for start_index, smooth, expected in ((0, None, 120), (6, None, 220), (0, 0.8, 280), (40, None, 120)):
        judge = biqan(start_index=start_index, smooth=smooth)
        assert judge.name == "biqan" and judge.source == "ema"
        for index, level in enumerate(SPIKY):
            assert judge.update((index + 1) * SAVE_ITER, grey(level)) is False
        assert judge.choice() == expected
        means = pd.DataFrame(
            {
                "image": "a",
                "iteration": [i for i, _, _ in judge.mean_scores],
                "mean": [m for _, m, _ in judge.mean_scores],
            }
        )
        chosen = choose(means, start_index, smooth)
        assert chosen == {"a": expected}
        assert [f for _, f in judge.scores] == pytest.approx(chosen.curves["a"][1].tolist(), rel=0, abs=1e-12)
        assert (judge.note is not None) == (start_index == 40)


def test_biqan_judge_with_tiles_scores_the_mean_over_the_grid():
    from biqan.select import default_transform, distribution_stats, score_images

    rng = np.random.default_rng(3)
    images = [rng.random((64, 64)).astype(np.float32) ** (k + 1) for k in range(6)]
    judge = BiqanJudge(Brightness(), protocol="native", crop=32, start_index=0, tiles=2)
    for index, image in enumerate(images):
        judge.update((index + 1) * SAVE_ITER, image)
    quantised = [np.rint(image * 255) / 255 for image in images]  # what run_BDN saves, and the judge scores
    expected, _ = distribution_stats(score_images(Brightness(), quantised, default_transform("native", 32, 2)))
    assert [m for _, m, _ in judge.mean_scores] == pytest.approx(expected.tolist(), abs=1e-5)
    centre, _ = distribution_stats(score_images(Brightness(), quantised, default_transform("native", 32)))
    assert not np.allclose(expected, centre, atol=1e-3)  # four crops, not the centre one
    assert judge.state()["options"]["tiles"] == 2 and "tiles" not in biqan().state()["options"]
    with pytest.raises(BdnError, match="tiles must be an integer >= 1"):
        BiqanJudge(Brightness(), tiles=0)


def test_biqan_judge_stops_after_patience_and_not_before_start_index():
    judge = biqan(start_index=3, patience=2)
    levels = [250, 250, 250, 10, 20, 30, 25, 28, 29]  # skipped: the first three; best after: 30 (index 5)
    stops = [judge.update(i + 1, grey(level)) for i, level in enumerate(levels)]
    assert stops == [False] * 7 + [True, True]  # 25 and 28 do not beat 30: two updates without a new best
    assert judge.choice() == 6
    with pytest.raises(BdnError, match="iterations must increase, got 9 after 9"):
        judge.update(9, grey(0))


def test_biqan_judge_scores_every_nth_iteration_and_quantises_tensors():
    judge = biqan(start_index=0, every=5)
    with pytest.raises(BdnError, match="no iterate seen yet"):
        judge.choice()
    judge.update(1, torch.full((1, 1, SIZE, SIZE), 0.9))
    assert judge.scores == [] and judge.choice() == 1 and judge.latest_choice == 1  # nothing scored: the newest
    for iteration in range(2, 16):
        level = 0.5 if iteration != 10 else 0.8
        judge.update(iteration, torch.full((3, SIZE, SIZE), level + 0.001))  # (C, H, W) on the device
    assert [i for i, _ in judge.scores] == [5, 10, 15]
    assert judge.choice() == 10
    # The iterate was scored as the 8-bit PNG run_BDN saves: round(0.801 * 255) / 255.
    centre = torch.tensor(1 + 9 * round(0.801 * 255) / 255)
    p = torch.softmax(-((torch.arange(1, 11) - centre) ** 2) / 2.0, dim=0).double()
    assert judge.mean_scores[1][1] == pytest.approx(float((p * torch.arange(1, 11)).sum()), abs=1e-4)  # 0.801: 8.185


def test_biqan_judge_state_round_trip_resumes_exactly(tmp_path):
    options = {"start_index": 2, "smooth": 0.8, "patience": 3}
    whole = biqan(**options)
    stops = [whole.update(i + 1, grey(level)) for i, level in enumerate(SPIKY)]
    first = biqan(**options)
    for i, level in enumerate(SPIKY[:7]):
        first.update(i + 1, grey(level))
    torch.save(first.state(), tmp_path / "state.pt")
    resumed = biqan(**options)
    resumed.load_state(torch.load(tmp_path / "state.pt", weights_only=True), torch.device("cpu"))
    assert resumed.choice() == first.choice() and resumed.scores == first.scores
    later = [resumed.update(i + 1, grey(level)) for i, level in enumerate(SPIKY) if i >= 7]
    assert later == stops[7:]
    assert resumed.choice() == whole.choice() and resumed.scores == whole.scores and resumed.stopped == whole.stopped

    with pytest.raises(BdnError, match="judge biqan: the saved state was made with"):
        biqan(start_index=3).load_state(first.state(), torch.device("cpu"))
    with pytest.raises(BdnError, match="judge biqan: the saved state is not this judge's"):
        biqan(**options).load_state(WMVJudge(window=2).state(), torch.device("cpu"))
    damaged = {**first.state(), "rows": torch.zeros(3)}
    with pytest.raises(BdnError, match="judge biqan: the saved state is damaged"):
        biqan(**options).load_state(damaged, torch.device("cpu"))


def test_make_judge_knows_biqan(monkeypatch):
    judge = make_judge("biqan", model=Brightness(), transform=identity, start_index=0)
    assert isinstance(judge, BiqanJudge)
    assert make_judge("biqan").model is not None  # without a model: the one that ships with bdn
    monkeypatch.setattr("bdn.tensorfile.shipped_files", lambda prefix: {})
    with pytest.raises(BdnError, match="no BIQAN ships with this install"):
        make_judge("biqan")
    with pytest.raises(BdnError, match="judge biqan: .*unexpected keyword argument 'window'"):
        make_judge("biqan", model=Brightness(), window=3)
    with pytest.raises(BdnError, match="judge biqan: patience must be an integer >= 1, got 0"):
        make_judge("biqan", model=Brightness(), patience=0)
    with pytest.raises(BdnError, match="unknown judge 'nima': choose one of oracle, wmv, emv, noise, none, biqan"):
        make_judge("nima")


# --- offline replays ------------------------------------------------------------------------------------------


def test_judge_run_oracle_picks_the_best_snapshot_and_writes_the_choice(run):
    assert not (run / "a" / "choice.json").exists()
    table = judge_run(run, "oracle")
    assert not (run / "a" / "choice.json").exists()  # the fit's record stays unless asked
    table = judge_run(run, "oracle", write=True)
    assert table["image"].tolist() == ["a", "bc"]
    assert table["iteration"].tolist() == [100, 60] and table["judge_iteration"].tolist() == [100, 60]
    assert table["oracle_iteration"].tolist() == [100, 60]
    assert table["gap"].tolist() == [0.0, 0.0]
    assert table["stopped_at"].isna().all() and table["snapshots"].tolist() == [10, 8]
    for name, iteration in (("a", 100), ("bc", 60)):
        record = json.loads((run / name / "choice.json").read_text())
        assert (
            record["judge"] == "oracle"
            and record["iteration"] == iteration
            and record["file"] == f"{iteration:05d}.png"
        )
        assert record["score"] == pytest.approx(table.set_index("image").loc[name, "psnr"])
        assert (run / name / "result.png").read_bytes() == (run / name / f"{iteration:05d}.png").read_bytes()
    # With the clean images, bdn's OracleJudge measures the snapshots itself: the same choice and PSNRs.
    measured = judge_run(run, "oracle", clean_path=run.parent / "mean", write=False)
    assert measured["iteration"].tolist() == [100, 60]
    assert measured["psnr"].tolist() == pytest.approx(table["psnr"].tolist(), abs=1e-6)


def test_judge_run_without_recorded_psnr_measures_against_clean_images(tmp_path):
    run, cleans = fake_run(tmp_path, {"a": LEVELS_A}, record_psnr=False)
    with pytest.raises(BdnError, match="a: the run recorded no PSNR .*the oracle needs clean_path"):
        judge_run(run, "oracle")
    table = judge_run(run, "wmv", clean_path=tmp_path / "mean", window=3, patience=100)
    assert table.loc[0, "oracle_iteration"] == 100
    chosen = read_image(run / "a" / f"{table.loc[0, 'iteration']:05d}.png")[0]
    assert table.loc[0, "psnr"] == pytest.approx(psnr(cleans["a"], chosen))


def test_judge_run_wmv_replays_the_snapshots_and_stops_where_the_judge_says(run):
    table = judge_run(run, "wmv", window=3, patience=2, write=True)
    assert table["stopped_at"].tolist()[0] == 160 and pd.isna(table["stopped_at"].tolist()[1])  # a stops, bc not
    for row in table.itertuples():
        judge = WMVJudge(window=3, patience=2)
        stopped = None
        for path in sorted((run / row.image).glob("0*.png")):
            if judge.update(int(path.stem), read_image(path)[0]):
                stopped = int(path.stem)
                break
        assert row.judge_iteration == judge.choice() and row.iteration == judge.choice()
        assert (None if pd.isna(row.stopped_at) else row.stopped_at) == stopped
        assert row.score == pytest.approx(dict(judge.variances)[judge.choice()])
        assert row.gap == pytest.approx(row.oracle_psnr - row.psnr)
        assert json.loads((run / row.image / "choice.json").read_text())["judge"] == "wmv"


def test_judge_run_noise_needs_and_uses_the_noisy_images(run):
    with pytest.raises(BdnError, match=r"judge noise: needs the noisy images the run fitted \(noisy_path\)"):
        judge_run(run, "noise")
    table = judge_run(run, "noise", noisy_path=run.parent / "real", sigma=0.05 * 255, write=False)
    noisy = read_image(run.parent / "real" / "a_real.png")[0]
    judge = NoiseJudge(noisy=noisy, sigma=0.05 * 255)
    for path in sorted((run / "a").glob("0*.png")):
        judge.update(int(path.stem), read_image(path)[0])
    assert table.loc[0, "judge_iteration"] == judge.choice()
    assert not (run / "a" / "choice.json").exists()  # write=False


def test_judge_run_biqan_equals_test_biqans_choice(tmp_path):
    run = tmp_path / "run"
    for name, levels in (("a", SPIKY), ("b", SPIKY[::-1])):
        lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
        for index, level in enumerate(levels):
            iteration = (index + 1) * SAVE_ITER
            write_image(run / name / f"{iteration:05d}.png", grey(level))
            lines.append(f"{iteration},{iteration:05d}.png,0.1,{20 + index},,")
        (run / name / "log.csv").write_text("\n".join(lines) + "\n")
    options = {"model": Brightness(), "transform": identity, "start_index": 6, "smooth": 0.8}
    table = judge_run(run, "biqan", write=True, **options)
    expected = choose(score_run(Brightness(), run, transform=identity), 6, 0.8)
    assert dict(zip(table["image"], table["iteration"], strict=True)) == expected
    assert table["score"].tolist() == pytest.approx([expected.figures["a"], expected.figures["b"]])
    assert table["oracle_iteration"].tolist() == [300, 300]  # the recorded PSNR rises to the last snapshot
    assert json.loads((run / "a" / "choice.json").read_text())["judge"] == "biqan"


def test_judge_run_until_replays_the_run_as_if_its_fits_stopped_there(run, capsys):
    # a's best snapshot is at 100, bc's at 60: capped at 80, a's best so far is 80 and bc's stays 60.
    table = judge_run(run, "oracle", until=80)
    assert table["snapshots"].tolist() == [4, 4] and table["oracle_iteration"].tolist() == [80, 60]
    last = judge_run(run, "none", until=90)  # no snapshot at 90: the last one before it
    assert last["iteration"].tolist() == [80, 80] and last["gap"].tolist()[1] > 0
    assert judge_run(run, "oracle", until=10_000)["oracle_iteration"].tolist() == [100, 60]
    with pytest.raises(BdnError, match="until: an iteration >= 1, got 0"):
        judge_run(run, "oracle", until=0)
    with pytest.raises(BdnError, match="no snapshots"):
        judge_run(run, "oracle", until=10)  # before the first snapshot
    assert main(["--run-path", str(run), "--judge", "oracle", "--until", "40", "--no-progress"]) == 0
    assert "| a " in capsys.readouterr().out
    assert main(["--run-path", str(run), "--judge", "oracle", "--until", "0", "--no-progress"]) == 1
    assert "until: an iteration >= 1, got 0" in capsys.readouterr().err
    assert not (run / "a" / "choice.json").exists()


def test_judge_run_bad_input(run, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BdnError, match="no run_BDN image folders in"):
        judge_run(tmp_path / "empty", "wmv")
    with pytest.raises(BdnError, match="unknown judge 'best'"):
        judge_run(run, "best")
    with pytest.raises(BdnError, match="judge wmv: window must be an integer >= 2"):
        judge_run(run, "wmv", window=1)
    with pytest.raises(BdnError, match="no noisy image for bc"):
        lonely = tmp_path / "lonely"
        write_image(lonely / "a_real.png", grey(10))
        judge_run(run, "noise", noisy_path=lonely)
    assert not (run / "a" / "choice.json").exists()  # nothing written by any of them


def test_main_prints_the_table_and_fails_in_one_line(run, capsys):
    assert main(["--run_path", str(run), "--judge", "oracle", "--no-progress"]) == 0
    assert not (run / "a" / "choice.json").exists()
    assert main(["--run_path", str(run), "--judge", "oracle", "--no-progress", "--write"]) == 0
    assert json.loads((run / "a" / "choice.json").read_text())["judge"] == "oracle"
    out = capsys.readouterr().out
    assert "| a " in out and "mean gap 0.000 dB, worst 0.000 dB" in out
    assert (
        main(
            [
                "--run_path",
                str(run),
                "--judge",
                "wmv",
                "--option",
                "window=3",
                "--option",
                "patience=2",
                "--no-progress",
                "--output",
                str(run / "wmv.csv"),
            ]
        )
        == 0
    )
    assert pd.read_csv(run / "wmv.csv")["judge"].tolist() == ["wmv", "wmv"]
    capsys.readouterr()
    assert main(["--run_path", str(run), "--judge", "wmv", "--option", "window"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bdn judge: error: ") and "KEY=VALUE" in err[0]
