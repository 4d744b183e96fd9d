"""bdn train: config checks, a tiny training run, exact resume, and the files it writes."""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest
import torch
from conftest import tiny_train_config
from skimage import data as skdata

import bdn.train as train_module
from bdn.cli import run_script
from bdn.errors import BdnError
from bdn.models.weights import load_weights
from bdn.train import TrainingData, load_config, merge_config, split_validation

main = partial(run_script, "train", "bdn train")


@pytest.fixture
def clean_folder(tmp_path):
    """Six small grey images cut from scikit-image's camera and coins."""
    from bdn.io import write_image

    folder = tmp_path / "clean"
    folder.mkdir()
    camera, coins = skdata.camera() / 255.0, skdata.coins() / 255.0
    for k in range(3):
        write_image(folder / f"camera{k}.png", camera[k * 100 : k * 100 + 80, 100:180])
        write_image(folder / f"coins{k}.png", coins[k * 50 : k * 50 + 80, 60:140])
    return folder


def _config(tmp_path, folder, **train) -> str:
    config = tiny_train_config("resnet_5x5_bn_3x3", folder, **{"epochs": 2, **train})
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_training_writes_its_files_and_resumes_exactly(tmp_path, clean_folder, interrupt_on_call):
    config = _config(tmp_path, clean_folder)
    assert main(["--model-directory", str(tmp_path / "once"), "--pipeline-config", config, "--no-progress"]) == 0
    files = {p.name for p in (tmp_path / "once").iterdir()}
    assert {"best.safetensors", "last.safetensors", "checkpoint.pt", "log.csv", "curves.png", "pipeline.json"} <= files
    log = (tmp_path / "once" / "log.csv").read_text().splitlines()
    assert log[0] == "epoch,train_loss,val_psnr,lr,seconds" and len(log) == 3
    # Killed during the second epoch (after the first one's checkpoint), then run again: the resumed run ends with
    # the same weights as the uninterrupted one.
    restore = interrupt_on_call(train_module, "validate", 2)
    args = ["--model-directory", str(tmp_path / "twice"), "--pipeline-config", config, "--no-progress"]
    assert main(args) == 130
    restore()
    assert json.loads(torch.load(tmp_path / "twice" / "checkpoint.pt", weights_only=True)["log"])[-1]["epoch"] == 1
    assert main(args) == 0
    a, meta = load_weights(tmp_path / "once" / "last.safetensors")
    b, _ = load_weights(tmp_path / "twice" / "last.safetensors")
    assert meta["epoch"] == "2" and meta["model"] == "resnet_5x5_bn_3x3"
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_finished_run_says_so(tmp_path, clean_folder, capsys):
    config = _config(tmp_path, clean_folder, epochs=1)
    args = ["--model-directory", str(tmp_path / "m"), "--pipeline-config", config, "--no-progress"]
    assert main(args) == 0
    assert main(args) == 0
    assert "already trained for 1 epochs" in capsys.readouterr().out


def test_a_timed_run_stops_when_its_time_is_up(tmp_path, clean_folder, capsys):
    # 0.0001 minutes is spent by the first step: one epoch cut short, not 50, and then a finished run
    config = _config(tmp_path, clean_folder, epochs=50, minutes=0.0001)
    args = ["--model-directory", str(tmp_path / "m"), "--pipeline-config", config, "--no-progress"]
    assert main(args) == 0
    log = (tmp_path / "m" / "log.csv").read_text().splitlines()
    assert len(log) == 2  # header + one epoch
    assert main(args) == 0
    assert "already trained" in capsys.readouterr().out
    # more minutes (and other threads) on a resume: the run goes on, here to its cap of two epochs
    longer = json.loads((tmp_path / "config.json").read_text())
    longer["train"].update(minutes=1, epochs=2, threads=2)
    (tmp_path / "config.json").write_text(json.dumps(longer))
    assert main(args) == 0
    assert len((tmp_path / "m" / "log.csv").read_text().splitlines()) == 3


