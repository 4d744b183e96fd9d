"""biqan.model: the MobileNet + 10-way softmax network, the EMD loss, scores, inputs and its files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models import mobilenet_v2, mobilenet_v3_small

from bdn.errors import BdnError
from bdn.tensorfile import read_tensors, save_tensors
from biqan.model import (
    ARCHES,
    FORMAT,
    as_rgb_tensor,
    build_biqan,
    emd_loss,
    head_names,
    load_backbone,
    load_biqan,
    mean_score,
    prepare,
    prepare_tiles,
    save_biqan,
    std_score,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("arch", ARCHES)
def test_outputs_are_distributions_over_ten_bins(arch):
    torch.manual_seed(0)
    model = build_biqan(arch).eval()
    with torch.no_grad():
        p = model(torch.rand(2, 3, 32, 40))
    assert p.shape == (2, 10) and p.dtype == torch.float32
    assert torch.allclose(p.sum(dim=1), torch.ones(2), atol=1e-6) and (p >= 0).all()
    assert model.classifier[-2].p == 0.75 and model.classifier[-1].out_features == 10
    assert not {"mean", "std"} & set(model.state_dict())  # the input normalisation is fixed, not saved


def test_emd_is_zero_for_equal_distributions_and_known_for_shifted_ones():
    p = torch.softmax(torch.randn(5, 10, dtype=torch.float64), dim=1).requires_grad_()
    loss = emd_loss(p, p.detach())
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(p.grad).all()
    eye = torch.eye(10, dtype=torch.float64)
    for shift in (1, 3, 9):
        # one-hot at bin 1 against bin 1 + shift: the CDFs differ by 1 on `shift` of the 10 bins
        assert emd_loss(eye[:1], eye[shift : shift + 1]).item() == pytest.approx(math.sqrt(shift / 10), abs=1e-12)
        assert emd_loss(eye[:1], eye[shift : shift + 1], r=1).item() == pytest.approx(shift / 10, abs=1e-12)
    per_sample = emd_loss(eye[:2], eye[2:4], reduction="none")
    assert per_sample.shape == (2,) and torch.allclose(
        per_sample, torch.full((2,), math.sqrt(0.2), dtype=torch.float64)
    )
    assert emd_loss(eye[:2], eye[2:4]).item() == pytest.approx(math.sqrt(0.2))


def test_mean_and_std_scores():
    uniform = torch.full((1, 10), 0.1)
    assert mean_score(uniform).item() == pytest.approx(5.5)
    assert std_score(uniform).item() == pytest.approx(math.sqrt(8.25), rel=1e-6)
    eye = torch.eye(10)
    assert torch.allclose(mean_score(eye), torch.arange(1.0, 11.0)) and torch.allclose(std_score(eye), torch.zeros(10))
    two = torch.zeros(1, 10)
    two[0, [1, 3]] = 0.5  # scores 2 and 4
    assert mean_score(two).item() == pytest.approx(3.0) and std_score(two).item() == pytest.approx(1.0)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_biqan("mobilenet_v3_small", dropout=0.5).eval()
    path = save_biqan(tmp_path / "b.safetensors", model, protocol="resize", crop=64, epoch=3)
    loaded, meta = load_biqan(path)
    assert not loaded.training and loaded.arch == "mobilenet_v3_small" and loaded.dropout == 0.5
    assert meta["format"] == FORMAT and meta["protocol"] == "resize" and meta["crop"] == 64 and meta["epoch"] == "3"
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert load_biqan(path, arch="mobilenet_v3_small")[1]["dropout"] == 0.5


def test_a_checkpoint_of_another_architecture_is_one_line(tmp_path):
    path = save_biqan(tmp_path / "v3.safetensors", build_biqan("mobilenet_v3_small"))
    with pytest.raises(BdnError, match="a mobilenet_v3_small checkpoint, not mobilenet_v2") as caught:
        load_biqan(path, arch="mobilenet_v2")
    assert "\n" not in str(caught.value)
    # A file that claims to be V2 but holds V3 weights: strict loading refuses it.
    state, meta = read_tensors(path)
    save_tensors(tmp_path / "liar.safetensors", state, {**meta, "arch": "mobilenet_v2"})
    with pytest.raises(BdnError, match="weights do not fit BIQAN architecture mobilenet_v2") as caught:
        load_biqan(tmp_path / "liar.safetensors")
    assert "\n" not in str(caught.value) and "liar.safetensors" in str(caught.value)
    save_tensors(tmp_path / "other.safetensors", state, {"model": "resnet_5x5_bn_3x3"})
    with pytest.raises(BdnError, match="not a BIQAN checkpoint"):
        load_biqan(tmp_path / "other.safetensors")
    save_tensors(tmp_path / "arch.safetensors", state, {**meta, "arch": "resnet50"})
    with pytest.raises(BdnError, match="architecture 'resnet50' is unknown"):
        load_biqan(tmp_path / "arch.safetensors")
    with pytest.raises(BdnError, match="no such BIQAN checkpoint"):
        load_biqan(tmp_path / "missing.safetensors")


def test_backbone_loads_everything_but_the_head(tmp_path):
    torch.manual_seed(2)
    imagenet = mobilenet_v3_small(weights=None).state_dict()  # torchvision's names, 1000-way last layer
    save_tensors(tmp_path / "backbone.safetensors", imagenet, {})
    model = build_biqan()
    loaded = load_backbone(model, tmp_path / "backbone.safetensors")
    assert set(head_names(model)) == {"classifier.3.weight", "classifier.3.bias"}
    assert not set(loaded) & set(head_names(model)) and "classifier.0.weight" in loaded
    state = model.state_dict()
    assert all(torch.equal(state[name], imagenet[name]) for name in loaded)
    assert state["classifier.3.weight"].shape == (10, 1024)
    save_tensors(tmp_path / "v2.safetensors", mobilenet_v2(weights=None).state_dict(), {})
    with pytest.raises(BdnError, match="not a mobilenet_v3_small backbone"):
        load_backbone(build_biqan(), tmp_path / "v2.safetensors")


def test_grey_becomes_three_channels():
    grey = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    tensor = as_rgb_tensor(grey)
    assert tensor.shape == (3, 3, 4) and all(torch.equal(tensor[c], torch.from_numpy(grey)) for c in range(3))
    colour = np.random.default_rng(0).random((5, 6, 3), dtype=np.float32)
    assert torch.equal(as_rgb_tensor(colour), torch.from_numpy(colour).permute(2, 0, 1))
    assert torch.equal(as_rgb_tensor(torch.from_numpy(grey)[None, None]), tensor)  # DIP's (1, 1, H, W)
    with pytest.raises(BdnError, match="1 or 3 channels"):
        as_rgb_tensor(torch.zeros(2, 4, 4))


def test_prepare_native_and_resize():
    image = np.random.default_rng(0).random((50, 70), dtype=np.float32)
    centre = prepare(image, "native", 32)
    assert centre.shape == (3, 32, 32) and torch.equal(centre[0], torch.from_numpy(image[9:41, 19:51]))
    assert prepare(image[:20], "native", 32).shape == (3, 20, 32)  # a short side is kept whole at test time
    # training: random crops of the native pixels, flipped; the same rng gives the same sample
    a = prepare(image, "native", 32, np.random.default_rng(5))
    assert torch.equal(a, prepare(image, "native", 32, np.random.default_rng(5)))
    windows = {
        tuple(prepare(image, "native", 32, np.random.default_rng(seed))[0, :2, :2].flatten().tolist())
        for seed in range(8)
    }
    assert len(windows) > 1
    for seed in range(6):  # every training sample is a window of the image, possibly flipped
        sample = prepare(image, "native", 32, np.random.default_rng(seed))[0].numpy()
        candidates = (sample, sample[:, ::-1], sample[::-1], sample[::-1, ::-1])
        windows = (image[top : top + 32, left : left + 32] for top in range(19) for left in range(39))
        assert any(np.array_equal(w, c) for w in windows for c in candidates)
    resized = prepare(image, "resize", 224)
    assert resized.shape == (3, 224, 224)
    assert prepare(image, "resize", 32, np.random.default_rng(0)).shape == (3, 32, 32)
    with pytest.raises(BdnError, match="protocol 'zoom' is unknown"):
        prepare(image, "zoom", 32)
    with pytest.raises(BdnError, match="at least 32"):
        prepare(image, "native", 16)


def test_prepare_tiles_covers_the_image_corner_to_corner():
    image = np.random.default_rng(1).random((96, 80, 3), dtype=np.float32)
    assert torch.equal(prepare_tiles(image, "native", 32, 1)[0], prepare(image, "native", 32))
    grid = prepare_tiles(image, "native", 32, 3)
    assert grid.shape == (9, 3, 32, 32)
    # rows at 0, 32, 64 and columns at 0, 24, 48: the corners and evenly between
    for k, (top, left) in enumerate((t, c) for t in (0, 32, 64) for c in (0, 24, 48)):
        assert torch.equal(grid[k], torch.from_numpy(image[top : top + 32, left : left + 32]).permute(2, 0, 1))
    assert prepare_tiles(image[:20, :20], "native", 32, 3).shape == (1, 3, 20, 20)  # smaller than a crop: whole
    with pytest.raises(BdnError, match="tiles must be a whole number >= 1, got 0"):
        prepare_tiles(image, "native", 32, 0)
