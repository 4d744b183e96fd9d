"""biqan.select and test_BIQAN.py: scoring a run, choosing iterates (start_index, the seed's smoothing), the gaps
to the oracle, Denoised_PSNR.txt and every file written, and bad input.

Runs are made by hand (a few 16x16 PNG snapshots and a log.csv per image, as run_BDN writes them), and the quality
network is a stand-in whose mean score grows with the image's mean brightness, so every choice is known in
advance. One test uses helper B's real BIQAN (biqan.model) where it exists.
"""

import json
import runpy
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import biqan.cli.select as select_command
import biqan.select as select
from bdn.cli import build_parser, run_script
from bdn.dip.runfolder import fit_to, partner_images
from bdn.errors import BdnError
from bdn.io import read_image, write_image
from biqan.select import (
    choose,
    distribution_stats,
    gap_summary,
    gaps,
    pick,
    score_run,
    smooth_scores,
)

main = partial(run_script, "select", "test_BIQAN.py")
pytestmark = pytest.mark.usefixtures("torch_one_thread")
PROJECT = Path(__file__).resolve().parent.parent
SAVE_ITER = 20


class Brightness(nn.Module):
    """Stand-in BIQAN: a softmax over scores 1..10 centred on 1 + 9 * mean brightness (mean score increases with it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = 1.0 + 9.0 * x.mean(dim=(1, 2, 3))
        k = torch.arange(1, 11, dtype=x.dtype)
        return torch.softmax(-((k[None, :] - centre[:, None]) ** 2) / 2.0, dim=1)


class Logits(nn.Module):
    """A network without the softmax: three numbers per image, not a distribution over ten scores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


def identity(image):
    return image


def make_run(
    root: Path,
    images: dict[str, list[int]],
    psnrs: dict[str, list[float]] | None = None,
    txt: dict[str, list[float]] | None = None,
    colour: tuple[str, ...] = (),
    size: int = 16,
) -> Path:
    """A run_BDN output folder by hand: per image, one uniform snapshot per brightness level (0..255) every
    SAVE_ITER iterations, a log.csv (one row every SAVE_ITER / 2 iterations, PSNR where given) and, where given,
    the seed's <image>.txt with the 8-bit snapshots' PSNR."""
    run = root / "run"
    for name, levels in images.items():
        folder = run / name
        folder.mkdir(parents=True)
        lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
        for index, level in enumerate(levels):
            iteration = (index + 1) * SAVE_ITER
            shape = (size, size, 3) if name in colour else (size, size)
            write_image(folder / f"{iteration:05d}.png", np.full(shape, level / 255.0, dtype=np.float32))
            psnr = "" if psnrs is None or name not in psnrs else f"{psnrs[name][index]:.6f}"
            lines.append(f"{iteration - SAVE_ITER // 2},,0.5,{psnr},,{psnr}")
            lines.append(f"{iteration},{iteration:05d}.png,0.5,{psnr},0.9,{psnr}")
        (folder / "log.csv").write_text("\n".join(lines) + "\n")
        if txt is not None and name in txt:
            rows = [f"{name}/{(i + 1) * SAVE_ITER:05d}.png {p:.6f} 0.9" for i, p in enumerate(txt[name])]
            (run / f"{name}.txt").write_text("\n".join(rows) + "\n")
    return run


# Brightness levels over 15 snapshots (iterations 20..300): a spike at index 5, a plateau at 10..13.
SPIKY = [40, 40, 40, 40, 40, 200, 40, 40, 40, 40, 160, 160, 160, 160, 40]
RISING = [10 * (i + 1) for i in range(15)]
PSNR_A = [20 + i for i in range(8)] + [27 - (i + 1) * 0.5 for i in range(7)]  # peak 27 dB at index 7
PSNR_B = [25.0 - abs(i - 3) for i in range(15)]  # peak 25 dB at index 3


