"""train_BIQAN (biqan.train): a tiny run's files, the split by source image, exact resume, two stages, torchrun
and bad input.

Everything is tiny: 16 iterates (48x48 PNG snapshots of 4 source images, made here), 32-pixel crops, 1-2 epochs,
no DataLoader workers, one thread.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data as skdata
from torchvision.models import mobilenet_v3_small

import biqan.train as train_module
from bdn.cli import run_script
from bdn.errors import BdnError
from bdn.io import read_image, write_image
from bdn.tensorfile import read_tensors, save_tensors
from biqan.labels import read_scores, score_distribution, write_scores
from biqan.model import load_biqan
from biqan.train import split_by_image

main = partial(run_script, "train-biqan", "train_BIQAN.py")

pytestmark = pytest.mark.usefixtures("torch_one_thread")
PROJECT = Path(__file__).resolve().parent.parent
IMAGES = ("camera", "coins", "moon", "page")


@pytest.fixture(scope="module")
def scores(tmp_path_factory) -> Path:
    """A fake run folder (4 images x 4 noisy-to-clean iterates, 48x48) and its score file `run/scores.txt`."""
    run = tmp_path_factory.mktemp("biqan") / "run"
    rng = np.random.default_rng(0)
    rows = []
    for name in IMAGES:
        clean = getattr(skdata, name)()[100:148, 100:148] / 255.0
        for k, sigma in enumerate((40, 25, 12, 5)):
            path = run / name / f"{(k + 1) * 20:05d}.png"
            write_image(path, np.clip(clean + rng.normal(0, sigma / 255, clean.shape), 0, 1))
            rows.append((path, score_distribution(20.0 + 4 * k)))
    return write_scores(run / "scores.txt", rows)


def _args(scores: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--score_path", str(scores), "--output_path", str(out), "--crop", "32", "--batch_size", "4",
        "--epochs", "2", "--val_fraction", "0.25", "--threads", "1", "--workers", "0", "--no_progress", *extra,
    ]  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_tensors(path)[0]


def test_validation_holds_out_whole_source_images(scores):
    paths = [p for p, _ in read_scores(scores)]
    train, val = split_by_image(paths, 0.25, seed=0)
    assert sorted(train + val) == list(range(16)) and len(val) == 4
    train_images, val_images = {paths[k].parent.name for k in train}, {paths[k].parent.name for k in val}
    assert not train_images & val_images and len(val_images) == 1
    # the same image in a second run (another score file) stays on the same side
    twice = paths + [Path("/other/run") / p.parent.name / p.name for p in paths]
    train2, val2 = split_by_image(twice, 0.25, seed=0)
    assert {twice[k].parent.name for k in val2} == val_images and len(val2) == 8
    assert {twice[k].parent.name for k in train2} == train_images
    held = [{paths[k].parent.name for k in split_by_image(paths, 0.5, seed)[1]} for seed in range(6)]
    assert all(len(h) == 2 for h in held) and len({frozenset(h) for h in held}) > 1  # seeded
    with pytest.raises(BdnError, match="at least 2 are needed"):
        split_by_image([p for p in paths if p.parent.name == "moon"], 0.25, 0)


def test_validation_holds_out_whole_polyu_scenes():
    # Three crops of one scene (camera + scene word) and two of another: a scene is never on both sides.
    names = [f"Canon5D2_5_160_3200_chair_{k}" for k in (10, 11, 12)] + [f"Sony_4-5_125_3200_plant_{k}" for k in (1, 2)]
    paths = [Path("run") / name / f"{i:05d}.png" for name in names for i in (20, 40)]
    for seed in range(4):
        train, val = split_by_image(paths, 0.3, seed)
        scenes = [{paths[k].parent.name.split("_")[-2] for k in side} for side in (train, val)]
        assert len(scenes[0]) == len(scenes[1]) == 1 and scenes[0] != scenes[1]


def test_training_writes_its_files_and_resumes_exactly(tmp_path, scores, interrupt_on_call, capsys):
    once = tmp_path / "once"
    assert main(_args(scores, once)) == 0
    assert {"best.safetensors", "last.safetensors", "checkpoint.pt", "log.csv", "curves.png", "split.json"} <= {
        p.name for p in once.iterdir()
    }
    log = list(csv.DictReader((once / "log.csv").open()))
    assert list(log[0]) == ["epoch", "layers", "train_emd", "val_emd", "lr", "seconds"]
    assert [r["epoch"] for r in log] == ["1", "2"] and {r["layers"] for r in log} == {"all"}
    assert all(0 < float(r["val_emd"]) < 1 for r in log)
    split = json.loads((once / "split.json").read_text())
    assert len(split["validation"]) == 1 and sorted(split["train"] + split["validation"]) == sorted(IMAGES)
    model, meta = load_biqan(once / "last.safetensors")
    assert meta["epoch"] == "2" and meta["protocol"] == "native" and meta["crop"] == 32
    best = min(log, key=lambda r: float(r["val_emd"]))
    assert load_biqan(once / "best.safetensors")[1]["epoch"] == best["epoch"]
    err = capsys.readouterr().err
    assert "rank 0 of 1 on cpu: 12 of 12 training iterates per epoch (batch 4), 4 of 4 validation" in err

    # Interrupted during epoch 2 (after epoch 1's checkpoint), then run again: it ends as the uninterrupted run.
    restore = interrupt_on_call(train_module, "validate", 2)
    twice = tmp_path / "twice"
    assert main(_args(scores, twice)) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    restore()
    assert torch.load(twice / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert main(_args(scores, twice)) == 0
    a, b = _weights(once / "last.safetensors"), _weights(twice / "last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    logs = [list(csv.DictReader((d / "log.csv").open())) for d in (once, twice)]
    assert [{k: r[k] for k in ("epoch", "train_emd", "val_emd", "lr")} for r in logs[0]] == [
        {k: r[k] for k in ("epoch", "train_emd", "val_emd", "lr")} for r in logs[1]
    ]
    # finished: says so; other settings: refused
    assert main(_args(scores, once)) == 0
    assert "already finished after 2 epochs" in capsys.readouterr().out
    assert main(_args(scores, once, "--lr", "0.01")) == 1
    assert "made with other settings (lr)" in capsys.readouterr().err


def test_two_stages_with_a_backbone(tmp_path, scores):
    torch.manual_seed(0)
    backbone = mobilenet_v3_small(weights=None).state_dict()
    save_tensors(tmp_path / "backbone.safetensors", backbone, {})
    out = tmp_path / "staged"
    args = _args(scores, out, "--backbone", str(tmp_path / "backbone.safetensors"), "--head_epochs", "1")
    args += ["--protocol", "resize"]  # the seed's inputs: resized to 37 pixels (256/224 x 32), cropped to 32
    assert main([*args, "--epochs", "1"]) == 0  # stage 1 only: the backbone is untouched, the head learned
    after_head = _weights(out / "last.safetensors")
    assert all(torch.equal(after_head[k], backbone[k]) for k in after_head if not k.startswith("classifier.3"))
    assert main(args) == 0  # resumed for a second epoch: stage 2 trains all layers
    assert [r["layers"] for r in csv.DictReader((out / "log.csv").open())] == ["head", "all"]
    assert load_biqan(out / "last.safetensors")[1]["protocol"] == "resize"
    after_all = _weights(out / "last.safetensors")
    assert not torch.equal(after_all["features.0.0.weight"], backbone["features.0.0.weight"])


def test_plateaus_reduce_the_rate_and_stop_training(tmp_path, scores, monkeypatch, capsys):
    # A validation loss that never improves after epoch 1: the rate drops 5x after every 2 such epochs (the seed's
    # Keras ReduceLROnPlateau, patience 2) and training stops after 8 of them (EarlyStopping, patience 8).
    monkeypatch.setattr(train_module, "train_epoch", lambda *args: (0.5, 1))
    monkeypatch.setattr(train_module, "validate", lambda *args: (0.3, 1))
    monkeypatch.setattr(train_module, "_plot", lambda *args: None)
    out = tmp_path / "plateau"
    assert main(_args(scores, out, "--epochs", "20")) == 0
    log = list(csv.DictReader((out / "log.csv").open()))
    assert [float(r["lr"]) for r in log] == pytest.approx([1e-3] * 3 + [2e-4] * 2 + [4e-5] * 2 + [8e-6] * 2)
    assert "early stop: no better validation EMD for 8 epochs" in capsys.readouterr().out
    assert load_biqan(out / "best.safetensors")[1]["epoch"] == "1"
    assert main(_args(scores, out, "--epochs", "20")) == 0
    assert "already stopped early after 9 epochs" in capsys.readouterr().out


def test_torchrun_two_processes(tmp_path, scores):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(PROJECT / "train_BIQAN.py"), *_args(scores, out, "--epochs", "1")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT)}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    for rank in (0, 1):  # each process trained its half of the 12 training iterates
        assert f"rank {rank} of 2 on cpu: 6 of 12 training iterates per epoch (batch 4)" in finished.stderr
    assert finished.stdout.count("epoch 1/1") == 1  # only rank 0 reports (and writes)
    assert {"best.safetensors", "last.safetensors", "checkpoint.pt", "log.csv", "curves.png"} <= {
        p.name for p in out.iterdir()
    }
    assert len(list(csv.DictReader((out / "log.csv").open()))) == 1
    assert load_biqan(out / "best.safetensors")[1]["epoch"] == "1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing_file", "no such score file"),
        ("missing_image", "does not exist"),
        ("small_image", "smaller than --crop 64"),
        ("one_image", "at least 2 are needed"),
        ("bad_option", "--val_fraction 1.0: must be between 0 and 1"),
        ("corrupt_image", "truncated or corrupt image file"),  # found by a DataLoader worker
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, scores, change, message, capsys):
    rows = read_scores(scores)
    path, extra = tmp_path / "scores.txt", []
    if change == "missing_image":
        rows[3] = (tmp_path / "gone" / "00001.png", rows[3][1])
    elif change == "one_image":
        rows = [r for r in rows if r[0].parent.name == "moon"]
    elif change == "small_image":
        extra = ["--crop", "64"]
    elif change == "bad_option":
        extra = ["--val_fraction", "1.0"]
    elif change == "corrupt_image":
        data = rows[5][0].read_bytes()
        rows[5] = (tmp_path / "cut" / "00001.png", rows[5][1])
        rows[5][0].parent.mkdir()
        rows[5][0].write_bytes(data[: len(data) // 2])
        extra = ["--workers", "1"]
    if change != "missing_file":
        write_scores(path, rows)
    out = tmp_path / "out"
    assert main(_args(path, out, *extra)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("train_BIQAN.py: error: ") and message in err[-1], err
    assert all(line.startswith("train_BIQAN.py: rank 0 of 1") for line in err[:-1])  # no traceback
    assert not out.exists()


def test_tiles_give_each_iterate_several_crops(scores, tmp_path, capsys):
    from biqan.model import prepare_tiles
    from biqan.train import IterateSet

    rows = read_scores(scores)[:2]
    train = IterateSet(rows, "native", 32, seed=0, train=True, tiles=2)
    assert len(train) == 8 and train[0][0].shape == (3, 32, 32)
    assert torch.equal(train[0][1], train[3][1]) and not torch.equal(train[0][0], train[1][0])  # one label, 4 views
    val = IterateSet(rows, "native", 32, seed=0, train=False, tiles=2)
    grid = prepare_tiles(read_image(rows[0][0])[0], "native", 32, 2)
    assert all(torch.equal(val[k][0], grid[k]) for k in range(4))  # the grid scoring averages over
    assert main(_args(scores, tmp_path / "tiled", "--tiles", "2", "--epochs", "1")) == 0
    assert "2x2 crops of each" in capsys.readouterr().err
    assert main(_args(scores, tmp_path / "bad", "--tiles", "0")) == 1
