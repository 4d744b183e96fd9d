"""bdn.models: the registry, bias-free equivariance, pyramids, weights files and the user-facing wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bdn.errors import BdnError
from bdn.models import MODELS, build_model, load_model
from bdn.models.dncnn import official_state
from bdn.models.pyramid import laplacian_pyramid, recompose
from bdn.models.weights import load_weights, save_weights


def _randomise_norms(net: torch.nn.Module, seed: int) -> None:
    """Batch norms with non-trivial statistics and (for biased twins) biases, as a trained model has."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in net.state_dict().items():
        if name.endswith("running_var"):
            tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
        elif name.endswith(("running_mean", ".bias")) or name.endswith("head.weight"):
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_bias_free_entries_are_scale_equivariant_and_twins_are_not(name):
    spec = MODELS[name]
    for channels in (1, 3):
        torch.manual_seed(0)
        net = build_model(name, channels)
        _randomise_norms(net, 1)
        net.eval()
        y = torch.rand(2, channels, 29, 34)
        with torch.no_grad():
            out = net(y)
            errors = [((net(a * y) - a * out).abs().max() / (a * out).abs().max()).item() for a in (0.1, 0.5, 3.0, 20)]
        assert out.shape == y.shape
        if spec.bias_free:
            assert max(errors) < 1e-4, (name, channels, errors)
        else:
            assert max(errors) > 1e-2, (name, channels, errors)


def test_every_bias_free_family_has_a_biased_twin():
    for name, spec in MODELS.items():
        if spec.bias_free and not name.startswith(("lp", "gp")) and name != "bf_dncnn":
            assert f"{name}_biased" in MODELS
    assert not MODELS["dncnn"].bias_free


def test_a_name_registers_once_and_ships_only_grey_or_colour_weights():
    from bdn.models.registry import register_model

    with pytest.raises(ValueError, match="'dncnn' is registered twice"):
        register_model("dncnn", bias_free=False, reach=1, summary="again")(build_model)
    with pytest.raises(ValueError, match="shipped colours must be among grey, colour"):
        register_model("another", bias_free=False, reach=1, shipped=("gray",), summary="misspelt")
    assert "another" not in MODELS


@pytest.mark.parametrize("size", [(1, 1), (5, 9), (64, 64), (33, 70)])
def test_pyramid_models_take_any_size(size):
    net = build_model("gp3_resnet_5x5_bn_3x3", 3).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, *size)).shape == (1, 3, *size)


def test_laplacian_pyramid_recomposes_exactly():
    x = torch.rand(2, 3, 32, 48, dtype=torch.float64)
    levels = laplacian_pyramid(x, 4)
    assert [tuple(level.shape[-2:]) for level in levels] == [(32, 48), (16, 24), (8, 12), (4, 6)]
    assert torch.allclose(recompose(levels), x, atol=1e-12)


def test_an_untrained_resnet_starts_as_the_identity():
    net = build_model("resnet_5x5_bn_3x3", 1).eval()
    y = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(y), y)


def test_gated_blocks_switch_off_in_eval():
    net = build_model("gated_resnet_5x5_bn_3x3", 1)
    _randomise_norms(net, 2)
    for block in net.blocks:
        torch.nn.init.constant_(block.gate.score.bias, -5.0)  # every gate closed
    net.eval()
    y = torch.rand(1, 1, 20, 20)
    with torch.no_grad():
        h = net.stem(y)
        expected = y - net.head(torch.relu(net.head_norm(h)))
        assert torch.allclose(net(y), expected, atol=1e-6)


def test_sparse_models_report_their_activity_while_training():
    net = build_model("sparse_resnet_4x5_bn_3x3", 1).train()
    assert net.sparsity() is None
    net(torch.rand(2, 1, 16, 16))
    activity = net.sparsity()
    assert activity is not None and activity.requires_grad and float(activity.detach()) > 0
    assert build_model("resnet_5x5_bn_3x3", 1).sparsity() is None