@pytest.fixture
def run(tmp_path) -> Path:
    return make_run(tmp_path, {"a": SPIKY, "b": RISING}, psnrs={"a": PSNR_A, "b": PSNR_B}, colour=("b",))


@pytest.fixture
def stand_in(monkeypatch):
    """test_BIQAN.py's model loading and scoring transform replaced by the stand-in and the identity."""
    loaded = []

    def load(path):
        loaded.append(Path(path))
        return Brightness(), {"protocol": "native", "crop": 224}

    monkeypatch.setattr(select_command, "_load_model", load)
    monkeypatch.setattr(select, "default_transform", lambda protocol, crop, tiles=1: identity)
    return loaded


@pytest.fixture
def no_figures(monkeypatch):
    """Figures drawn as a marker file (matplotlib costs a second a figure on a busy machine; one test draws them)."""

    def curves(image, group, choices, oracle, path):
        path.write_bytes(b"figure")

    def compare(image, row, choices, noisy, clean, path, snapshot):
        path.write_bytes(b"figure")

    monkeypatch.setattr(select, "_curves_figure", curves)
    monkeypatch.setattr(select, "_compare_figure", compare)


def model_file(tmp_path) -> Path:
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"stand-in: never read")
    return path


def frame(means, psnrs=None, image="a") -> pd.DataFrame:
    n = len(means)
    return pd.DataFrame(
        {
            "image": [image] * n,
            "iteration": [(i + 1) * SAVE_ITER for i in range(n)],
            "path": [Path(f"{image}/{(i + 1) * SAVE_ITER:05d}.png") for i in range(n)],
            "mean": np.asarray(means, dtype=np.float64),
            "std": np.ones(n),
            "psnr": np.full(n, np.nan) if psnrs is None else np.asarray(psnrs, dtype=np.float64),
        }
    )


# --- the filter and the choice ----------------------------------------------------------------------------------


def test_smooth_scores_is_the_seed_recurrence():
    assert smooth_scores([1.0, 2.0, 3.0], 0.8) == pytest.approx([1.0, 1.2, 1.56])
    assert smooth_scores([5.0], 0.8).tolist() == [5.0]
    assert smooth_scores([1.0, 2.0], None).tolist() == [1.0, 2.0]
    assert smooth_scores([1.0, 9.0], 0.0).tolist() == [1.0, 9.0]
    for bad in (1.0, -0.1, True, "0.8"):
        with pytest.raises(BdnError, match="smoothing factor must be a number in"):
            smooth_scores([1.0], bad)


def test_choose_without_and_with_smoothing_and_start_index():
    means = [level / 255.0 for level in SPIKY]
    scores = frame(means)
    assert choose(scores, start_index=0) == {"a": 120}  # the spike
    assert choose(scores, start_index=6) == {"a": 220}  # past the spike: the plateau's first (ties: earliest)
    smoothed = choose(scores, start_index=0, smooth=0.8)
    assert smoothed == {"a": 280}  # the filter forgets the spike and rises along the plateau: its end
    expected = [means[0]]
    for x in means[1:]:
        expected.append(0.8 * expected[-1] + 0.2 * x)
    assert smoothed.figures["a"] == pytest.approx(max(expected))
    assert smoothed.curves["a"][1] == pytest.approx(expected)
    assert smoothed.notes == {}
    # The filter starts at the first iterate, before the skip: skipping 12 keeps the plateau's filtered tail.
    assert choose(scores, start_index=12, smooth=0.8) == {"a": 280}
    assert choose(scores, start_index=14, smooth=0.8) == {"a": 300}


def test_choose_with_too_few_iterates_uses_all_and_says_so():
    scores = pd.concat([frame([0.1, 0.9, 0.5]), frame([0.3] * 20, image="b")], ignore_index=True)
    chosen = choose(scores)  # the seed's start_index 40
    assert chosen == {"a": 40, "b": 20}
    assert chosen.notes == {
        "a": "only 3 iterates, not more than start_index 40: chose among all of them",
        "b": "only 20 iterates, not more than start_index 40: chose among all of them",
    }
    assert choose(frame([0.1, 0.9, 0.5]), start_index=3).notes["a"].startswith("only 3 iterates")
    assert choose(frame([0.1, 0.9, 0.5]), start_index=2) == {"a": 60}


