"""bdn.export: ONNX and TorchScript files that match PyTorch at any size, and one-line errors that leave OUT alone.

Each model is exported once (module fixture, the slow part: torch.export + the ONNX exporter take 5-20 s a model)
with weights randomised far from the identity a fresh model starts near, so a wrong padding or a baked-in size
shows up as a real difference. onnxruntime is imported at the top on purpose: without it these tests fail, they
do not skip (CI installs it).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

import bdn.export
from bdn.cli import run_script
from bdn.models import build_model, load_model
from bdn.models.weights import save_weights

main = partial(run_script, "export", "bdn export")

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

# The gated resnet holds the plain blocks plus gates; the pyramid adds padding and resampling. (Each export takes
# 10-30 s here, so the plain resnet alone is not exported again.)
MODELS = [("lp3_resnet_5x5_bn_3x3", 3), ("gated_resnet_5x5_bn_3x3", 1)]
# (N, H, W): odd and even sides, sizes the export's own check did not use, one at the pyramid's smallest side
SIZES = [(1, 64, 64), (2, 37, 45), (3, 30, 17), (1, 5, 9)]


def _randomise(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Weights as a trained model might have: He-scaled convolutions, a head that changes the image by a few
    percent, varied batch-norm statistics, and block gates that switch some blocks off."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in net.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                scale = math.sqrt(2.0 / fan_in) * (0.03 if name.endswith("head") else 1.0)
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * scale)
            elif isinstance(module, torch.nn.Linear):  # a BlockGate's score
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 3)
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
            elif hasattr(module, "running_var"):
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) * 1.5 + 0.5)
    return net.eval()


def _write_model_dir(folder: Path, name: str, channels: int, config_name: str | None = None, seed: int = 0) -> Path:
    """A model directory as the trainer leaves it (best.safetensors, last.safetensors) and a config beside it."""
    net = _randomise(build_model(name, channels), seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "best.safetensors", net, name, channels, epochs="3")
    save_weights(folder / "last.safetensors", _randomise(build_model(name, channels), seed + 1), name, channels)
    config = {"model": {"name": config_name or name, "channels": channels}, "train": {"epochs": 3}}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def _run(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(list(args))
    return code, stdout.getvalue(), stderr.getvalue()


def _inputs(channels: int, seed: int = 7):
    generator = torch.Generator().manual_seed(seed)
    for batch, height, width in SIZES:
        yield torch.rand(batch, channels, height, width, generator=generator)


@pytest.fixture(scope="module", params=MODELS, ids=[name for name, _ in MODELS])
def exported(request, tmp_path_factory, torch_one_thread):
    """(name, channels, model dir, OUT, stdout) after `--to-onnx --to-torchscript` of one model."""
    name, channels = request.param
    root = tmp_path_factory.mktemp(name)
    model_dir = _write_model_dir(root / "run", name, channels)
    out = root / "exported"
    code, stdout, stderr = _run(
        "--checkpoint-directory", str(model_dir), "--pipeline-config", str(model_dir / "config.json"),
        "--output-directory", str(out), "--to-onnx", "--to-torchscript",
    )  # fmt: skip
    assert code == 0, stderr
    return name, channels, model_dir, out, stdout


def _reference(model_dir: Path, name: str, channels: int):
    return load_model(name, channels, weights=model_dir / "best.safetensors")


def test_export_writes_the_files_and_a_record_of_the_checks(exported):
    name, channels, model_dir, out, stdout = exported
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx", "model.pt", "model_uint8.pt"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # the staging folder is gone
    info = json.loads((out / "export.json").read_text(encoding="utf-8"))
    assert (info["model"], info["channels"], info["tolerance"]) == (name, channels, 1e-4)
    assert info["weights"] == str(model_dir / "best.safetensors")
    assert info["weights_metadata"]["epochs"] == "3"
    assert info["min_side"] == (5 if name.startswith("lp3") else 1)
    onnx_info = info["onnx"]
    assert (onnx_info["opset"], onnx_info["input_names"], onnx_info["output_names"]) == (18, ["noisy"], ["denoised"])
    labels = [f"{n}x{channels}x{h}x{w}" for n, h, w in bdn.export.CHECK_SIZES]
    for key in ("onnx", "torchscript"):
        assert list(info[key]["max_abs_error"]) == labels
        assert all(0 <= error <= 1e-4 for error in info[key]["max_abs_error"].values())
    assert all(0 <= error <= 1 for error in info["torchscript_uint8"]["max_abs_error"].values())
    assert stdout.startswith(f"exported {name} ({'grey' if channels == 1 else 'colour'}) from ")
    assert f"{out / 'model.onnx'} (opset 18): max |onnx - torch| = " in stdout
    assert f"{out / 'model.pt'}: max |torchscript - torch| = " in stdout


def test_onnx_matches_pytorch_at_other_sizes(exported):
    name, channels, model_dir, out, _ = exported
    reference = _reference(model_dir, name, channels)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    (noisy,), (denoised,) = session.get_inputs(), session.get_outputs()
    assert (noisy.name, denoised.name, noisy.type) == ("noisy", "denoised", "tensor(float)")
    assert noisy.shape[1] == channels and all(isinstance(dim, str) for i, dim in enumerate(noisy.shape) if i != 1)
    for x in _inputs(channels):
        with torch.no_grad():
            want = reference(x).numpy()
        (got,) = session.run(None, {"noisy": x.numpy()})
        assert got.shape == x.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-4, x.shape
        assert got.min() >= 0 and got.max() <= 1
        assert np.abs(got - x.numpy()).mean() > 0.005  # the model really changes the image: the check means something


def test_torchscript_files_load_alone_and_match_pytorch(exported):
    name, channels, model_dir, out, _ = exported
    reference = _reference(model_dir, name, channels)
    traced, traced_uint8 = torch.jit.load(str(out / "model.pt")), torch.jit.load(str(out / "model_uint8.pt"))
    extra = {"bdn.json": ""}
    torch.jit.load(str(out / "model.pt"), _extra_files=extra)
    assert json.loads(extra["bdn.json"])["model"] == name
    for x in _inputs(channels, seed=8):
        with torch.no_grad():
            assert (traced(x) - reference(x)).abs().max().item() <= 1e-4, x.shape
            images = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            got, want = traced_uint8(images), reference(images)
        assert got.dtype == torch.uint8 and got.shape == images.shape
        assert (got.int() - want.int()).abs().max().item() <= 1


def test_gated_weights_switch_some_blocks_off():
    """PyTorch skips an 'off' block for a single image; the exported files multiply it by zero instead. For the
    comparisons above to cover that, the gated model's test weights must switch some blocks off, and some on."""
    net = _randomise(build_model("gated_resnet_5x5_bn_3x3", 1), seed=0)  # the weights `exported` writes
    for x in _inputs(1):
        with torch.no_grad():
            h, gates = net.stem(x[:1]), []
            for block in net.blocks:
                gates.append(float(block.gate(h)))
                h = block(h)
        assert 0.0 in gates and 1.0 in gates, gates