def test_a_checkpoint_of_another_config_is_refused(tmp_path, clean_folder, capsys):
    config = _config(tmp_path, clean_folder, epochs=1)
    main(["--model-directory", str(tmp_path / "m"), "--pipeline-config", config, "--no-progress"])
    changed = json.loads((tmp_path / "config.json").read_text())
    changed["train"]["lr"] = 0.01
    (tmp_path / "other.json").write_text(json.dumps(changed))
    assert main(["--model-directory", str(tmp_path / "m"), "--pipeline-config", str(tmp_path / "other.json")]) == 1
    assert "made with another config" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"modle": {}}, "unknown section 'modle'"),
        ({"model": {"name": "nope"}}, "unknown model 'nope'"),
        ({"model": {"channels": 2}}, "model.channels must be 1 or 3"),
        ({"data": {"kind": "video"}}, "data.kind must be"),
        ({"data": {"patch": 0}}, "data.patch must be a positive integer"),
        ({"noise": {"additive": [30, 10]}}, "noise.additive must be"),
        ({"train": {"epochs": 0}}, "train.epochs must be"),
        ({"train": {"speed": 1}}, "train has no key speed"),
        ({"train": {"minutes": -1}}, "train.minutes must be a number >= 0"),
    ],
)
def test_config_errors(given, message):
    with pytest.raises(BdnError, match=message):
        merge_config(given)