def test_pick_ties_nan_and_bad_input():
    assert pick([1.0, 3.0, 3.0], 0) == (1, None)
    assert pick([np.nan, 2.0, np.nan], 0) == (1, None)
    assert pick([np.nan, np.nan], 0) == (0, None)
    with pytest.raises(BdnError, match="no iterates to choose from"):
        pick([], 0)
    with pytest.raises(BdnError, match="start_index must be a whole number >= 0, got -1"):
        pick([1.0], -1)
    with pytest.raises(BdnError, match="scores table has no column mean"):
        choose(pd.DataFrame({"image": ["a"], "iteration": [1]}))


def test_gaps_and_summary_numbers():
    scores = pd.concat(
        [
            frame([0.0] * 4, psnrs=[30.0, 32.0, 31.0, 32.0], image="a"),
            frame([0.0] * 3, psnrs=[28.0, 27.0, 29.5], image="b"),
            frame([0.0] * 2, image="c"),  # no clean image: no PSNR
        ],
        ignore_index=True,
    )
    table = gaps(scores, {"a": 60, "b": 20, "c": 40})
    assert table["image"].tolist() == ["a", "b", "c"]
    assert table["oracle_iteration"].tolist()[:2] == [40, 60]  # a: the first of two 32 dB snapshots
    assert table["oracle_iteration"].isna().tolist() == [False, False, True]
    assert table["oracle_psnr"].tolist()[:2] == [32.0, 29.5]
    assert table["chosen_psnr"].tolist()[:2] == [31.0, 28.0]
    assert table["loss"].tolist()[:2] == pytest.approx([1.0, 1.5])
    assert np.isnan(table.loc[2, "loss"])
    summary = gap_summary(table)
    assert summary == pytest.approx(
        {
            "images": 3,
            "measured": 2,
            "oracle_psnr": 30.75,
            "chosen_psnr": 29.5,
            "loss": 1.25,
            "worst_loss": 1.5,
            "worst_image": "b",
        }
    )
    with pytest.raises(BdnError, match="the chosen iteration 50 is not one of its snapshots"):
        gaps(scores, {"a": 50})
    none = gap_summary(gaps(scores, {"c": 40}))
    assert none["measured"] == 0 and np.isnan(none["loss"]) and none["worst_image"] is None


def test_distribution_stats_and_bad_outputs():
    p = torch.zeros((2, 10))
    p[0, 4] = 1.0  # all on score 5
    p[1, 0] = p[1, 9] = 0.5  # scores 1 and 10: mean 5.5, std 4.5
    mean, std = distribution_stats(p)
    assert mean.tolist() == pytest.approx([5.0, 5.5]) and std.tolist() == pytest.approx([0.0, 4.5])
    with pytest.raises(BdnError, match=r"must return probabilities \[N, 10\], got \[2, 5\]"):
        distribution_stats(torch.zeros((2, 5)))
    with pytest.raises(BdnError, match="probabilities summing to 1"):
        distribution_stats(torch.ones((1, 10)))


# --- scoring a run ------------------------------------------------------------------------------------------------


