"""Issue 19, item 4: every model a user can name has weights or is hidden; `--weights FILE` for any model that
`bdn train` trained, the loaded file named in the output row and the run record."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import tiny_train_config
from skimage import data as skdata

import bdn
from bdn.cli import main
from bdn.errors import BdnError
from bdn.io import write_image
from bdn.methods import METHODS, get_method, unshipped_models
from bdn.record import record_path

UNSHIPPED = "gated_resnet_5x5_bn_3x3"  # registered, no weights ship (checkpoints/)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny unshipped model trained one epoch by `bdn train` (test_train.py's tiny config): its best weights."""
    root = tmp_path_factory.mktemp("trained")
    folder = root / "clean"
    folder.mkdir()
    camera = skdata.camera() / 255.0
    for k in range(4):
        write_image(folder / f"camera{k}.png", camera[k * 100 : k * 100 + 80, 100:180])
    config = tiny_train_config(UNSHIPPED, folder)
    (root / "config.json").write_text(json.dumps(config))
    args = ["train", "--model-directory", str(root / "model"), "--pipeline-config", str(root / "config.json")]
    assert main([*args, "--no-progress"]) == 0
    return root / "model" / "best.safetensors"


@pytest.fixture
def noisy_png(tmp_path):
    path = tmp_path / "noisy.png"
    write_image(path, np.clip(bdn.add_noise(skdata.camera()[:64, :64] / 255.0, "gaussian", 25, seed=0), 0, 1))
    return path


def test_unshipped_models_are_hidden_but_nameable():
    assert UNSHIPPED in unshipped_models() and UNSHIPPED not in METHODS
    assert "resnet_5x5_bn_3x3" in METHODS and "resnet_5x5_bn_3x3" not in unshipped_models()
    assert get_method(UNSHIPPED).family == "model"


def test_methods_lists_unshipped_models_only_when_asked(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert UNSHIPPED not in out and "resnet_5x5_bn_3x3 " in out and "--all" in out
    assert main(["methods", "--all"]) == 0
    assert UNSHIPPED in capsys.readouterr().out


def test_unshipped_model_without_weights_says_how(tmp_path, noisy_png, capsys):
    assert main(["denoise", str(noisy_png), "-m", UNSHIPPED, "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ships no trained weights" in err[0] and "--weights FILE" in err[0]
    assert "bdn train" in err[0] and not (tmp_path / "out").exists()


def test_trained_model_denoises_with_weights_named_in_row_and_record(tmp_path, noisy_png, trained, capsys):
    out = tmp_path / "out"
    assert main(["denoise", str(noisy_png), "-m", UNSHIPPED, "--weights", str(trained), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(trained) in printed and "1 denoised" in printed  # the row names the loaded file
    record = json.loads(record_path(out / "noisy.png").read_text())
    assert [entry["path"] for entry in record["weights"]] == [str(trained)]
    assert record["weights"][0]["sha256"]
    # Without -m, the model the file was trained for.
    again = tmp_path / "again"
    assert main(["denoise", str(noisy_png), "--weights", str(trained), "-o", str(again)]) == 0
    assert np.array_equal(bdn.read_image(again / "noisy.png")[0], bdn.read_image(out / "noisy.png")[0])


def test_library_call_takes_weights(noisy_png, trained):
    image = bdn.read_image(noisy_png)[0]
    result = bdn.denoise(image, UNSHIPPED, weights=trained)
    assert result.shape == image.shape and result.dtype == np.float32
    with pytest.raises(BdnError, match="ships no trained weights"):
        bdn.denoise(image, UNSHIPPED)


def test_weights_of_another_model_refused_in_one_line(tmp_path, noisy_png, trained, capsys):
    assert main(["denoise", str(noisy_png), "-m", "resnet_5x5_bn_3x3", "--weights", str(trained), "-o", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"model {UNSHIPPED!r}, not 'resnet_5x5_bn_3x3'" in err[0]


def test_weights_for_a_method_without_weights_refused(tmp_path, noisy_png, trained, capsys):
    assert main(["denoise", str(noisy_png), "-m", "nlm", "--weights", str(trained), "-o", str(tmp_path / "o")]) == 1
    assert "nlm has no parameter weights" in capsys.readouterr().err