def test_official_dncnn_state_dicts_load():
    for name, bias_free in (("bf_dncnn", True), ("dncnn", False)):
        reference = build_model(name, 1)
        tensors = {k: v.clone() for k, v in reference.state_dict().items() if "num_batches_tracked" not in k}
        if bias_free:  # the official bias-free files also store a mean and bias per norm, unused
            for i in range(18):
                tensors[f"bn_layer_list.{i}.running_mean"] = torch.zeros(64)
                tensors[f"bn_layer_list.{i}.bias"] = torch.zeros(64)
        build_model(name, 1).load_state_dict(official_state(tensors, bias_free), strict=True)


def test_weights_round_trip_and_wrapper(tmp_path):
    net = build_model("lp3_resnet_5x5_bn_3x3", 3)
    _randomise_norms(net, 3)
    path = tmp_path / "m.safetensors"
    save_weights(path, net, "lp3_resnet_5x5_bn_3x3", 3, epoch="4")
    loaded, metadata = load_weights(path)
    assert metadata["model"] == "lp3_resnet_5x5_bn_3x3" and metadata["epoch"] == "4"
    assert metadata["bias_free"] == "True"
    model = load_model("lp3_resnet_5x5_bn_3x3", 3, weights=path)
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 24, 30, 3), dtype=np.uint8))
    with torch.no_grad():
        out = model(images)
        floats = model(images.permute(0, 3, 1, 2).float() / 255)
        expected = net.eval()(images.permute(0, 3, 1, 2).float() / 255).clamp(0, 1)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert floats.dtype == torch.float32 and floats.shape == (2, 3, 24, 30)
    assert torch.allclose(floats, expected, atol=1e-6)
    assert torch.equal(out, (expected * 255).round().to(torch.uint8).permute(0, 2, 3, 1))


def test_weights_errors(tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(path, build_model("resnet_5x5_bn_3x3", 1), "resnet_5x5_bn_3x3", 1)
    with pytest.raises(BdnError, match="not 'sparse_resnet_5x5_bn_3x3'"):
        load_model("sparse_resnet_5x5_bn_3x3", 1, weights=path)
    with pytest.raises(BdnError, match="grey weights, asked for channels=3"):
        load_model("resnet_5x5_bn_3x3", 3, weights=path)
    with pytest.raises(BdnError, match="no such weights file"):
        load_weights(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BdnError, match="not a readable safetensors file"):
        load_weights(tmp_path / "junk.safetensors")
    from bdn.tensorfile import save_tensors

    wrong = tmp_path / "wrong.safetensors"
    tensors = build_model("bf_dncnn", 1).state_dict()
    save_tensors(wrong, tensors, {"format": "bdn-model-1", "model": "resnet_5x5_bn_3x3", "channels": "1"})
    with pytest.raises(BdnError, match="do not fit model 'resnet_5x5_bn_3x3'"):
        load_weights(wrong)
    with pytest.raises(BdnError, match="unknown model 'nope'"):
        build_model("nope")
    with pytest.raises(BdnError, match="channels must be 1"):
        build_model("resnet_5x5_bn_3x3", 2)
    with pytest.raises(BdnError, match="no shipped weights for gated_resnet_5x5_bn_3x3"):
        load_model("gated_resnet_5x5_bn_3x3", 1)


def test_halved_weights_load_as_they_are_and_give_nearly_the_same_output(tmp_path):
    from bdn.models.weights import halve_weights, save_weights

    torch.manual_seed(0)
    net = build_model("resnet_5x5_bn_3x3", 1).eval()
    full, half = tmp_path / "full.safetensors", tmp_path / "half.safetensors"
    save_weights(full, net, "resnet_5x5_bn_3x3", 1, val_psnr="30.0")
    halve_weights(full, half)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    loaded, info = load_weights(half)
    assert info["stored"] == "float16" and info["val_psnr"] == "30.0"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())  # copied into the model's own float32
    x = torch.rand(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=2e-3)
    from bdn.tensorfile import save_tensors

    save_tensors(tmp_path / "other.safetensors", {"w": torch.zeros(2)}, {"format": "something"})
    with pytest.raises(BdnError, match="not a bdn model file"):
        halve_weights(tmp_path / "other.safetensors", tmp_path / "out.safetensors")