def test_score_run_scores_every_snapshot(run):
    scores = score_run(Brightness(), run, batch_size=4, transform=identity)
    assert list(scores.columns) == ["image", "iteration", "path", "mean", "std", "psnr"]
    assert scores["image"].tolist() == ["a"] * 15 + ["b"] * 15
    assert scores["iteration"].tolist() == [(i + 1) * SAVE_ITER for i in range(15)] * 2
    assert scores["path"].iloc[16] == run / "b" / "00040.png"
    assert scores["psnr"].tolist() == pytest.approx(PSNR_A + PSNR_B, abs=1e-6)
    # The stand-in's mean score, image by image, equals its own distribution's mean for that brightness.
    levels = torch.tensor(SPIKY + RISING, dtype=torch.float32) / 255
    expected, _ = distribution_stats(Brightness()(levels[:, None, None, None].expand(-1, 3, 2, 2)))
    assert scores["mean"].to_numpy() == pytest.approx(expected, abs=1e-5)
    assert (scores["std"] > 0).all()
    assert np.all(np.diff(scores["mean"].to_numpy()[15:]) > 0)  # b grows brighter, so does its score
    # A batch of any size gives the same scores.
    assert score_run(Brightness(), run, batch_size=7, transform=identity)["mean"].tolist() == pytest.approx(
        scores["mean"].tolist()
    )


def test_tiled_scores_average_the_crops_distributions(run):
    from biqan.model import prepare_tiles
    from biqan.select import default_transform, score_images

    image = np.zeros((64, 64), np.float32)
    image[:32, :32] = 1.0  # one bright quadrant of four
    p = score_images(Brightness(), [image], default_transform("native", 32, 2))
    crops = prepare_tiles(image, "native", 32, 2)
    assert crops.shape[0] == 4
    expected = Brightness()(crops).mean(0)
    assert torch.allclose(p[0], expected, atol=1e-6)
    assert not torch.allclose(p[0], Brightness()(crops[:1])[0])  # not the first crop's alone
    # a run scored with tiles: one row a snapshot, the mean over each snapshot's crops
    tiled = score_run(Brightness(), run, tiles=2)
    assert len(tiled) == 30 and tiled["mean"].notna().all()
    with pytest.raises(BdnError, match="tiles must be a whole number >= 1"):
        score_run(Brightness(), run, tiles=0)


def test_score_run_prefers_the_8_bit_psnr_of_the_seed_txt(tmp_path):
    run = make_run(tmp_path, {"a": RISING[:3]}, psnrs={"a": [20.0, 21.0, 22.0]}, txt={"a": [20.5, 21.5, 22.5]})
    assert score_run(Brightness(), run, transform=identity)["psnr"].tolist() == [20.5, 21.5, 22.5]
    run = make_run(tmp_path / "x", {"a": RISING[:3]})
    assert score_run(Brightness(), run, transform=identity)["psnr"].isna().all()


