"""bf_ffdnet: the bias-free FFDNet-style model at half resolution (shape, scale equivariance, size, reach, training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tiny_train_config

from bdn.models import build_model, get_model_spec
from bdn.models.ffdnet import DEPTH


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """Small tensors: one thread (see conftest)."""


def _trained_like(channels: int, seed: int = 0, dtype=torch.float32) -> torch.nn.Module:
    """bf_ffdnet in eval mode with trained-looking norm variances (fresh ones are all 1)."""
    torch.manual_seed(seed)
    net = build_model("bf_ffdnet", channels).to(dtype)
    for key, tensor in net.state_dict().items():
        if key.endswith("running_var"):
            tensor.uniform_(0.5, 1.5)
    return net.eval()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(32, 48), (33, 47), (1, 1), (2, 3), (17, 16)])
def test_output_has_the_input_shape(channels, size):
    net = _trained_like(channels)
    with torch.no_grad():
        out = net(torch.rand(2, channels, *size))
    assert out.shape == (2, channels, *size) and torch.isfinite(out).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_scaling_the_input_scales_the_output(channels):
    net = _trained_like(channels, seed=1)
    y = torch.rand(1, channels, 37, 30, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        out = net(y)
        for a in (2.0, 0.25, 17.0):
            assert torch.allclose(net(a * y), a * out, rtol=1e-5, atol=1e-5 * a)


def test_it_predicts_the_noise_and_subtracts_it():
    """With the last convolution zeroed no noise is predicted: the input comes back exactly, odd sides too."""
    net = _trained_like(3)
    torch.nn.init.zeros_(net.body.last_layer.weight)
    y = torch.rand(1, 3, 21, 14)
    with torch.no_grad():
        assert torch.equal(net(y), y)


def test_parameter_count_and_registry_entry():
    spec = get_model_spec("bf_ffdnet")
    assert spec.bias_free and spec.multiple == 2 and spec.exact_tiles and spec.shipped == ()
    # first conv 4C -> 64, 13 hidden 64 -> 64 with a bias-free norm (a scale each), last conv 64 -> 4C; no biases
    hidden = 13 * (9 * 64 * 64 + 64)
    for channels in (1, 3):
        net = build_model("bf_ffdnet", channels)
        assert sum(p.numel() for p in net.parameters()) == 2 * 9 * 4 * channels * 64 + hidden
        assert not any(name.endswith(".bias") for name, _ in net.named_parameters())
    assert sum(p.numel() for p in build_model("bf_ffdnet", 1).parameters()) == 484_672
    assert not get_model_spec("bf_ffdnet_biased").bias_free


def test_the_reach_is_the_receptive_field_with_a_margin():
    """15 3x3 layers at half resolution: an output pixel at an even position depends on inputs from 30 before it
    to 31 after it (its 2x2 block, 15 blocks either way), and no further; the entry's reach covers 31."""
    net = _trained_like(1, seed=3, dtype=torch.float64)
    x = torch.rand(1, 1, 100, 100, dtype=torch.float64, requires_grad=True)
    centre = 50
    net(x)[0, 0, centre, centre].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    field = 2 * DEPTH + 1
    assert (rows.min().item() - centre, rows.max().item() - centre) == (1 - field, field)
    assert (cols.min().item() - centre, cols.max().item() - centre) == (1 - field, field)
    assert field == 31 and get_model_spec("bf_ffdnet").reach == 36


def test_a_few_training_steps(tmp_path):
    from bdn.io import write_image
    from bdn.models.weights import load_weights
    from bdn.train import merge_config, train

    folder = tmp_path / "clean"
    folder.mkdir()
    rng = np.random.default_rng(0)
    base = np.linspace(0, 1, 64)[None, :] * np.linspace(0.2, 1, 64)[:, None]
    for k in range(4):
        write_image(folder / f"img{k}.png", np.clip(base + 0.1 * rng.random((64, 64)), 0, 1))
    config = merge_config(tiny_train_config("bf_ffdnet", folder, epochs=2))
    row = train(tmp_path / "run", config, progress=False)
    assert row["epoch"] == 2 and math.isfinite(row["train_loss"]) and math.isfinite(row["val_psnr"])
    net, meta = load_weights(tmp_path / "run" / "last.safetensors", expect_name="bf_ffdnet", expect_channels=1)
    torch.manual_seed(0)
    fresh = build_model("bf_ffdnet", 1)
    assert not torch.equal(net.body.first_layer.weight, fresh.body.first_layer.weight)  # the steps moved it
    assert meta["model"] == "bf_ffdnet"


@pytest.mark.parametrize("name", ["bf_ffdnet", "bf_dncnn", "dncnn"])
def test_a_fresh_dncnn_body_starts_near_the_identity(name):
    # DnCNN's own start (gains of +-0.025): with PyTorch's default gains of 1 a fresh stack predicted noise hundreds
    # of times the image's, and training then silenced its ReLUs and kept the identity for good.
    torch.manual_seed(0)
    y = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        predicted = build_model(name, 1).train()(y) - y
    assert float((predicted**2).mean() / (y**2).mean()) < 0.02