def test_config_file_errors(tmp_path, capsys):
    with pytest.raises(BdnError, match="no such pipeline config"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    assert main(["--model-directory", str(tmp_path / "m"), "--pipeline-config", str(tmp_path / "bad.json")]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_synthetic_batches_hold_blind_noise(clean_folder):
    config = merge_config({"data": {"dataset": str(clean_folder), "patch": 32, "val_fraction": 0.3}})
    config["noise"]["additive"] = [20, 20]
    data = TrainingData(config)
    assert data.counts == {"train": 4, "validation": 2}
    noisy, clean = data.batch(64, np.random.default_rng(0))
    assert noisy.shape == clean.shape == (64, 1, 32, 32)
    assert abs(float((noisy - clean).std()) - 20 / 255) < 0.003
    config["noise"].update(multiplicative=[30, 30], multiplicative_probability=1.0)
    noisy, clean = TrainingData(config).batch(64, np.random.default_rng(0))
    ratio = (noisy - clean)[clean > 0.2] / clean[clean > 0.2]
    assert abs(float(ratio.std()) - 30 / 255) < 0.005


def test_validation_holds_out_whole_polyu_scenes():
    names = [f"Canon5D2_5_160_3200_chair_{k}" for k in (10, 11, 12)] + [f"Sony_4-5_125_3200_plant_{k}" for k in (1, 2)]
    held = split_validation(names, 0.5)
    assert held and all(n.split("_")[-2] == next(iter(held)).split("_")[-2] for n in held)
    assert len(held) in (2, 3)


def test_seed_004_keys_losses_and_fine_tuning(tmp_path, clean_folder):
    first = {
        "model": "resnet_5x5_bn_3x3",  # seed 004 names the model by a string
        "dataset": str(clean_folder),
        "device": "cpu",
        "save_weight_path": str(tmp_path / "seed_style"),
        "data": {"patch": 24, "patches_per_epoch": 16, "batch_size": 8, "val_fraction": 0.3, "val_crop": 48},
        "loss": {"mse": 0.0, "l1": 1.0, "ssim": 0.5, "tv": 0.01},
        "train": {"epochs": 1, "threads": 1},
    }
    (tmp_path / "seed.json").write_text(json.dumps(first))
    assert main(["--pipeline-config", str(tmp_path / "seed.json"), "--no-progress"]) == 0
    saved = json.loads((tmp_path / "seed_style" / "pipeline.json").read_text())
    assert saved["model"]["name"] == "resnet_5x5_bn_3x3" and saved["train"]["device"] == "cpu"
    assert saved["loss"] == {"mse": 0.0, "l1": 1.0, "ssim": 0.5, "tv": 0.01, "kl": 0.0}
    # load_weight_path (the seed's spelling too) starts a new run from those weights.
    second = dict(first, load_weigth_path=str(tmp_path / "seed_style" / "best.safetensors"))
    second["train"] = {"epochs": 1, "threads": 1, "lr": 1e-12, "min_lr": 1e-12}  # (almost) no step: weights kept
    (tmp_path / "tune.json").write_text(json.dumps(second))
    assert main(["--model-directory", str(tmp_path / "tuned"), "--pipeline-config", str(tmp_path / "tune.json")]) == 0
    a, _ = load_weights(tmp_path / "seed_style" / "best.safetensors")
    b, _ = load_weights(tmp_path / "tuned" / "last.safetensors")
    assert torch.allclose(a.stem.weight, b.stem.weight, atol=1e-6)


def test_seed_datasets_that_cannot_be_downloaded_say_so(tmp_path, capsys):
    config = {"model": "resnet_5x5_bn_3x3", "dataset": "STL10", "save_weight_path": str(tmp_path / "m")}
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert main(["--pipeline-config", str(tmp_path / "c.json")]) == 1
    assert "'STL10' cannot be downloaded on this machine" in capsys.readouterr().err
    (tmp_path / "d.json").write_text(json.dumps({"model": "resnet_5x5_bn_3x3"}))
    assert main(["--pipeline-config", str(tmp_path / "d.json")]) == 1
    assert "give --model-directory (or save_weight_path in the config)" in capsys.readouterr().err


def test_salt_pepper_and_uniform_noise(clean_folder):
    config = merge_config({"data": {"dataset": str(clean_folder), "patch": 32, "val_fraction": 0.3}})
    config["noise"].update(salt_pepper=[0.1, 0.1], salt_pepper_probability=1.0)
    noisy, clean = TrainingData(config).batch(32, np.random.default_rng(0))
    changed = (noisy != clean).float().mean()
    assert 0.07 < float(changed) < 0.11 and set(torch.unique(noisy[noisy != clean]).tolist()) <= {0.0, 1.0}
    config["noise"].update(salt_pepper_probability=0.0, uniform=[20, 20], uniform_probability=1.0)
    noisy, clean = TrainingData(config).batch(32, np.random.default_rng(0))
    assert abs(float((noisy - clean).abs().max()) - 20 / 255) < 1e-3
    assert abs(float((noisy - clean).std()) - 20 / 255 / np.sqrt(3)) < 0.003
    with pytest.raises(BdnError, match="sum to at most 1"):
        merge_config({"noise": {"uniform_probability": 0.7, "salt_pepper_probability": 0.5}})
    with pytest.raises(BdnError, match="every loss weight is 0"):
        merge_config({"loss": {"mse": 0}})
    with pytest.raises(BdnError, match="loss has no key psnr"):
        merge_config({"loss": {"psnr": 1}})
    with pytest.raises(BdnError, match="loss.l1 must be a weight >= 0"):
        merge_config({"loss": {"l1": -1}})


def test_recalibrated_norms_hold_the_average_batch_variance(clean_folder):
    from bdn.models import build_model
    from bdn.train import recalibrate_norms

    config = merge_config({"data": {"dataset": str(clean_folder), "patch": 24, "val_fraction": 0.3}})
    data = TrainingData(config)
    net = build_model("bf_dncnn", 1).eval()
    first_norm = net.bn_layer_list[0]
    recalibrate_norms(net, data, 3, 4, seed=5, device="cpu")
    # The same three batches again, their first norm's input variances averaged by hand.
    rng, variances = np.random.default_rng(5), []
    with torch.no_grad():
        for _ in range(3):
            noisy, _ = data.batch(4, rng)
            h = net.hidden_layer_list[0](torch.relu(net.first_layer(noisy)))
            variances.append(h.var(dim=(0, 2, 3), unbiased=False))
    assert torch.allclose(first_norm.running_var, torch.stack(variances).mean(0), rtol=1e-5)
    assert first_norm.momentum == 0.1 and not net.training


def test_bf16_training_runs_and_a_bad_precision_is_one_line(tmp_path, clean_folder, capsys):
    psnr = {}
    for precision in ("fp32", "bf16"):
        (tmp_path / precision).mkdir()
        config = _config(tmp_path / precision, clean_folder, epochs=1, precision=precision)
        args = ["--model-directory", str(tmp_path / precision), "--pipeline-config", config, "--no-progress"]
        assert main(args) == 0
        net, meta = load_weights(tmp_path / precision / "best.safetensors")
        psnr[precision] = float(meta["val_psnr"])
        assert all(p.is_contiguous() for p in net.state_dict().values())  # channels-last weights saved plainly
    assert abs(psnr["bf16"] - psnr["fp32"]) < 0.5  # the same training, computed in bf16
    bad = _config(tmp_path, clean_folder, precision="half")
    assert main(["--model-directory", str(tmp_path / "bad"), "--pipeline-config", bad]) == 1
    assert "train.precision must be auto, fp32 or bf16, got 'half'" in capsys.readouterr().err


@pytest.fixture
def pair_folders(tmp_path):
    """Six colour pairs (noisy = clean + Gaussian sigma 10) cut from scikit-image's astronaut."""
    from bdn.io import write_image

    noisy_dir, clean_dir = tmp_path / "real", tmp_path / "mean"
    noisy_dir.mkdir()
    clean_dir.mkdir()
    astronaut = skdata.astronaut() / 255.0
    rng = np.random.default_rng(0)
    for k in range(6):
        clean = astronaut[k * 60 : k * 60 + 64, 200:264]
        write_image(clean_dir / f"a{k}_mean.png", clean)
        write_image(noisy_dir / f"a{k}_real.png", np.clip(clean + rng.normal(0, 10 / 255, clean.shape), 0, 1))
    return {"noisy": str(noisy_dir), "clean": str(clean_dir)}


def test_mixed_batches_hold_real_pairs_and_synthetic_noise(pair_folders):
    config = merge_config(
        {
            "model": {"channels": 3},
            "data": {"kind": "mixed", "dataset": pair_folders, "patch": 32, "val_fraction": 0.3, "val_crop": 32},
            "noise": {"additive": [40, 40]},
        }
    )
    data = TrainingData(config)
    assert data.counts == {"train": 4, "validation": 2}
    assert len(data.validation) == 2 + 2 * 3  # the held pairs, and their clean halves at the three sigmas
    noisy, clean = data.batch(200, np.random.default_rng(0))
    assert noisy.shape == clean.shape == (200, 3, 32, 32)
    level = (noisy - clean).flatten(1).std(1) * 255
    synthetic, real = int((level > 25).sum()), int((level < 15).sum())
    assert synthetic + real == 200 and 70 < synthetic < 130  # half and half, drawn per batch
    config["data"]["synthetic_share"] = 0.0
    noisy, clean = TrainingData(config).batch(50, np.random.default_rng(0))
    assert float(((noisy - clean).flatten(1).std(1) * 255).max()) < 15
    config["data"]["synthetic_share"] = 1.0
    config["noise"].update(camera=[30, 30], camera_probability=1.0, jpeg_probability=1.0, jpeg_quality=[80, 80])
    noisy, clean = TrainingData(config).batch(8, np.random.default_rng(0))
    assert torch.equal(noisy, torch.round(noisy * 255) / 255)  # every patch went through an 8-bit JPEG
    n = (noisy - clean)[:, 1]
    assert float(torch.corrcoef(torch.stack([n[:, :, :-1].flatten(), n[:, :, 1:].flatten()]))[0, 1]) > 0.3


def test_mixed_validation_weighs_real_pairs_and_synthetic_noise_by_part(pair_folders):
    config = merge_config(
        {
            "model": {"channels": 3},
            "data": {"kind": "mixed", "dataset": pair_folders, "val_fraction": 0.3, "val_crop": 32},
        }
    )
    data, identity = TrainingData(config), torch.nn.Identity()
    each = train_module.validation_psnrs(identity, data.validation, "cpu")
    real, synthetic = float(np.mean(each[:2])), float(np.mean(each[2:]))  # 2 held pairs, then 2 x 3 sigmas
    assert real > synthetic + 5  # the folders' real noise is mild, the synthetic goes to sigma 50
    scores = train_module.validate(identity, data, "cpu")
    assert scores["val_psnr_real"] == pytest.approx(real) and scores["val_psnr_synthetic"] == pytest.approx(synthetic)
    assert scores["val_psnr"] == pytest.approx((real + synthetic) / 2)  # not the mean of 8 images, 6 synthetic
    data.real_weight = 0.8
    assert train_module.validate(identity, data, "cpu")["val_psnr"] == pytest.approx(0.8 * real + 0.2 * synthetic)
    config["data"]["kind"] = "pairs"
    assert set(train_module.validate(identity, TrainingData(config), "cpu")) == {"val_psnr"}


@pytest.mark.parametrize(
    ("noise", "message"),
    [
        ({"camera_probability": 0.6, "poisson_gaussian_probability": 0.6}, "sum to at most 1"),
        ({"jpeg_probability": 1.5}, "noise.jpeg_probability must be in"),
        ({"jpeg_quality": [90, 80]}, "noise.jpeg_quality"),
        ({"camera": [10]}, "noise.camera must be"),
    ],
)
def test_mixed_noise_config_errors(noise, message):
    with pytest.raises(BdnError, match=message):
        merge_config({"noise": noise})
    with pytest.raises(BdnError, match="data.synthetic_share must be in"):
        merge_config({"data": {"kind": "mixed", "synthetic_share": 2}})
    with pytest.raises(BdnError, match="data.val_real_weight must be in"):
        merge_config({"data": {"kind": "mixed", "val_real_weight": -0.1}})
