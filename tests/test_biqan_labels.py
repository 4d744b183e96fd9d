"""biqan.labels and generator_dataset.py: the exact score labels of biqan/labels.py, run folders, score files, the CLI.

Runs are made by hand (16x16 PNG snapshots + log.csv as run_BDN writes them), never by DIP.
"""

import re
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate
from scipy.stats import norm

from bdn.cli import run_script
from bdn.dip.runfolder import Iterate, read_run
from bdn.errors import BdnError
from bdn.io import write_image
from biqan.labels import (
    label_iterates,
    mean_scores,
    read_scores,
    score_distribution,
    write_scores,
)

main = partial(run_script, "label", "generator_dataset.py")

PROJECT = Path(__file__).resolve().parent.parent
SAVE_ITER = 5


def m_of(psnr: float, lo: float = 8.0, hi: float = 45.0) -> float:
    return max((psnr - lo) / (hi - lo) * 5 + 2.5, 0.0)


def reference_bins(m: float) -> np.ndarray:
    """P(round(X) clipped to 1..10 = k), X ~ N(m, 1), by numerical integration of the normal density."""
    edges = [-np.inf] + [k + 0.5 for k in range(1, 10)] + [np.inf]
    return np.array([integrate.quad(norm(m, 1).pdf, a, b)[0] for a, b in zip(edges[:-1], edges[1:], strict=True)])


def psnr_curve(n: int, shift: float) -> np.ndarray:
    """A DIP-like curve: rises, peaks, falls a little."""
    t = np.arange(1, n + 1) / n
    return 15 + shift + 20 * t - 12 * t**2