# --- errors: one line, exit code 1, nothing written --------------------------------------------------------


@pytest.fixture(scope="module")
def plain_dir(tmp_path_factory):
    return _write_model_dir(tmp_path_factory.mktemp("plain") / "run", "resnet_5x5_bn_3x3", 1)


def _fails(tmp_path: Path, model_dir: Path, config: Path, *extra: str) -> str:
    out = tmp_path / "out"
    code, stdout, stderr = _run(
        "--checkpoint-directory", str(model_dir), "--pipeline-config", str(config), "--output-directory", str(out),
        *extra,
    )  # fmt: skip
    assert code == 1 and stdout == ""
    assert stderr.startswith("bdn export: error: ") and stderr.count("\n") == 1, stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    return stderr


def _config(tmp_path: Path, model: dict | None, text: str | None = None) -> Path:
    path = tmp_path / "config.json"
    path.write_text(text if text is not None else json.dumps({"model": model}), encoding="utf-8")
    return path


def test_config_naming_another_model_fails(tmp_path, plain_dir):
    config = _config(tmp_path, {"name": "lp3_resnet_5x5_bn_3x3", "channels": 1})
    message = _fails(tmp_path, plain_dir, config, "--to-onnx")
    assert f"{plain_dir / 'best.safetensors'}: holds grey weights for model 'resnet_5x5_bn_3x3', but " in message
    assert f"{config} says grey (channels=1) model 'lp3_resnet_5x5_bn_3x3'" in message


