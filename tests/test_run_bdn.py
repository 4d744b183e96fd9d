"""run_BDN (bdn.dip.run): the run folder of bdn/dip/runfolder.py, resuming, torchrun, the seed's split, bad input.

Everything is tiny: 64x64 images, a 3-scale net of a few hundred weights (`TINY`), at most a few hundred
iterations, one thread. Subprocesses (SIGKILL, torchrun, the script itself) run `TINY` by the name "tiny" through
a small wrapper script that registers it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bdn.dip.run as run_module
from bdn.cli import run_script
from bdn.cli.run import _start_group
from bdn.data import synthesize
from bdn.dip.config import DipConfig
from bdn.dip.fit import fit_dip
from bdn.dip.init import InitConfig, _metadata, save_init
from bdn.dip.nets import NET_TYPES, NetSpec, build_net
from bdn.dip.run import Item, run_folder, select_items, split_part
from bdn.dip.runfolder import SUMMARY_COLUMNS
from bdn.errors import BdnError
from bdn.io import read_image, write_image
from bdn.metrics import psnr, psnr_ssim

PROJECT = Path(__file__).resolve().parent.parent

main = partial(run_script, "run", "run_BDN.py")
TINY = NetSpec(channels_down=(4, 8, 8), channels_up=(4, 8, 8), channels_skip=(0, 2, 2))  # sides: multiples of 8
WRAPPER = """
import sys
import torch
torch.set_num_threads(1)
from bdn.dip.nets import NET_TYPES, NetSpec
NET_TYPES["tiny"] = NetSpec(channels_down=(4, 8, 8), channels_up=(4, 8, 8), channels_skip=(0, 2, 2))
from bdn.cli import run_script
from bdn.cli.run import _start_group
sys.exit(run_script("run", "run_BDN.py", sys.argv[1:]))
"""
# The CPU: its fits are reproducible (a GPU would be chosen by --device auto, and CUDA fits are not bit-exact).
TINY_ARGS = ["--net_type", "tiny", "--input_depth", "4", "--no-progress", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def tiny_name(monkeypatch):
    monkeypatch.setitem(NET_TYPES, "tiny", TINY)


def smooth(size: int, k: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    planes = [0.2 + 0.6 * x, 0.3 + 0.4 * np.sin(3 * y + k), 0.5 + 0.3 * np.cos(2 * (x + y) + k)]
    return np.stack(planes, -1).astype(np.float32)


def make_folder(root: Path, names, size: int = 64, clean: bool = True, noisy: bool = True) -> Path:
    """CC-style pairs: real/<name>_real.png (sigma 25, clipped, 8-bit) and mean/<name>_mean.png."""
    for k, name in enumerate(names):
        image = smooth(size, k)
        if clean:
            write_image(root / "mean" / f"{name}_mean.png", image)
        if noisy:
            rng = np.random.default_rng(k)
            write_image(root / "real" / f"{name}_real.png", np.clip(image + rng.normal(0, 25 / 255, image.shape), 0, 1))
    return root


def tiny_config(**changes) -> DipConfig:
    return replace(DipConfig(net_type=TINY, input_depth=4, num_iter=20, save_iter=5, show_iter=10), **changes)


def read_log(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, dtype=str)


def wrapper(tmp_path: Path) -> Path:
    script = tmp_path / "tiny_run_bdn.py"
    script.write_text(WRAPPER)
    return script


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT)}


# --- the file contract ---------------------------------------------------------------------------------


def test_file_contract_on_a_folder_of_pairs(tmp_path):
    names = ["d800_iso1600_1", "d800_iso3200_2"]
    data = make_folder(tmp_path / "CC", names)
    out = tmp_path / "out"
    report = run_folder(data / "real", data / "mean", out, tiny_config(), progress=False, echo=None, device="cpu")
    assert report.done == names and not report.problems and report.summary == out / "summary.csv"

    snapshots = [5, 10, 15, 20]
    for name in names:
        folder = out / name
        clean, _ = read_image(data / "mean" / f"{name}_mean.png")
        noisy, _ = read_image(data / "real" / f"{name}_real.png")
        for iteration in snapshots:
            pixels, info = read_image(folder / f"{iteration:05d}.png")
            assert info.dtype == "uint8" and info.format == "PNG" and pixels.shape == (64, 64, 3)
        assert sorted(p.name for p in folder.glob("0*.png")) == [f"{i:05d}.png" for i in snapshots]

        log = read_log(folder / "log.csv")
        assert list(log.columns) == ["iteration", "file", "loss", "psnr", "ssim", "psnr_raw"]
        assert log["iteration"].astype(int).tolist() == list(range(1, 21))
        at_snapshot = log["iteration"].astype(int).isin(snapshots)
        assert log.loc[at_snapshot, "file"].tolist() == [f"{i:05d}.png" for i in snapshots]
        assert (log.loc[~at_snapshot, "file"] == "").all() and (log.loc[~at_snapshot, "ssim"] == "").all()
        for column in ("loss", "psnr", "psnr_raw"):
            assert np.isfinite(log[column].astype(float)).all()
        assert np.isfinite(log.loc[at_snapshot, "ssim"].astype(float)).all()

        # The seed's .txt: relative snapshot path, PSNR and SSIM of the saved 8-bit file against clean.
        lines = (out / f"{name}.txt").read_text().splitlines()
        assert len(lines) == len(snapshots)
        table = {}
        for line, iteration in zip(lines, snapshots, strict=True):
            path, p, s = line.split(" ")
            assert path == f"{name}/{iteration:05d}.png" and (out / path).is_file()
            expected = psnr_ssim(clean, read_image(out / path)[0])
            assert float(p) == pytest.approx(expected[0], abs=1e-5) and float(s) == pytest.approx(expected[1], abs=1e-5)
            table[iteration] = float(p)
            # the EMA's own PSNR (log) and that of its 8-bit file differ by the rounding only
            assert float(log.loc[iteration - 1, "psnr"]) == pytest.approx(float(p), abs=0.05)

        # With a clean image and no judge: the oracle's best snapshot.
        choice = json.loads((folder / "choice.json").read_text())
        best = max(table, key=table.get)
        assert choice["judge"] == "oracle" and choice["iteration"] == best and choice["file"] == f"{best:05d}.png"
        assert choice["score"] == pytest.approx(table[best], abs=1e-5)
        assert (folder / "result.png").read_bytes() == (folder / f"{best:05d}.png").read_bytes()
        assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        done = json.loads((folder / "done.json").read_text())
        assert done["image"] == name and done["iterations"] == 20 and done["chosen_iteration"] == best
        assert done["noisy_psnr"] == pytest.approx(psnr(clean, noisy))
        assert not (folder / "checkpoint.pt").exists()

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == list(SUMMARY_COLUMNS) and summary["image"].tolist() == names
    assert (summary["iterations"] == 20).all() and (summary["best_psnr"] > 0).all()
    assert summary["s_per_iter"].tolist() == pytest.approx((summary["seconds"] / 20).tolist(), rel=0.05)
    assert "d800_iso3200_2" in (out / "summary.md").read_text()


def test_clean_only_folder_gets_synthesised_noise(tmp_path, tiny_name, capsys):
    data = make_folder(tmp_path / "set", ["a", "b"], noisy=False)
    out = tmp_path / "out"
    argv = ["--dataset_mean_path", str(data / "mean"), "--output_path", str(out), "--num_iter", "10"]
    assert main([*argv, "--save_iter", "5", "--noise", "gaussian:50", "--seed", "3", *TINY_ARGS]) == 0
    for name in ["a", "b"]:  # the name drops _mean, as for pairs
        clean = read_image(data / "mean" / f"{name}_mean.png")[0]
        noisy = synthesize(clean, "gaussian", 50, 3, name=name)
        done = json.loads((out / name / "done.json").read_text())
        assert done["noisy_psnr"] == pytest.approx(psnr(clean, noisy), abs=1e-9)
        assert done["noisy_psnr"] == pytest.approx(14.3, abs=0.5)  # sigma 50 on [0, 1] images
        assert json.loads((out / name / "choice.json").read_text())["judge"] == "oracle"
    assert "| a " in capsys.readouterr().out  # the summary table is printed


def test_noisy_only_folder_has_no_figures_against_clean_and_no_choice(tmp_path):
    data = make_folder(tmp_path / "set", ["x"], clean=False)
    out = tmp_path / "out"
    report = run_folder(data / "real", None, out, tiny_config(num_iter=10), progress=False, echo=None, device="cpu")
    assert report.done == ["x"]
    log = read_log(out / "x" / "log.csv")
    assert (log[["psnr", "ssim", "psnr_raw"]] == "").all().all() and len(log) == 10
    assert (out / "x.txt").read_text() == "x/00005.png 0 0\nx/00010.png 0 0\n"
    assert not (out / "x" / "choice.json").exists() and not (out / "x" / "result.png").exists()
    assert report.rows[0]["noisy_psnr"] is None and report.rows[0]["judge"] is None


def test_stop_wmv_ends_the_fit_and_writes_its_choice(tmp_path, tiny_name):
    data = make_folder(tmp_path / "CC", ["a"])
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    argv += ["--output_path", str(out), "--num_iter", "60", "--save_iter", "2", "--stop", "wmv"]
    assert main([*argv, "--wmv_window", "3", "--wmv_patience", "2", *TINY_ARGS]) == 0
    done = json.loads((out / "a" / "done.json").read_text())
    choice = json.loads((out / "a" / "choice.json").read_text())
    assert done["stopped_early"] and done["iterations"] < 60 and done["judge"] == "wmv"
    # The judge stops `patience` variance updates after its choice; the result is the snapshot at or before it.
    assert choice["judge"] == "wmv" and choice["judge_iteration"] == done["iterations"] - 2
    assert choice["iteration"] == choice["judge_iteration"] // 2 * 2 and choice["score"] > 0
    assert (out / "a" / "result.png").read_bytes() == (out / "a" / choice["file"]).read_bytes()
    assert len(read_log(out / "a" / "log.csv")) == done["iterations"]
    assert max(int(p.stem) for p in (out / "a").glob("0*.png")) <= done["iterations"]


def test_stop_wmv_strided_on_the_ema_watches_the_snapshots(tmp_path, tiny_name):
    data = make_folder(tmp_path / "CC", ["a"])
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    argv += ["--output_path", str(out), "--num_iter", "60", "--save_iter", "2", "--stop", "wmv"]
    argv += ["--wmv_window", "3", "--wmv_patience", "2", "--wmv_stride", "4", "--wmv_source", "ema"]
    assert main([*argv, *TINY_ARGS]) == 0
    done = json.loads((out / "a" / "done.json").read_text())
    choice = json.loads((out / "a" / "choice.json").read_text())
    # variances only at multiples of 4: the stop comes 2 updates (8 iterations) after a multiple of 4
    assert done["stopped_early"] and done["iterations"] % 4 == 0 and choice["judge_iteration"] % 4 == 0
    assert choice["judge_iteration"] == done["iterations"] - 8
    assert (out / "a" / "result.png").read_bytes() == (out / "a" / choice["file"]).read_bytes()


def test_stop_biqan_scores_the_snapshots_and_writes_its_choice(tmp_path, tiny_name):
    from biqan.model import build_biqan, save_biqan

    torch.manual_seed(0)
    save_biqan(tmp_path / "biqan.safetensors", build_biqan(), protocol="native", crop=32)
    data = make_folder(tmp_path / "CC", ["a"])
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    argv += ["--output_path", str(out), "--num_iter", "30", "--save_iter", "5", "--stop", "biqan"]
    argv += ["--biqan_model", str(tmp_path / "biqan.safetensors"), "--biqan_start_index", "1", "--biqan_patience", "2"]
    assert main([*argv, *TINY_ARGS]) == 0
    done = json.loads((out / "a" / "done.json").read_text())
    choice = json.loads((out / "a" / "choice.json").read_text())
    assert done["judge"] == "biqan" and choice["judge"] == "biqan"
    # Scored only at snapshots, so it chooses one of them, and stops 2 snapshots after its best (or runs out).
    assert choice["iteration"] % 5 == 0 and choice["iteration"] >= 10
    assert done["iterations"] == 30 or done["iterations"] == choice["iteration"] + 10
    assert (out / "a" / "result.png").read_bytes() == (out / "a" / choice["file"]).read_bytes()


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "extra", "message"),
    [
        ("empty", [], "no images found"),
        ("unmatched", [], "unmatched images: 1 noisy without a clean partner"),
        ("pairs", ["--net_type", "nope"], "unknown DIP net type 'nope'"),
        ("pairs", ["--stop", "nima"], "--stop 'nima': choose one of none, wmv, emv, noise, biqan"),
        (
            "pairs",
            ["--stop", "biqan", "--biqan_model", "nope.safetensors"],
            "nope.safetensors: no such BIQAN checkpoint",
        ),
        ("pairs", ["--stop", "wmv", "--wmv_window", "1"], "judge wmv: window must be an integer >= 2"),
        ("pairs", ["--stop", "noise", "--noise_factor", "0"], "judge noise: factor must be a number > 0, got 0.0"),
        ("pairs", ["--stop", "noise", "--noise_sigma", "-3"], "judge noise: sigma must be a number > 0, got -3.0"),
        ("pairs", ["--mask_ratio", "0.5"], "mask_ratio > 0 hides pixels of the input image: use input_base image"),
        ("pairs", ["--mask_ratio", "1"], "mask_ratio must be a number in [0, 1), got 1.0"),
        ("pairs", ["--init", "nowhere.safetensors"], "initialisation 'nowhere.safetensors': no such file"),
        ("pairs", ["--device", "tpu"], "device 'tpu': not a device name"),
        ("pairs", ["--num_iter", "0"], "num_iter must be a positive integer"),
        ("pairs", ["--num_iter", "many"], "argument --num-iter: invalid int value: 'many'"),
        ("pairs", ["--is_split_dataset", "--dataset_part_id", "3/2"], "need 1 <= I <= P"),
        ("pairs", ["--noise", "pink:3"], "pink"),
    ],
)
def test_bad_input_gives_one_line_and_exit_1(tmp_path, tiny_name, capsys, setup, extra, message):
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "mean").mkdir()
    if setup != "empty":
        make_folder(data, ["a", "b"])
    if setup == "unmatched":
        (data / "mean" / "b_mean.png").unlink()
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    assert main([*argv, "--output_path", str(tmp_path / "out"), *TINY_ARGS, *extra]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_a_too_small_image_is_named_and_the_batch_goes_on(tmp_path, tiny_name, capsys):
    data = make_folder(tmp_path / "data", ["big"])
    make_folder(tmp_path / "small", ["small"], size=12)  # TINY needs 16 pixels a side
    for kind in ("real", "mean"):
        (tmp_path / "small" / kind / f"small_{kind}.png").rename(data / kind / f"small_{kind}.png")
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    assert main([*argv, "--output_path", str(out), "--num_iter", "5", *TINY_ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].endswith("1 image(s) failed:") and len(err) == 2
    assert "small_real.png: image of 12x12 pixels is too small for DIP net 'tiny'" in err[1]
    assert (out / "big" / "done.json").exists() and not (out / "small" / "done.json").exists()


def interrupt_at(monkeypatch, iteration: int) -> None:
    """Make the next fit raise KeyboardInterrupt right after `iteration` (its callback has run: files written)."""
    real = run_module.fit_dip

    def interrupted(*args, on_iteration, **kwargs):
        def callback(t, frame):
            on_iteration(t, frame)
            if t == iteration:
                raise KeyboardInterrupt

        return real(*args, on_iteration=callback, **kwargs)

    monkeypatch.setattr(run_module, "fit_dip", interrupted)


def test_checkpoints_resume_and_are_refused_when_corrupt_or_made_otherwise(tmp_path, tiny_name, capsys, monkeypatch):
    data = make_folder(tmp_path / "data", ["a"])
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    argv += ["--output_path", str(out), "--num_iter", "12", "--checkpoint_iter", "4", *TINY_ARGS]
    argv += ["--stop", "wmv", "--wmv_window", "2", "--wmv_patience", "100"]  # the judge's state is saved too
    checkpoint = out / "a" / "checkpoint.pt"

    with monkeypatch.context() as patch:
        interrupt_at(patch, 7)
        assert main(argv) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    saved = torch.load(checkpoint, weights_only=True)  # plain tensors and numbers only
    assert saved["fit"]["iteration"] == 4 and sorted(saved) == ["fit", "format", "judge", "settings", "snapshots"]
    judge = saved["judge"]  # its whole state: the window of iterates too
    assert judge["judge"] == "wmv" and judge["seen"] == {"last": 4, "count": 4}
    assert judge["track"]["scores"].shape == (3, 2) and judge["iterations"] == [3, 4]  # windows ending at 2, 3, 4
    assert judge["frames"].shape == (2, 64 * 64 * 3) and judge["frames"].dtype == torch.float32
    good = checkpoint.read_bytes()

    assert main([*argv, "--lr", "0.02"]) == 1
    assert "was made with other settings (lr); run with the same options or delete it" in capsys.readouterr().err

    for damaged in (b"not a checkpoint", good[: len(good) // 2]):
        checkpoint.write_bytes(damaged)
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"{checkpoint} is damaged" in err and "delete it to start the image again" in err
        assert not (out / "a" / "done.json").exists()

    checkpoint.write_bytes(good)
    older = {**saved, "format": 1}  # WMV's window was not saved then: its judge could not resume exactly
    torch.save(older, checkpoint)
    assert main(argv) == 1
    assert "was made by another version of run_BDN (format 1, this one reads 2); delete it" in capsys.readouterr().err

    damaged = {**saved, "judge": {key: value for key, value in saved["judge"].items() if key != "frames"}}
    torch.save(damaged, checkpoint)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"checkpoint {checkpoint} does not fit this image (judge wmv: the saved state is damaged" in err

    saved["fit"]["ema"] = saved["fit"]["ema"][..., :8]  # loads, but is not this image's
    torch.save(saved, checkpoint)
    assert main(argv) == 1
    assert f"checkpoint {checkpoint} does not fit this image (resume_state: ema" in capsys.readouterr().err

    checkpoint.write_bytes(good)
    assert main(argv) == 0
    done = json.loads((out / "a" / "done.json").read_text())
    assert done["resumed_from"] == 4 and done["iterations"] == 12 and not checkpoint.exists()
    assert len(read_log(out / "a" / "log.csv")) == 12
    assert json.loads((out / "a" / "choice.json").read_text())["judge"] == "wmv"


def test_a_resumed_fit_equals_an_uninterrupted_one():
    clean = smooth(16, 0)
    noisy = (clean + np.random.default_rng(0).normal(0, 0.1, clean.shape)).astype(np.float32)
    for changes in ({}, {"input_perturbation": "random", "reference_perturbation": "random", "fallback_db": None}):
        config = replace(DipConfig(net_type=TINY, input_depth=4, num_iter=9, save_iter=2, show_iter=4), **changes)
        whole = fit_dip(noisy, clean, config, progress=False)
        states = []

        def keep(t, frame, states=states):
            if t == 5:
                states.append(frame.state())
                return True

        fit_dip(noisy, clean, config, progress=False, on_iteration=keep)
        resumed = fit_dip(noisy, clean, config, progress=False, resume_state=states[0])
        assert np.array_equal(resumed.ema, whole.ema) and np.array_equal(resumed.raw, whole.raw)
        assert resumed.history == whole.history and resumed.best_iteration == whole.best_iteration
        assert resumed.iterations == 9


def test_a_kept_final_state_lets_a_longer_run_go_on_exactly(tmp_path):
    """--keep-state: finished at 10 iterations, then run to 20: the same files as one 20-iteration run."""
    data = make_folder(tmp_path / "data", ["a", "b"])
    short, long = tiny_config(num_iter=10, save_iter=5), tiny_config(num_iter=20, save_iter=5)
    kept, whole = tmp_path / "kept", tmp_path / "whole"
    common = {"checkpoint_iter": 0, "progress": False, "echo": None, "device": "cpu"}
    run_folder(data / "real", data / "mean", kept, short, keep_state=True, **common)
    assert (kept / "a" / "checkpoint.pt").exists() and json.loads((kept / "a" / "done.json").read_text())[
        "iterations"
    ] == 10
    assert run_folder(data / "real", data / "mean", kept, short, **common).skipped == ["a", "b"]  # finished at 10
    report = run_folder(data / "real", data / "mean", kept, long, **common)  # no keep_state now: states dropped
    assert report.done == ["a", "b"] and report.resumed == {"a": 10, "b": 10}
    run_folder(data / "real", data / "mean", whole, long, **common)
    for name in ("00020.png", "log.csv", "result.png", "choice.json"):
        assert (kept / "a" / name).read_bytes() == (whole / "a" / name).read_bytes(), name
    done = json.loads((kept / "a" / "done.json").read_text())
    assert done["iterations"] == 20 and done["resumed_from"] == 10 and not (kept / "a" / "checkpoint.pt").exists()
    assert run_folder(data / "real", data / "mean", kept, tiny_config(num_iter=30, save_iter=5), **common).skipped == [
        "a",
        "b",
    ]  # no state kept the second time: finished for good


@pytest.mark.parametrize(
    ("stop", "at"),
    [
        (["--stop", "wmv", "--wmv_window", "5", "--wmv_patience", "10"], 17),  # stops at 24 uninterrupted
        (["--stop", "noise", "--noise_sigma", "25", "--noise_factor", "2", "--num_iter", "50"], 33),  # fires at 35
    ],
)
def test_a_resumed_judge_stops_and_chooses_as_an_uninterrupted_one(tmp_path, tiny_name, monkeypatch, stop, at):
    data = make_folder(tmp_path / "data", ["a"])
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean"), "--num_iter", "60"]
    argv += ["--save_iter", "1", "--checkpoint_iter", "5", *TINY_ARGS, *stop]
    with monkeypatch.context() as patch:
        interrupt_at(patch, at)
        assert main([*argv, "--output_path", str(tmp_path / "out")]) == 130
    checkpoint = torch.load(tmp_path / "out" / "a" / "checkpoint.pt", weights_only=True)
    assert checkpoint["fit"]["iteration"] == at // 5 * 5
    assert main([*argv, "--output_path", str(tmp_path / "out")]) == 0
    assert main([*argv, "--output_path", str(tmp_path / "alone")]) == 0
    done = {name: json.loads((tmp_path / name / "a" / "done.json").read_text()) for name in ("out", "alone")}
    assert done["out"]["resumed_from"] == at // 5 * 5 and done["out"]["stopped_early"]
    assert done["out"]["iterations"] == done["alone"]["iterations"] > at
    for name in ("choice.json", "result.png", "log.csv"):
        assert (tmp_path / "out" / "a" / name).read_bytes() == (tmp_path / "alone" / "a" / name).read_bytes(), name


def test_stop_noise_ends_the_fit_where_the_residual_reaches_the_noise(tmp_path, tiny_name):
    data = make_folder(tmp_path / "CC", ["a"])
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    argv += ["--output_path", str(out), "--num_iter", "60", "--save_iter", "2", "--stop", "noise"]
    assert main([*argv, "--noise_sigma", "25", "--noise_factor", "2", *TINY_ARGS]) == 0
    done = json.loads((out / "a" / "done.json").read_text())
    choice = json.loads((out / "a" / "choice.json").read_text())
    # patience 0: the fit ends at the first iteration whose EMA is within (2 x 25 / 255)^2 of the noisy image
    assert done["stopped_early"] and choice["judge"] == "noise" and choice["judge_iteration"] == done["iterations"]
    threshold = (2 * 25 / 255) ** 2
    assert 0.9 * threshold < choice["score"] <= threshold
    assert choice["iteration"] == choice["judge_iteration"] // 2 * 2
    assert (out / "a" / "result.png").read_bytes() == (out / "a" / choice["file"]).read_bytes()
    # The level estimated from the image (sigma 25 noise, clipped and rounded to 8 bits) makes a similar stop.
    assert main([*argv, "--noise_factor", "2", *TINY_ARGS, "--output_path", str(tmp_path / "estimated")]) == 0
    estimated = json.loads((tmp_path / "estimated" / "a" / "choice.json").read_text())
    assert estimated["judge"] == "noise" and abs(estimated["judge_iteration"] - choice["judge_iteration"]) <= 15


# --- learned initialisations (--init) ------------------------------------------------------------------


def tiny_init(path: Path, channels: int = 3, spec: NetSpec | None = None, seed: int = 7) -> dict:
    """A learned initialisation for net 'tiny' (noise input of depth 4): weights of a seeded net (of `spec`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        state = build_net(spec or TINY, 4, channels).state_dict()
    learned = InitConfig(dip=DipConfig(net_type="tiny", input_depth=4), steps=3)
    save_init(path, state, _metadata(learned, channels, 3, "test"))
    return state


def test_init_starts_every_fit_from_its_weights(tmp_path, tiny_name, monkeypatch, capsys):
    data = make_folder(tmp_path / "data", ["a"])
    init = tmp_path / "tiny.safetensors"
    state = tiny_init(init)
    config = tiny_config(net_type="skip", input_depth=32, num_iter=6, save_iter=3)  # the init replaces both
    said = []
    report = run_folder(
        data / "real",
        data / "mean",
        tmp_path / "out",
        config,
        progress=False,
        echo=said.append,
        device="cpu",
        init=str(init),
    )
    assert report.done == ["a"] and not report.problems
    assert said[0] == f"--init {init}: fits with net_type 'tiny', input_depth 4 (what it was learned for)"
    noisy, clean = read_image(data / "real" / "a_real.png")[0], read_image(data / "mean" / "a_mean.png")[0]
    direct = fit_dip(
        noisy, clean, tiny_config(net_type="tiny", num_iter=6, save_iter=3), init_state=state, progress=False
    )
    log = read_log(tmp_path / "out" / "a" / "log.csv")
    assert log["loss"].astype(float).tolist() == pytest.approx([row["loss"] for row in direct.history], rel=1e-7)
    plain = run_folder(
        data / "real",
        data / "mean",
        tmp_path / "plain",
        replace(config, net_type="tiny", input_depth=4),
        progress=False,
        echo=None,
        device="cpu",
    )
    assert plain.rows[0]["best_psnr"] != report.rows[0]["best_psnr"]  # a random start differs

    # A checkpoint remembers the init by content: made without it (or with another), it is not resumed with it.
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean"), *TINY_ARGS]
    argv += ["--output_path", str(tmp_path / "cli"), "--num_iter", "8", "--checkpoint_iter", "2"]
    with monkeypatch.context() as patch:
        interrupt_at(patch, 3)
        assert main(argv) == 130
    capsys.readouterr()
    assert main([*argv, "--init", str(init)]) == 1
    assert "was made with other settings (init)" in capsys.readouterr().err
    (tmp_path / "cli" / "a" / "checkpoint.pt").unlink()
    assert main([*argv, "--init", str(init)]) == 0
    assert json.loads((tmp_path / "cli" / "a" / "done.json").read_text())["iterations"] == 8


@pytest.mark.parametrize("kind", ["corrupt", "weights of another net", "grey init, colour images"])
def test_a_bad_init_gives_one_line_and_exit_1_with_nothing_written(tmp_path, tiny_name, capsys, kind):
    data = make_folder(tmp_path / "data", ["a", "b"])
    init = tmp_path / "bad.safetensors"
    if kind == "corrupt":
        init.write_bytes(np.random.default_rng(0).bytes(300))
        message = f"{init}: not a readable safetensors file"
    elif kind == "weights of another net":
        tiny_init(init, spec=replace(TINY, channels_down=(4, 8, 16)))
        message = f"--init {init}: its weights do not fit the net it names"
    else:
        tiny_init(init, channels=1)
        message = f"--init {init}: learned for channels=1, but this fit has channels=3"
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    assert main([*argv, "--output_path", str(out), "--num_iter", "3", "--init", str(init), *TINY_ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "".join(err) and all(message in line for line in err[-2:] if "failed" not in line)
    if kind == "grey init, colour images":  # each image fails alone, with the same line
        assert err[0].endswith("2 image(s) failed:") and err[1].strip().startswith(f"a: {message}")
    else:  # the file fails once, before any image
        assert len(err) == 1 and err[0].startswith("run_BDN.py: ")
    assert not out.exists() or list(out.iterdir()) == []


def test_resume_after_sigkill_finishes_every_image_once(tmp_path):
    names = ["a", "b", "c"]
    data = make_folder(tmp_path / "data", names)
    out = tmp_path / "out"
    common = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    common += ["--num_iter", "100", "--save_iter", "10", "--checkpoint_iter", "10", *TINY_ARGS]
    command = [sys.executable, str(wrapper(tmp_path)), *common, "--output_path", str(out)]
    process = subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    target = out / "b" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not target.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert target.exists() and (out / "a" / "done.json").exists()
    assert not (out / "b" / "done.json").exists(), "b finished before the kill: the test needs a slower fit"
    finished_a = {p.name: p.stat().st_mtime_ns for p in (out / "a").iterdir()}
    at = torch.load(target, weights_only=True)["fit"]["iteration"]

    config = tiny_config(num_iter=100, save_iter=10)
    report = run_folder(
        data / "real", data / "mean", out, config, checkpoint_iter=10, progress=False, echo=None, device="cpu"
    )
    assert report.skipped == ["a"] and report.done == ["b", "c"] and report.resumed == {"b": at}
    assert {p.name: p.stat().st_mtime_ns for p in (out / "a").iterdir()} == finished_a  # a was not done again
    assert sorted(p.parent.name for p in out.glob("*/done.json")) == names
    assert sorted(p.name for p in (out / "b").glob("0*.png")) == [f"{i:05d}.png" for i in range(10, 101, 10)]
    assert not list(out.glob("*/checkpoint.pt")) and len(pd.read_csv(out / "summary.csv")) == 3

    # The resumed image is exactly what an uninterrupted run gives.
    alone = tmp_path / "alone"
    for kind in ("real", "mean"):
        (alone / kind).mkdir(parents=True)
        (alone / kind / f"b_{kind}.png").write_bytes((data / kind / f"b_{kind}.png").read_bytes())
    run_folder(
        alone / "real", alone / "mean", alone, config, checkpoint_iter=0, progress=False, echo=None, device="cpu"
    )
    for name in ("00100.png", "log.csv", "result.png", "choice.json"):
        assert (out / "b" / name).read_bytes() == (alone / "b" / name).read_bytes(), name
    assert (out / "b.txt").read_text() == (alone / "b.txt").read_text()


# --- many processes and the seed's split ---------------------------------------------------------------


def test_torchrun_shares_the_images_between_two_processes(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    names = ["p", "q", "r", "s"]
    data = make_folder(tmp_path / "data", names)
    out = tmp_path / "out"
    command = [str(torchrun), "--standalone", "--nproc-per-node", "2", str(wrapper(tmp_path))]
    command += ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    command += ["--output_path", str(out), "--num_iter", "6", "--save_iter", "3", *TINY_ARGS]
    finished = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    ranks = {name: json.loads((out / name / "done.json").read_text())["rank"] for name in names}
    assert ranks == {"p": 0, "q": 1, "r": 0, "s": 1}  # sorted_list[rank::2]
    lines = [line for line in finished.stdout.splitlines() if " iterations in " in line]
    assert sorted(line.split(":")[0] for line in lines) == names  # each image fitted once
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == names  # rank 0, after the barrier
    assert "did not start" not in finished.stderr


def test_two_plain_processes_share_one_folder_through_its_locks(tmp_path):
    """Two `bdn run` processes over the same folder, no torchrun: each image is fitted once, by one of them."""
    names = ["p", "q", "r", "s"]
    data = make_folder(tmp_path / "data", names)
    out = tmp_path / "out"
    command = [sys.executable, str(wrapper(tmp_path)), "--dataset_real_path", str(data / "real")]
    command += ["--dataset_mean_path", str(data / "mean"), "--output_path", str(out), "--num_iter", "30"]
    command += ["--save_iter", "10", *TINY_ARGS]
    processes = [
        subprocess.Popen(command, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    said = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], [err[-2000:] for _, err in said]
    fitted = [line.split(":")[0] for out_text, _ in said for line in out_text.splitlines() if " iterations in " in line]
    assert sorted(fitted) == names  # each image once
    assert sorted(p.parent.name for p in out.glob("*/done.json")) == names and not list(out.glob("*/fitting.lock"))


def test_a_live_lock_is_passed_by_a_dead_one_taken_over_another_hosts_honoured(tmp_path, monkeypatch):
    import socket

    import bdn.dip.runfolder as runfolder

    data = make_folder(tmp_path / "data", ["a", "b", "c", "d"])
    out = tmp_path / "out"
    config = tiny_config(num_iter=4, save_iter=2)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name, owner in (("a", f"{socket.gethostname()} {os.getpid()}"), ("b", f"{socket.gethostname()} {gone.stdout}")):
        (out / name).mkdir(parents=True)
        (out / name / "fitting.lock").write_text(owner)
    for name in ("c", "d"):
        (out / name).mkdir()
        (out / name / "fitting.lock").write_text("another-host 1")
    old = time.time() - runfolder.LOCK_STALE_SECONDS - 5
    os.utime(out / "d" / "fitting.lock", (old, old))  # untouched too long: its run was killed, wherever it ran
    beats = []
    monkeypatch.setattr(run_module, "LOCK_BEAT_SECONDS", 0.0)  # touch the lock every iteration
    monkeypatch.setattr(run_module, "heartbeat", lambda lock: beats.append(lock.parent.name))
    lines = []
    report = run_folder(data / "real", data / "mean", out, config, progress=False, echo=lines.append, device="cpu")
    assert report.done == ["b", "d"] and report.busy == ["a", "c"]  # a: this live process; b: a process that ended
    assert any(line.startswith("a: being fitted by another process") for line in lines)
    assert not (out / "b" / "fitting.lock").exists() and (out / "a" / "fitting.lock").exists()
    assert beats == ["b"] * 4 + ["d"] * 4  # once an iteration here


def test_a_fit_whose_lock_was_taken_over_stops_and_leaves_the_lock_alone(tmp_path, monkeypatch):
    import bdn.dip.runfolder as runfolder

    data = make_folder(tmp_path / "data", ["a"])
    out = tmp_path / "out"
    calls = []

    def taken_over_at_the_second_beat(lock):
        calls.append(lock)
        if len(calls) == 2:  # as if this process had stood still and another had taken the image
            lock.write_text("elsewhere 1\n")
        runfolder.heartbeat(lock)

    monkeypatch.setattr(run_module, "LOCK_BEAT_SECONDS", 0.0)
    monkeypatch.setattr(run_module, "heartbeat", taken_over_at_the_second_beat)
    config = tiny_config(num_iter=6, save_iter=2)
    report = run_folder(data / "real", data / "mean", out, config, progress=False, echo=None, device="cpu")
    assert report.done == [] and len(calls) == 2
    assert "another process took this image over" in report.problems[0]
    assert (out / "a" / "fitting.lock").read_text() == "elsewhere 1\n" and not (out / "a" / "done.json").exists()


def test_without_a_process_group_each_rank_still_takes_its_share(tmp_path, monkeypatch, capsys):
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    data = make_folder(tmp_path / "data", ["p", "q", "r"])
    out = tmp_path / "out"
    config = tiny_config(num_iter=2, save_iter=2)
    assert _start_group(2, "run_BDN.py") is False  # bdn run then hands run_folder no barrier
    assert "run_BDN.py: torch.distributed (gloo) did not start" in capsys.readouterr().err
    report = run_folder(data / "real", data / "mean", out, config, progress=False, echo=None, device="cpu")
    assert report.done == ["q"] and [row["image"] for row in report.rows] == ["q"]  # the summary so far


def test_the_seeds_manual_split(tmp_path, tiny_name):
    items = [Item(str(k), None, None) for k in range(7)]
    parts = [split_part(items, part, 3) for part in (1, 2, 3)]
    assert [len(p) for p in parts] == [2, 3, 2] and sum(parts, []) == items  # contiguous, nothing dropped
    assert [i.name for i in select_items(items, part=(2, 3), rank=1, world=2)] == ["3"]
    with pytest.raises(BdnError, match="need 1 <= part <= parts"):
        split_part(items, 0, 3)

    data = make_folder(tmp_path / "data", ["a", "b", "c"])
    out = tmp_path / "out"
    argv = ["--dataset_real_path", str(data / "real"), "--dataset_mean_path", str(data / "mean")]
    argv += ["--output_path", str(out), "--num_iter", "3", "--save_iter", "3", *TINY_ARGS, "--is_split_dataset"]
    assert main([*argv, "--dataset_part_id", "2/2"]) == 0  # the seed's I/P form; parts of 2 and 1 images
    assert sorted(p.parent.name for p in out.glob("*/done.json")) == ["c"]
    assert main([*argv, "--dataset_part_id", "1", "--dataset_parts", "2"]) == 0
    assert pd.read_csv(out / "summary.csv")["image"].tolist() == ["a", "b", "c"]


def test_the_script_is_a_thin_front_end(tmp_path):
    (tmp_path / "empty").mkdir()
    command = [sys.executable, str(PROJECT / "run_BDN.py"), "--dataset_real_path", str(tmp_path / "empty")]
    finished = subprocess.run(
        [*command, "--output_path", str(tmp_path / "out")],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1 and finished.stdout == ""
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"run_BDN.py: error: {tmp_path / 'empty'}: no images found")


def test_stop_biqan_without_a_model_takes_the_shipped_network():

    from biqan.model import load_biqan, shipped_biqan

    path = shipped_biqan()
    assert path.name == "biqan.safetensors"
    net, info = load_biqan(path)  # the shipped file is a loadable BIQAN checkpoint
    assert sum(p.numel() for p in net.parameters()) > 1_000_000
