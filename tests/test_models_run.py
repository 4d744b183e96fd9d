"""Trained models as bdn methods: channel handling, tiles equal to the whole image, the registry line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bdn.tensorfile as tensorfile
from bdn.models import build_model, get_model_spec, list_models
from bdn.models.run import denoise_with_model
from bdn.models.tiles import tiled
from bdn.models.weights import save_weights
from bdn.tensors import to_image, to_nchw


def _trained_like(name: str, channels: int, seed: int = 0) -> torch.nn.Module:
    """A model with random weights everywhere (a fresh resnet's head is zero, which would hide tiling errors)."""
    torch.manual_seed(seed)
    net = build_model(name, channels)
    for key, tensor in net.state_dict().items():
        if key.endswith("running_var"):
            tensor.uniform_(0.5, 1.5)
        elif key.endswith("head.weight"):
            tensor.normal_(0, 0.05)
    return net.eval()


@pytest.mark.parametrize("name", list_models())
def test_tiles_give_the_whole_image_result(name):
    """Every registered model, tiled with its entry's reach and grid, on an image of 3 x 2 tiles: the whole image's
    result where the entry says tiles are exact; else within 1e-3 on average (the pixel-shuffle U-Net, which
    reaches 278 pixels past its 128 of context, is at 8e-4; a context of 16 would give 2e-3 to 2e-2)."""
    spec = get_model_spec(name)
    net = _trained_like(name, 1)
    overlap = -(-spec.reach // spec.multiple) * spec.multiple  # tiled() rounds the context up to the grid
    step = overlap + 2 * spec.multiple  # each tile's core: two grid cells past the context, small to keep it quick
    tile = 2 * overlap + step
    x = torch.rand(1, 1, tile + 3, step + 5, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole = net(x)
        pieces = tiled(net, x, tile=tile, overlap=spec.reach, align=spec.multiple)
    assert pieces.shape == whole.shape
    difference = (pieces - whole).abs()
    if spec.exact_tiles:
        assert difference.max() < 1e-5
    else:
        assert difference.mean() < 1e-3


def test_tiles_too_small_for_the_overlap():
    with pytest.raises(ValueError, match="leaves no core"):
        tiled(lambda t: t, torch.zeros(1, 1, 100, 100), tile=40, overlap=20)


def test_model_method_on_grey_and_colour_images(tmp_path):
    grey_net = _trained_like("resnet_5x5_bn_3x3", 1)
    path = tmp_path / "grey.safetensors"
    save_weights(path, grey_net, "resnet_5x5_bn_3x3", 1)
    rng = np.random.default_rng(0)
    grey = rng.random((40, 50)).astype(np.float32)
    out = denoise_with_model(grey, model="resnet_5x5_bn_3x3", weights=str(path), precision="fp32")
    with torch.no_grad():
        expected = to_image(grey_net(to_nchw(grey)).clamp(0, 1))
    assert out.dtype == np.float32 and np.allclose(out, expected, atol=1e-6)
    colour = rng.random((40, 50, 3)).astype(np.float32)  # a grey model runs channel by channel
    out = denoise_with_model(colour, model="resnet_5x5_bn_3x3", weights=str(path))
    assert out.shape == colour.shape
    assert np.allclose(out[..., 1], denoise_with_model(colour[..., 1], model="resnet_5x5_bn_3x3", weights=str(path)))


def test_shipped_model_files_become_methods(tmp_path, monkeypatch):
    from bdn.methods import _shipped_models

    save_weights(
        tmp_path / "model_resnet_5x5_bn_3x3_grey.safetensors", build_model("resnet_5x5_bn_3x3"), "resnet_5x5_bn_3x3", 1
    )
    save_weights(
        tmp_path / "model_resnet_5x5_bn_3x3_colour.safetensors",
        build_model("resnet_5x5_bn_3x3", 3),
        "resnet_5x5_bn_3x3",
        3,
    )
    (tmp_path / "dip_x.safetensors").write_bytes(b"")
    monkeypatch.setattr(tensorfile.resources, "files", lambda package: tmp_path)
    methods = _shipped_models()
    assert [m.name for m in methods] == ["resnet_5x5_bn_3x3"]
    assert methods[0].family == "model" and dict(methods[0].params) == {"model": "resnet_5x5_bn_3x3"}
    image = np.random.default_rng(1).random((32, 32, 3)).astype(np.float32)
    out = denoise_with_model(image, model="resnet_5x5_bn_3x3")  # its colour weights: an untrained net is identity
    assert np.allclose(out, image, atol=1e-6)


def test_shipped_files_fall_back_to_a_source_checkouts_folder(monkeypatch):
    """Run from a clone on PYTHONPATH (bdn.checkpoints not installed), the checkout's checkpoints/ is what ships."""
    from importlib import resources
    from pathlib import Path

    import bdn.tensorfile as tensorfile

    installed = tensorfile.shipped_files("biqan")

    def not_installed(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(resources, "files", not_installed)
    found = tensorfile.shipped_files("biqan")
    checkout = Path(tensorfile.__file__).resolve().parent.parent / "checkpoints"
    assert found == {"": checkout / "biqan.safetensors"} and set(installed) == set(found)


def test_the_registry_names_exactly_the_shipped_weights_files():
    """Which weights ship is written beside each model (its entry's `shipped`); the files are in checkpoints/, and
    bdn.methods lists them without importing torch: all three must agree."""
    from bdn.methods import METHODS
    from bdn.models import MODELS
    from bdn.models.weights import shipped_models

    registered = {f"{name}_{colour}" for name in list_models(shipped=True) for colour in MODELS[name].shipped}
    assert registered == set(tensorfile.shipped_files("model_")) == set(shipped_models())
    assert {m.name for m in METHODS.values() if m.family == "model"} == set(list_models(shipped=True))