def make_run(
    root: Path,
    names=("a", "b"),
    snapshots: int = 12,
    clean: bool = True,
    seed_txt: bool = False,
    shift: float = 0.0,
) -> Path:
    """A run_BDN-style folder: per image <iter:05d>.png every SAVE_ITER iterations and log.csv for every iteration."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        folder = root / name
        iterations = SAVE_ITER * snapshots
        psnrs = psnr_curve(iterations, shift + k)
        lines = ["iteration,file,loss,psnr,ssim,psnr_raw"]
        txt = []
        for i in range(1, iterations + 1):
            snap = i % SAVE_ITER == 0
            if snap:
                write_image(folder / f"{i:05d}.png", rng.random((16, 16)).astype(np.float32))
                txt.append(f"{name}/{i:05d}.png {psnrs[i - 1] + 0.01:.6f} 0.9" if clean else f"{name}/{i:05d}.png 0 0")
            figures = f"{psnrs[i - 1]:.8g},{0.9 if snap else ''},{psnrs[i - 1] - 1:.8g}" if clean else ",,"
            lines.append(f"{i},{f'{i:05d}.png' if snap else ''},{0.01 / i:.8g},{figures}")
        (folder / "log.csv").write_text("\n".join(lines) + "\n")
        if seed_txt:
            (root / f"{name}.txt").write_text("\n".join(txt) + "\n")
    return root


def run_main(argv, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the distribution -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("psnr", [-30.0, 0.0, 8.0, 20.0, 26.5, 33.3, 45.0, 52.0, 80.0])
def test_bins_equal_the_integrated_normal(psnr):
    p = score_distribution(psnr)
    assert p.shape == (10,) and p.dtype == np.float64
    np.testing.assert_allclose(p, reference_bins(m_of(psnr)), atol=1e-10)


@pytest.mark.parametrize("psnr", [8.0, 26.5, 41.0])
def test_bins_equal_the_seeds_random_draws(psnr):
    """The seed drew X ~ N(m, 1), rounded and clipped; a million draws land within 2e-3 of the exact bins."""
    draws = np.random.default_rng(1).normal(m_of(psnr), 1.0, 1_000_000)
    counts = np.bincount(np.clip(np.rint(draws), 1, 10).astype(int) - 1, minlength=10) / draws.size
    np.testing.assert_allclose(score_distribution(psnr), counts, atol=2e-3)


def test_distribution_sums_to_one_and_vectorises():
    psnrs = np.linspace(-50, 120, 301).reshape(7, 43)
    p = score_distribution(psnrs)
    assert p.shape == (7, 43, 10)
    assert (p >= 0).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(p[2, 5], score_distribution(psnrs[2, 5]))


def test_mean_score_rises_with_psnr_and_hits_the_anchors():
    psnrs = np.linspace(-20, 80, 500)
    means = mean_scores(score_distribution(psnrs))
    assert (np.diff(means) >= 0).all()
    assert (np.diff(means[psnrs > -10.5]) > 0).all()  # strictly, above the PSNR where m is clipped at 0
    assert means[0] >= 1 and means[-1] <= 10
    # m = 5 at the middle of the bounds: the clipped tails are below 1e-5 there
    assert mean_scores(score_distribution(26.5)) == pytest.approx(5.0, abs=1e-5)
    assert mean_scores(score_distribution(26.5, lo=20, hi=33)) == pytest.approx(5.0, abs=1e-5)


def test_negative_m_is_set_to_zero():
    at_zero = 8.0 - 0.5 * 37.0  # m = 0 exactly
    np.testing.assert_array_equal(score_distribution(-200.0), score_distribution(at_zero))
    assert not np.array_equal(score_distribution(at_zero + 1), score_distribution(at_zero))


def test_exp_variant_is_finite_and_matches_the_direct_formula():
    psnrs = np.array([0.0, 8.0, 30.0, 40.0, 44.0, 45.0, 60.0, 800.0, np.inf])
    p = score_distribution(psnrs, use_exp=True)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-12)
    direct = (np.exp(psnrs[:6]) - np.exp(8.0)) / (np.exp(45.0) - np.exp(8.0)) * 5 + 2.5
    for psnr, m in zip(psnrs[:6], direct, strict=True):
        np.testing.assert_allclose(score_distribution(psnr, use_exp=True), reference_bins(m), atol=1e-10)
    assert p[-1, -1] == 1.0  # an infinite PSNR (a perfect iterate) scores 10
    assert (np.diff(mean_scores(p)) >= 0).all()


def test_equal_bounds_put_everything_in_the_middle_and_bad_bounds_fail():
    np.testing.assert_allclose(score_distribution([30.0, 30.0], lo=30, hi=30), reference_bins(5.0)[None].repeat(2, 0))
    with pytest.raises(BdnError, match="lo <= hi"):
        score_distribution(30.0, lo=40, hi=10)
    with pytest.raises(BdnError, match="NaN"):
        score_distribution(np.nan)


# --- runs and labels ------------------------------------------------------------------------------------------


def test_read_run_lists_every_snapshot_sorted(tmp_path):
    run = make_run(tmp_path / "run")
    iterates = read_run(run)
    assert len(iterates) == 24
    assert [it.image for it in iterates] == ["a"] * 12 + ["b"] * 12
    assert [it.iteration for it in iterates[:12]] == list(range(SAVE_ITER, 61, SAVE_ITER))
    assert iterates[0] == Iterate("a", 5, run / "a" / "00005.png", pytest.approx(float(psnr_curve(60, 0)[4])))
    assert all(it.path.is_file() for it in iterates)


def test_read_run_prefers_the_8bit_psnr_of_the_seed_txt(tmp_path):
    run = make_run(tmp_path / "run", seed_txt=True)
    (run / "b.txt").unlink()  # b falls back to log.csv's figure
    by_image = {it.image: it for it in read_run(run) if it.iteration == 10}
    assert by_image["a"].psnr == pytest.approx(psnr_curve(60, 0)[9] + 0.01, abs=1e-6)
    assert by_image["b"].psnr == pytest.approx(psnr_curve(60, 1)[9], abs=1e-6)


def test_start_position_and_per_image_bounds(tmp_path):
    iterates = read_run(make_run(tmp_path / "run"))
    fixed = label_iterates(iterates, start_position=3)
    assert len(fixed) == 2 * 9
    assert {it.iteration for it, _ in fixed} == set(range(4 * SAVE_ITER, 61, SAVE_ITER))
    for it, p in fixed:
        np.testing.assert_allclose(p, reference_bins(m_of(it.psnr)), atol=1e-10)

    own = label_iterates(iterates, start_position=3, fix_minmax=False)
    for image in ("a", "b"):
        rows = [(it, p) for it, p in own if it.image == image]
        psnrs = np.array([it.psnr for it, _ in rows])
        low, high = rows[int(psnrs.argmin())][1], rows[int(psnrs.argmax())][1]
        np.testing.assert_allclose(low, reference_bins(2.5), atol=1e-10)
        np.testing.assert_allclose(high, reference_bins(7.5), atol=1e-10)
        np.testing.assert_allclose(
            np.stack([p for _, p in rows]), score_distribution(psnrs, psnrs.min(), psnrs.max()), atol=1e-12
        )


def test_label_errors(tmp_path):
    iterates = read_run(make_run(tmp_path / "run"))
    with pytest.raises(BdnError, match=r"skips every iterate \(the most any image has is 12\)"):
        label_iterates(iterates, start_position=12)
    with pytest.raises(BdnError, match="start_position must be a whole number"):
        label_iterates(iterates, start_position=-1)
    with pytest.raises(BdnError, match="lo < hi"):
        label_iterates(iterates, lo=45, hi=8)
    dark = read_run(make_run(tmp_path / "dark", names=("x",), clean=False))
    assert all(it.psnr is None for it in dark)
    with pytest.raises(BdnError, match=r"x/log\.csv has no PSNR \(no clean image\): cannot label its iterates"):
        label_iterates(dark)


# --- score files ----------------------------------------------------------------------------------------------


def test_score_file_round_trip(tmp_path):
    run = make_run(tmp_path / "run")
    labelled = label_iterates(read_run(run), start_position=0)
    path = write_scores(tmp_path / "scores.txt", [(it.path, p) for it, p in labelled])
    lines = path.read_text().splitlines()
    assert lines[0].split()[0] == "run/a/00005.png"
    for line in lines:
        numbers = line.split()[1:]
        assert len(numbers) == 10 and all(len(x.split(".")[1]) == 6 for x in numbers)
        assert sum(int(x.replace(".", "")) for x in numbers) == 1_000_000  # exactly 1 as written
    back = read_scores(path)
    assert [image for image, _ in back] == [tmp_path / "run" / it.path.relative_to(run) for it, _ in labelled]
    np.testing.assert_allclose(np.stack([p for _, p in back]), np.stack([p for _, p in labelled]), atol=6e-6)


def test_score_file_paths_with_spaces_and_absolute_paths(tmp_path):
    image = tmp_path / "a folder" / "00005.png"
    write_image(image, np.zeros((8, 8), np.float32))
    p = score_distribution(30.0)
    write_scores(tmp_path / "s.txt", [(image, p)])
    assert read_scores(tmp_path / "s.txt")[0][0] == image
    (tmp_path / "abs.txt").write_text(f"{image} {' '.join(f'{x:.6f}' for x in p)}\n")
    assert read_scores(tmp_path / "abs.txt")[0][0] == image


@pytest.mark.parametrize(
    "line, message",
    [
        ("a/00005.png 0.5 0.5", r"line 2: expected '<image path> p1 \.\.\. p10'"),
        ("a/00005.png 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 x", "line 2: expected"),
        ("a/00005.png 0.2 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1", r"line 2: the ten probabilities .*\(sum 1\.1\)"),
        ("a/00005.png -0.1 0.2 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1", "line 2: the ten probabilities must be >= 0"),
        ("a/missing.png 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1", r"line 2: image .*a/missing\.png does not exist"),
    ],
)
def test_bad_score_lines_name_the_line(tmp_path, line, message):
    write_image(tmp_path / "a" / "00005.png", np.zeros((8, 8), np.float32))
    good = "a/00005.png 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1 0.1"
    (tmp_path / "s.txt").write_text(f"{good}\n{line}\n")
    with pytest.raises(BdnError, match=message) as caught:
        read_scores(tmp_path / "s.txt")
    assert "\n" not in str(caught.value) and str(tmp_path / "s.txt") in str(caught.value)


def test_empty_or_absent_score_file(tmp_path):
    (tmp_path / "s.txt").write_text("\n")
    with pytest.raises(BdnError, match="empty score file"):
        read_scores(tmp_path / "s.txt")
    with pytest.raises(BdnError, match="no such score file"):
        read_scores(tmp_path / "none.txt")


# --- the command line -----------------------------------------------------------------------------------------


def test_main_writes_scores_plot_and_summary(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    code, out, err = run_main(["--run_path", run], capsys)
    assert (code, err) == (0, "")
    scores = run / "scores.txt"
    rows = read_scores(scores)
    assert len(rows) == 2 * (12 - 8)
    assert {int(image.stem) for image, _ in rows} == set(range(9 * SAVE_ITER, 61, SAVE_ITER))
    assert (run / "scores_psnr_vs_score.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, _, row = out.splitlines()[:3]
    columns = ["run", "images", "iterates", "psnr_min", "psnr_max", "score_min", "score_max"]
    assert [cell.strip() for cell in header.split("|")[1:-1]] == columns
    assert re.search(rf"{re.escape(str(run))}\s+\|\s+2\s+\|\s+8\s+\|", row), out
    assert out.splitlines()[-1] == f"wrote {scores} (8 iterates) and {run / 'scores_psnr_vs_score.png'}"


def test_main_seed_options(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    other = make_run(tmp_path / "other", names=("c",), shift=3)
    out_file = tmp_path / "labels" / "s.txt"
    code, _, err = run_main(
        ["--dataset_path", run, other, "--output_path", out_file, "--start_position", "2"]
        + ["--is_use_fix_minmax", "False", "--is_use_exp", "true"],
        capsys,
    )
    assert (code, err) == (0, "")
    rows = read_scores(out_file)
    assert len(rows) == 3 * 10
    assert rows[0][0] == run / "a" / "00015.png"
    assert (tmp_path / "labels" / "s_psnr_vs_score.png").is_file()
    psnrs = {it.path: it.psnr for it in read_run(run)}
    kept = [psnrs[image] for image, _ in rows[:10]]  # image a, per-image bounds, exp
    np.testing.assert_allclose(
        np.stack([p for _, p in rows[:10]]), score_distribution(kept, min(kept), max(kept), True), atol=6e-6
    )
    code, _, _ = run_main(["--run_path", run, "--output_path", out_file, "--no-is_use_fix_minmax"], capsys)
    assert code == 0 and len(read_scores(out_file)) == 8


def test_seed_style_script(tmp_path):
    run = make_run(tmp_path / "run")
    done = subprocess.run(
        [sys.executable, "generator_dataset.py", "--run_path", str(run), "--output_path", str(tmp_path / "s.txt")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert len(read_scores(tmp_path / "s.txt")) == 8
    bad = subprocess.run(
        [sys.executable, "generator_dataset.py", "--run_path", str(tmp_path / "nowhere")],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("generator_dataset.py: error: ") and bad.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "no run_BDN image folders in"),
        ("unfinished", r"no run_BDN image folders in .*\(1 unfinished, without log\.csv\)"),
        ("no_psnr", r"b/log\.csv has no PSNR \(no clean image\): cannot label its iterates"),
        ("missing_snapshot", r"a/00010\.png: snapshot listed in .*a/log\.csv is missing"),
        ("bad_log", r"a/log\.csv, line 3: malformed row"),
        ("bad_bool", "argument --is-use-exp: expected true or false, got 'maybe'"),
        ("skip_all", "--start_position 20 skips every iterate"),
        ("several_runs", "give --output_path when reading several runs"),
    ],
)
def test_main_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case, message):
    run = tmp_path / "run"
    run.mkdir()
    argv = ["--run_path", run]
    if case == "unfinished":
        write_image(run / "a" / "00005.png", np.zeros((8, 8), np.float32))
    elif case == "no_psnr":
        make_run(run, names=("a",))
        make_run(run, names=("b",), clean=False)
    elif case != "empty":
        make_run(run)
    if case == "missing_snapshot":
        (run / "a" / "00010.png").unlink()
    elif case == "bad_log":
        log = run / "a" / "log.csv"
        lines = log.read_text().splitlines()
        lines[2] = "two,,0.1,,,"
        log.write_text("\n".join(lines) + "\n")
    elif case == "bad_bool":
        argv += ["--is_use_exp", "maybe"]
    elif case == "skip_all":
        argv += ["--start_position", "20"]
    elif case == "several_runs":
        argv += [make_run(tmp_path / "other")]
    code, out, err = run_main(argv, capsys)
    assert code == 1 and out == ""
    assert err.startswith("generator_dataset.py: error: ") and err.count("\n") == 1
    assert len(re.findall(message, err)) == 1, err
    assert not (run / "scores.txt").exists() and not (run / "scores_psnr_vs_score.png").exists()