def test_score_run_bad_input(tmp_path):
    with pytest.raises(BdnError, match="no such folder"):
        score_run(Brightness(), tmp_path / "missing", transform=identity)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BdnError, match="no run_BDN image folders in"):
        score_run(Brightness(), tmp_path / "empty", transform=identity)
    run = make_run(tmp_path, {"a": RISING[:2]})
    (run / "hollow").mkdir()
    (run / "hollow" / "log.csv").write_text("iteration,file,loss,psnr,ssim,psnr_raw\n1,,0.5,,,\n")
    with pytest.raises(BdnError, match=r"hollow: no snapshots \(<iter:05d>.png\) to choose from"):
        score_run(Brightness(), run, transform=identity)
    (run / "hollow" / "log.csv").unlink()
    with pytest.raises(BdnError, match="must return probabilities"):
        score_run(Logits(), run, transform=identity)
    with pytest.raises(BdnError, match="batch_size must be a whole number >= 1"):
        score_run(Brightness(), run, batch_size=0, transform=identity)
    (run / "a" / "00020.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(BdnError, match="00020.png"):
        score_run(Brightness(), run, transform=identity)


# --- partners, alignment ------------------------------------------------------------------------------------------


def test_partner_images_and_fit_to(tmp_path):
    folder = tmp_path / "real"
    for name in ("a_real.png", "b.png", "other_real.png"):
        write_image(folder / name, np.zeros((16, 16), dtype=np.float32))
    found = partner_images(folder, ["a", "b", "c"], "_real")
    assert found == {"a": folder / "a_real.png", "b": folder / "b.png"}
    write_image(folder / "a.png", np.zeros((16, 16), dtype=np.float32))
    with pytest.raises(BdnError, match="same image name 'a'"):
        partner_images(folder, ["a"], "_real")
    with pytest.raises(BdnError, match="no such file or folder"):
        partner_images(tmp_path / "nope", ["a"], "_real")

    big = np.arange(20 * 20, dtype=np.float32).reshape(20, 20)
    assert fit_to(big, (20, 20)) is big
    assert fit_to(big, (16, 16), big[:16, :16]).tolist() == big[:16, :16].tolist()  # run_BDN's crop to a multiple
    assert fit_to(big, (16, 16), big[2:18, 2:18]).tolist() == big[2:18, 2:18].tolist()  # --crop: the centre
    assert fit_to(big, (24, 24)) is None and fit_to(big, (16, 16, 3)) is None


# --- test_BIQAN.py ------------------------------------------------------------------------------------------------


def test_main_writes_every_file(run, tmp_path, stand_in, monkeypatch, capsys):
    noisy, clean = tmp_path / "real", tmp_path / "mean"
    write_image(noisy / "a_real.png", np.full((16, 16), 76 / 255, dtype=np.float32))
    write_image(clean / "a_mean.png", np.full((16, 16), 51 / 255, dtype=np.float32))
    write_image(clean / "b_mean.png", np.full((20, 20, 3), 0.2, dtype=np.float32))  # larger: cut to 16x16
    panels = {}

    def spy(rows, path):
        panels[Path(path).name] = [title for title, _ in rows[0]]
        Path(path).write_bytes(b"figure")

    monkeypatch.setattr("bdn.report.comparison_figure", spy)
    out = tmp_path / "out"
    argv = ["--run_path", str(run), "--model_path", str(model_file(tmp_path)), "--output_path", str(out)]
    argv += ["--start_index", "6", "--dataset_real_path", str(noisy), "--dataset_mean_path", str(clean)]
    assert main(argv + ["--no-progress", "--device", "cpu"]) == 0
    assert not (run / "a" / "choice.json").exists()  # the run's own records stay unless asked
    capsys.readouterr()
    assert main(argv + ["--no-progress", "--device", "cpu", "--write"]) == 0
    assert stand_in == [model_file(tmp_path)] * 2
    # a: past the first 6, the plateau's first snapshot (220); b: the brightest, the last (300).
    for name, chosen in (("a", 220), ("b", 300)):
        assert (out / f"{name}_BIQAN.png").read_bytes() == (run / name / f"{chosen:05d}.png").read_bytes()
        assert (run / name / "result.png").read_bytes() == (run / name / f"{chosen:05d}.png").read_bytes()
        assert (out / f"{name}_Curves.png").read_bytes()[:4] == b"\x89PNG"
        record = json.loads((run / name / "choice.json").read_text())
        assert record == {
            "judge": "biqan",
            "iteration": chosen,
            "score": pytest.approx(record["score"]),
            "judge_iteration": chosen,
            "file": f"{chosen:05d}.png",
        }
    score_a = json.loads((run / "a" / "choice.json").read_text())["score"]
    assert panels["a_Compare.png"] == [
        "oracle best: iter 160\n27.00 dB",
        f"BIQAN: iter 220\n{PSNR_A[10]:.2f} dB, score {score_a:.3f}",
        f"noisy\n{20 * np.log10(255 / 25):.2f} dB",  # 76 / 255 against 51 / 255
        "clean",
    ]
    assert [title.split(":")[0].split("\n")[0] for title in panels["b_Compare.png"]] == [
        "oracle best",
        "BIQAN",
        "clean",
    ]

    text = (out / "Denoised_PSNR.txt").read_text()
    assert text == capsys.readouterr().out
    lines = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert lines[0] == ["image", "oracle_iteration", "oracle_psnr", "chosen_iteration", "chosen_psnr", "loss"]
    loss_a, loss_b = 27.0 - PSNR_A[10], 25.0 - PSNR_B[14]
    assert lines[1] == ["a", "160", "27.0000", "220", f"{PSNR_A[10]:.4f}", f"{loss_a:.4f}"]
    assert lines[2] == ["b", "80", "25.0000", "300", f"{PSNR_B[14]:.4f}", f"{loss_b:.4f}"]
    mean_chosen = (PSNR_A[10] + PSNR_B[14]) / 2
    assert lines[3] == [
        "mean:",
        "oracle",
        "26.0000",
        "chosen",
        f"{mean_chosen:.4f}",
        "loss",
        f"{(loss_a + loss_b) / 2:.4f}",
    ]
    assert lines[4] == ["worst:", "loss", f"{max(loss_a, loss_b):.4f}", "(b)"]
    assert "# start_index 6; smoothing none" in text
    table = pd.read_csv(out / "Denoised_PSNR.csv")
    assert table["chosen_iteration"].tolist() == [220, 300]
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 30 and scores["smoothed"].tolist() == pytest.approx(scores["mean"].tolist())


@pytest.mark.parametrize(
    ("flag", "smoothed"),
    [
        ([], False),
        (["--is_smooth"], True),
        (["--is_smooth", "True"], True),
        (["--is_smooth", "false"], False),
        (["--is_smooth", "1"], True),
    ],
)
def test_is_smooth_takes_the_seeds_strings(flag, smoothed):
    args = build_parser("select").parse_args(["select", "--run_path", "r", "--output_path", "o", *flag])
    assert args.is_smooth is smoothed and args.smooth_factor == 0.8


def test_main_smoothing_changes_the_choice(run, tmp_path, stand_in, no_figures):
    argv = ["--run_path", str(run), "--model_path", str(model_file(tmp_path)), "--start_index", "0", "--no-progress"]
    for flag, chosen in (("false", 120), ("true", 280)):  # a's spike wins without the filter; with it, the plateau
        out = tmp_path / f"out_{flag}"
        assert main(argv + ["--output_path", str(out), "--is_smooth", flag, "--write"]) == 0
        assert json.loads((run / "a" / "choice.json").read_text())["iteration"] == chosen
        assert ("smoothing 0.8" if flag == "true" else "smoothing none") in (out / "Denoised_PSNR.txt").read_text()


def test_main_note_when_start_index_exceeds_the_iterates(run, tmp_path, stand_in, no_figures, capsys):
    out = tmp_path / "out"
    argv = ["--run_path", str(run), "--model_path", str(model_file(tmp_path)), "--output_path", str(out)]
    assert main(argv + ["--no-progress", "--write"]) == 0  # the seed's 40 > 15 iterates
    assert json.loads((run / "a" / "choice.json").read_text())["iteration"] == 120
    assert "test_BIQAN.py: note: a: only 15 iterates, not more than start_index 40" in capsys.readouterr().err
    assert (
        "# a: only 15 iterates, not more than start_index 40: chose among all of them"
        in (out / "Denoised_PSNR.txt").read_text()
    )


def test_main_without_psnr_still_chooses(tmp_path, stand_in, no_figures):
    run = make_run(tmp_path, {"a": RISING[:5]})
    out = tmp_path / "out"
    argv = ["--run_path", str(run), "--model_path", str(model_file(tmp_path)), "--output_path", str(out)]
    assert main(argv + ["--start_index", "0", "--no-progress"]) == 0
    text = (out / "Denoised_PSNR.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line.startswith("a ")]
    assert rows == [["a", "-", "-", "100", "-", "-"]]
    assert "no image has a PSNR" in text


def error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_main_bad_input_is_one_line(run, tmp_path, stand_in, capsys, monkeypatch):
    out = tmp_path / "out"
    model = str(model_file(tmp_path))
    cases = [
        (["--run_path", str(run), "--model_path", str(tmp_path / "nope.safetensors")], "no such file"),
        (["--run_path", str(tmp_path / "missing"), "--model_path", model], "no such folder"),
        (["--run_path", str(run), "--model_path", model, "--start_index", "-1"], "--start-index: must be >= 0"),
        (["--run_path", str(run), "--model_path", model, "--is_smooth", "maybe"], "expected true or false"),
        (["--run_path", str(run), "--model_path", model, "--dataset_mean_path", str(tmp_path / "x")], "no such folder"),
        (
            ["--run_path", str(run), "--model_path", model, "--device", "cuda:7"]
            if not torch.cuda.is_available()
            else ["--run_path", str(run), "--model_path", model, "--device", "toaster"],
            "--device",
        ),
    ]
    (tmp_path / "empty").mkdir()
    cases.append((["--run_path", str(tmp_path / "empty"), "--model_path", model], "no run_BDN image folders"))
    for argv, message in cases:
        assert main(argv + ["--output_path", str(out), "--no-progress"]) == 1
        line = error_line(capsys)
        assert line.startswith("test_BIQAN.py: error: ") and message in line, line
        assert not out.exists()  # nothing written
    monkeypatch.setattr("bdn.tensorfile.shipped_files", lambda prefix: {})
    assert main(["--run_path", str(run), "--output_path", str(out), "--no-progress"]) == 1
    assert "no BIQAN ships with this install" in error_line(capsys)


def test_main_with_the_real_network_and_a_wrong_architecture(tmp_path, no_figures, capsys):
    model_module = pytest.importorskip("biqan.model")
    from bdn.tensorfile import save_tensors

    run = make_run(tmp_path, {"a": RISING[:4]}, psnrs={"a": [20.0, 21.0, 22.0, 21.0]}, size=32)
    path = tmp_path / "biqan.safetensors"
    model_module.save_biqan(path, model_module.build_biqan())
    out = tmp_path / "out"
    argv = ["--run_path", str(run), "--model_path", str(path), "--output_path", str(out), "--no-progress"]
    assert main(argv + ["--start_index", "1", "--device", "cpu", "--write"]) == 0
    record = json.loads((run / "a" / "choice.json").read_text())
    assert record["judge"] == "biqan" and record["iteration"] in (40, 60, 80) and 1 <= record["score"] <= 10
    assert (out / "a_BIQAN.png").is_file() and (out / "Denoised_PSNR.txt").is_file()

    other = model_module.build_biqan("mobilenet_v2")
    wrong = tmp_path / "wrong.safetensors"
    metadata = {"format": model_module.FORMAT, "arch": "mobilenet_v3_small", "protocol": "native", "crop": "224"}
    save_tensors(wrong, other.state_dict(), metadata)
    capsys.readouterr()
    assert main(["--run_path", str(run), "--model_path", str(wrong), "--output_path", str(tmp_path / "o2")]) == 1
    line = error_line(capsys)
    assert line.startswith("test_BIQAN.py: error: ") and "do not fit BIQAN architecture" in line
    assert not (tmp_path / "o2").exists()


def test_the_script_is_a_front_end(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "missing.safetensors"
    argv = [
        "test_BIQAN.py",
        "--run_path",
        str(tmp_path),
        "--output_path",
        str(tmp_path / "o"),
        "--model_path",
        str(missing),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(PROJECT / "test_BIQAN.py"), run_name="__main__")
    assert exit_info.value.code == 1
    assert error_line(capsys) == f"test_BIQAN.py: error: --model_path {missing}: no such file"


def test_snapshots_read_back_as_written(run):
    # The fake run is what run_BDN writes: 8-bit PNGs, grey for a, colour for b.
    assert read_image(run / "a" / "00020.png")[0].shape == (16, 16)
    assert read_image(run / "b" / "00020.png")[0].shape == (16, 16, 3)
