"""benchmarks/bf_models.py on tiny synthetic inputs: the FLOP counter, the quality loop, the
cache, the anchor check and the official-weights loader. No datasets and no official files are needed."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from bdn.errors import BdnError
from bdn.metrics import psnr

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "bf_models.py"


@pytest.fixture(scope="module")
def bench(torch_one_thread):
    spec = importlib.util.spec_from_file_location("bf_models_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_flops_per_pixel(bench):
    from bdn.models.pyramid import PyramidDenoiser

    assert bench.flops_per_pixel(nn.Conv2d(1, 4, 3, padding=1, bias=False), 1) == 2 * 9 * 4
    assert bench.flops_per_pixel(nn.Conv2d(3, 3, 3, padding=1, groups=3), 3) == 2 * 9 * 3  # depthwise
    # A pyramid runs its base on 64x64, 32x32 and 16x16: 1 + 1/4 + 1/16 of the pixels (its blur is no module).
    pyramid = PyramidDenoiser(nn.Conv2d(1, 1, 3, padding=1, bias=False), levels=3, kind="laplacian")
    assert bench.flops_per_pixel(pyramid, 1) == pytest.approx(2 * 9 * (1 + 1 / 4 + 1 / 16))
    linear = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.Flatten(), nn.Linear(2 * 64 * 64, 5))
    assert bench.flops_per_pixel(linear, 1) == pytest.approx(2 * 2 + 2 * 2 * 5)


def test_parameter_count_and_official_dncnn_shape(bench):
    from bdn.models import build_model

    assert bench.parameter_count(build_model("bf_dncnn", 1)) == 667_008 - 18 * 64  # no unused norm bias
    assert bench.flops_per_pixel(build_model("bf_dncnn", 1), 1) == pytest.approx(2 * (9 * 64 * 2 + 18 * 9 * 64 * 64))


def test_measure_identity_gives_noisy_psnr(bench, rng):
    cases = []
    for name in ("a", "b"):
        clean = rng.random((16, 20)).astype(np.float32)
        cases.append((name, clean + rng.normal(0, 0.1, clean.shape).astype(np.float32), clean))
    result = bench.measure(lambda image: image, cases)
    expected = [psnr(clean, noisy) for _, noisy, clean in cases]
    assert result["n"] == 2
    assert result["images"] == pytest.approx(dict(zip(("a", "b"), expected, strict=True)))
    assert result["psnr"] == pytest.approx(np.mean(expected))
    with pytest.raises(BdnError, match="no images"):
        bench.measure(lambda image: image, [])


def test_apply_net_channels(bench, rng):
    grey, colour = rng.random((12, 10)).astype(np.float32), rng.random((12, 10, 3)).astype(np.float32)
    double = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.constant_(double.weight, 2.0)
    np.testing.assert_allclose(bench.apply_net(double, grey, 1), 2 * grey, rtol=1e-6)
    np.testing.assert_allclose(bench.apply_net(double, colour, 1), 2 * colour, rtol=1e-6)  # per channel
    np.testing.assert_allclose(bench.apply_net(nn.Identity(), grey, 3), grey, rtol=1e-6)  # grey as 3 channels
    np.testing.assert_allclose(bench.apply_net(nn.Identity(), colour, 3), colour, rtol=1e-6)


def test_cache_resumes_and_keys_name_the_images(bench, tmp_path):
    calls = []

    def work():
        calls.append(1)
        return {"psnr": 30.0}

    bench.Cache(tmp_path / "cache.json").get_or_measure("k", work, model="m")
    assert bench.Cache(tmp_path / "cache.json").get_or_measure("k", work) == {"model": "m", "psnr": 30.0}
    assert len(calls) == 1
    bench.Cache(tmp_path / "cache.json", fresh=True).get_or_measure("k", work)
    assert len(calls) == 2
    one = bench.quality_key("t", "m", "d", "Set12", 25.0, ["01"])
    assert one != bench.quality_key("t", "m", "d", "Set12", 25.0, ["01", "02"])
    assert one != bench.quality_key("t", "m", "other", "Set12", 25.0, ["01"])


def test_tables_and_anchor_warning(bench):
    rows = [
        {"model": bench.ANCHOR, "dataset": "Set12", "sigma": 25.0, "psnr": 30.25, "n": 12},
        {"model": bench.ANCHOR, "dataset": "Set12", "sigma": 15.0, "psnr": 32.68, "n": 12},
        {"model": bench.ANCHOR, "dataset": "Set12", "sigma": 50.0, "psnr": 20.0, "n": 2},  # a --limit run
        {"model": "mine", "dataset": "Set12", "sigma": 25.0, "psnr": 31.0, "n": 12},
    ]
    warnings = bench.anchor_warnings(rows, {"Set12": 12})
    assert len(warnings) == 1 and "sigma 25 measures 30.25 dB, known 30.35 (-0.10)" in warnings[0]
    table = bench.wide_table(rows, ["mine", bench.ANCHOR, "absent"])
    assert list(table.columns) == ["model", "Set12 25", "Set12 15", "Set12 50"]
    assert list(table.model) == ["mine", bench.ANCHOR]
    assert table.loc[0, "Set12 25"] == 31.0 and np.isnan(table.loc[0, "Set12 15"])


def test_anchor_loader(randomise_norms, bench, tmp_path, monkeypatch):
    from bdn.models import build_model
    from bdn.tensorfile import save_tensors

    with pytest.raises(BdnError, match=r"missing: anchors folder not found .*--anchors DIR or set BDN_ANCHORS"):
        bench.load_anchor("bias_free_0-55", tmp_path / "missing")
    monkeypatch.setenv("BDN_ANCHORS", str(tmp_path / "missing"))
    assert bench.anchor_folder() == tmp_path / "missing"
    assert bench.anchor_folder(tmp_path) == tmp_path
    with pytest.raises(BdnError, match="bias_free_0-55.safetensors: official weights file missing"):
        bench.load_anchor("bias_free_0-55", tmp_path)
    # An official-style file: the bias-free norms also store a mean and a bias that the official code never uses.
    state = randomise_norms(build_model("bf_dncnn", 1)).state_dict()
    extra = {}
    for key in state:
        if key.startswith("bn_layer_list.") and key.endswith(".weight"):
            extra[key.replace(".weight", ".bias")] = torch.full((64,), 5.0)
            extra[key.replace(".weight", ".running_mean")] = torch.full((64,), 5.0)
    save_tensors(tmp_path / "bf_dncnn" / "bias_free_0-55.safetensors", {**state, **extra}, {})
    assert bench.anchor_folder(tmp_path) == tmp_path / "bf_dncnn"  # the anchors root given: its folder is used
    net = bench.load_anchor("bias_free_0-55", bench.anchor_folder(tmp_path))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    save_tensors(tmp_path / "bf_dncnn" / "bias_0-10.safetensors", {"first_layer.weight": torch.zeros(1)}, {})
    with pytest.raises(BdnError, match="bias_0-10.safetensors: its tensors do not fit bdn's DnCNN"):
        bench.load_anchor("bias_0-10", tmp_path / "bf_dncnn")


def test_model_entry_checks_files(bench, tmp_path):
    from bdn.models import build_model
    from bdn.models.weights import save_weights

    path = tmp_path / "m.safetensors"
    save_weights(path, build_model("resnet_5x5_bn_3x3", 3), "resnet_5x5_bn_3x3", 3)
    entry = bench.model_entry(f"mine={path}")
    assert (entry.label, entry.channels, entry.bias_free) == ("mine", 3, True)
    assert bench.model_entry(str(path)).label == "m"
    with pytest.raises(BdnError, match="no such weights file"):
        bench.model_entry(f"x={tmp_path / 'absent.safetensors'}")


@pytest.mark.parametrize("form", ["eager", "torch", "bf16"])
def test_time_model_in_each_form(bench, tmp_path, form):
    from bdn.models import build_model
    from bdn.models.weights import save_weights

    net = build_model("bf_ffdnet", 1).eval()
    save_weights(tmp_path / "m.safetensors", net, "bf_ffdnet", 1)
    row = bench.time_model(str(tmp_path / "m.safetensors"), tmp_path, threads=1, form=form, size=32)
    assert row["seconds"] > 0 and row["peak_mb"] >= row["loaded_mb"] > 0
    assert row["max_diff"] < (0.05 if form == "bf16" else 1e-4)  # bf16 within its tolerance of float32