def test_config_with_other_channels_fails(tmp_path, plain_dir):
    config = _config(tmp_path, {"name": "resnet_5x5_bn_3x3", "channels": 3})
    message = _fails(tmp_path, plain_dir, config, "--to-torchscript")
    assert "holds grey weights for model 'resnet_5x5_bn_3x3', but" in message
    assert "says colour (channels=3) model 'resnet_5x5_bn_3x3'" in message


def test_missing_weights_file_fails(tmp_path, plain_dir):
    only_best = tmp_path / "run"
    only_best.mkdir()
    (only_best / "best.safetensors").write_bytes((plain_dir / "best.safetensors").read_bytes())
    message = _fails(tmp_path, only_best, plain_dir / "config.json", "--to-onnx", "--weights", "last")
    assert f"{only_best / 'last.safetensors'}: no such weights file" in message


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no directory", "no such checkpoint directory"),
        ("no config", "no such pipeline config"),
        ("bad json", "not valid JSON (Expecting"),
        ("no model section", 'needs a "model" section with "name" and "channels"'),
        ("unknown model", "unknown model 'resnet_9x9'"),
        ("not a bdn file", "not a readable safetensors file"),
    ],
)
def test_bad_inputs_fail_with_one_line(tmp_path, plain_dir, case, expected):
    model_dir, config = plain_dir, plain_dir / "config.json"
    if case == "no directory":
        model_dir = tmp_path / "nowhere"
    elif case == "no config":
        config = tmp_path / "missing.json"
    elif case == "bad json":
        config = _config(tmp_path, None, text='{"model": {"name": "resnet_5x5_bn_3x3",')
    elif case == "no model section":
        config = _config(tmp_path, None, text='{"train": {"epochs": 3}}')
    elif case == "unknown model":
        config = _config(tmp_path, {"name": "resnet_9x9", "channels": 1})
    else:
        model_dir = tmp_path / "run"
        model_dir.mkdir()
        (model_dir / "best.safetensors").write_bytes(b"not safetensors at all")
    assert expected in _fails(tmp_path, model_dir, config, "--to-onnx")


def test_failed_check_leaves_output_directory_as_it_was(tmp_path, plain_dir, monkeypatch, torch_one_thread):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_text("an earlier export", encoding="utf-8")
    monkeypatch.setattr(bdn.export, "TOLERANCE", -1.0)  # no difference can pass
    code, _, stderr = _run(
        "--checkpoint-directory", str(plain_dir), "--pipeline-config", str(plain_dir / "config.json"),
        "--output-directory", str(out), "--to-torchscript",
    )  # fmt: skip
    assert code == 1 and "TorchScript check failed: differs from PyTorch by" in stderr
    assert [p.name for p in out.iterdir()] == ["model.pt"]
    assert (out / "model.pt").read_text(encoding="utf-8") == "an earlier export"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left beside it


def test_asking_for_no_format_is_a_usage_error(plain_dir, tmp_path, capsys):
    code = main(["--checkpoint-directory", str(plain_dir), "--pipeline-config", "c.json", "--output-directory", "o"])
    assert code == 1 and "--to-onnx and --to-torchscript" in capsys.readouterr().err
