"""bdn.explain: a bias-free model's Jacobian rows reproduce its output (f(y) = J y), a biased one's do not; the ERF
measures what it says; the command writes its figure and table and fails in one line without weights."""

import csv

import numpy as np
import pytest
import torch
from torch import nn

from bdn.cli import main
from bdn.errors import BdnError
from bdn.explain import (
    adaptive_filters,
    check_reconstruction,
    effective_receptive_field,
    image_for_channels,
    net_output,
    parse_pixel,
)
from bdn.io import write_image
from bdn.models import MODELS, build_model
from bdn.models.layers import BiasFreeBatchNorm2d
from bdn.models.weights import save_weights, shipped_models

PIXELS = [(16, 16), (0, 5), (31, 31)]  # the centre, an edge and a corner (zero padding matters there)


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    """Tiny tensors on shared cores: one torch thread (see conftest)."""


def randomised(name: str, channels: int, seed: int = 0) -> nn.Module:
    """A registered model in eval mode with its norms' statistics and any biases random, so nothing is trivial.

    Every convolution gets PyTorch's default random init again: a fresh model may start as the identity (a zero
    head), whose filters would be a bare delta."""
    torch.manual_seed(seed)
    net = build_model(name, channels).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
            if isinstance(module, BiasFreeBatchNorm2d | nn.BatchNorm2d):
                module.running_var.uniform_(0.3, 3.0)
                module.weight.uniform_(0.5, 1.5)
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5)
            bias = getattr(module, "bias", None)
            if isinstance(bias, nn.Parameter) and isinstance(module, nn.Conv2d | nn.BatchNorm2d):
                bias.normal_(0.0, 0.2)
    return net


def reconstruction_error(net: nn.Module, image: np.ndarray, pixels=PIXELS) -> np.ndarray:
    filters = adaptive_filters(net, image, pixels)
    return check_reconstruction(filters, image, net_output(net, image), pixels)


def test_filters_of_a_grey_bias_free_resnet_reproduce_its_output(rng):
    image = rng.random((32, 32)).astype(np.float32)
    net = randomised("resnet_5x5_bn_3x3", 1)
    filters = adaptive_filters(net, image, PIXELS)
    assert filters.shape == (3, 1, 1, 32, 32) and filters.dtype == np.float32
    output = net_output(net, image)
    assert output.shape == (32, 32)
    errors = check_reconstruction(filters, image, output, PIXELS)
    assert errors.shape == (3, 1)
    assert errors.max() < 1e-4
    assert np.abs(output).max() > 0.1  # the output is not trivially zero
    assert not net.training  # left in the mode it came in


def test_filters_of_a_colour_pyramid_model_reproduce_its_output_in_float64(rng):
    image = rng.random((32, 32, 3)).astype(np.float32)
    net = randomised("lp3_resnet_5x5_bn_3x3", 3).double()
    filters = adaptive_filters(net, image, PIXELS)
    assert filters.shape == (3, 3, 3, 32, 32) and filters.dtype == np.float64
    output = net_output(net, image)
    assert output.shape == (32, 32, 3)
    assert check_reconstruction(filters, image, output, PIXELS).max() < 1e-10
    # Colour channels mix: the red output depends on the green input too.
    assert np.abs(filters[0, 0, 1]).sum() > 1e-3


def test_an_image_denoiser_is_unwrapped_and_left_in_training_mode_if_it_was(rng):
    from bdn.models.wrap import ImageDenoiser

    image = rng.random((24, 24)).astype(np.float32)
    wrapped = ImageDenoiser(randomised("gated_resnet_5x5_bn_3x3", 1)).train()
    errors = reconstruction_error(wrapped, image, [(3, 4)])
    assert errors.max() < 1e-4
    assert wrapped.training and wrapped.net.training


def test_a_biased_model_is_not_reproduced_by_its_filters(rng):
    image = rng.random((32, 32)).astype(np.float32)
    errors = reconstruction_error(randomised("resnet_5x5_bn_3x3_biased", 1), image)
    assert errors.min() > 1e-3  # the biases' contribution, not rounding


def test_a_pixel_outside_the_image_is_one_clear_error(rng):
    net = randomised("resnet_5x5_bn_3x3", 1)
    image = rng.random((20, 30)).astype(np.float32)
    for pixel in [(20, 0), (0, 30), (-1, 3)]:
        with pytest.raises(BdnError, match=rf"pixel \({pixel[0]}, {pixel[1]}\) is outside the 20x30 image"):
            adaptive_filters(net, image, [(1, 1), pixel])
    with pytest.raises(BdnError, match="3-channel images, the image has 1"):
        adaptive_filters(randomised("resnet_5x5_bn_3x3", 3), image, [(1, 1)])


def test_erf_of_known_filters():
    """A 3x3 box filter: radius sqrt(2) for its 9 pixels, count 9, sum 1; blurring twice more widens it."""
    box = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        box.weight.fill_(1.0 / 9.0)
    image = np.full((21, 21), 0.5, np.float32)
    pixel = [(10, 10)]
    once = effective_receptive_field(adaptive_filters(box, image, pixel), pixel, fraction=1.0)[0]
    assert once["row"] == 10 and once["col"] == 10
    assert once["radius"] == [pytest.approx(np.sqrt(2))]
    assert once["count"] == [9]
    assert once["sum"] == [pytest.approx(1.0, abs=1e-6)]
    thrice = effective_receptive_field(adaptive_filters(nn.Sequential(box, box, box), image, pixel), pixel)[0]
    assert thrice["radius"][0] > once["radius"][0] and thrice["count"][0] > 9
    assert thrice["sum"] == [pytest.approx(1.0, abs=1e-5)]  # a blur keeps the mean
    with pytest.raises(BdnError, match="fraction"):
        effective_receptive_field(adaptive_filters(box, image, pixel), pixel, fraction=0.0)


def test_a_pyramid_reaches_further_than_the_plain_resnet(rng):
    """The plain resnet sees 13 pixels each way (5x5 stem, 10 3x3 convolutions, 3x3 head): its filter is exactly
    zero beyond; the 3-level pyramid runs the same net at 1/4 scale, so its filter reaches past that."""
    image = rng.random((48, 48)).astype(np.float32)
    centre = [(24, 24)]
    plain = adaptive_filters(randomised("resnet_5x5_bn_3x3", 1), image, centre)[0, 0, 0]
    pyramid = adaptive_filters(randomised("lp3_resnet_5x5_bn_3x3", 1), image, centre)[0, 0, 0]
    inside = np.zeros_like(plain, dtype=bool)
    inside[24 - 13 : 24 + 14, 24 - 13 : 24 + 14] = True
    assert np.abs(plain[~inside]).max() == 0.0
    assert np.abs(plain[inside]).max() > 0.0
    assert np.abs(pyramid[~inside]).sum() > 1e-3 * np.abs(pyramid).sum()
    for filters in (plain, pyramid):
        erf = effective_receptive_field(filters[None, None, None], centre, fraction=0.99)[0]
        assert 0.0 <= erf["radius"][0] <= 24 * np.sqrt(2) and 1 <= erf["count"][0] <= 48 * 48
    plain_erf = effective_receptive_field(plain[None, None, None], centre, fraction=0.99)[0]
    assert plain_erf["radius"][0] <= 13 * np.sqrt(2)


def test_pixel_parsing_and_channel_conversion():
    assert parse_pixel("12,40") == (12, 40)
    for bad in ("12", "a,b", "1,2,3"):
        with pytest.raises(BdnError, match="ROW,COL"):
            parse_pixel(bad)
    colour = np.zeros((4, 5, 3), np.float32)
    assert image_for_channels(colour, 1).shape == (4, 5)
    assert image_for_channels(colour[..., 0], 3).shape == (4, 5, 3)


def test_command_writes_figure_and_table(rng, tmp_path, capsys):
    name = "resnet_5x5_bn_3x3"
    weights = tmp_path / "m.safetensors"
    save_weights(weights, randomised(name, 1), name, 1)
    image_path = write_image(tmp_path / "flat.png", np.full((32, 32), 0.5, np.float32))
    out = tmp_path / "explained"
    args = ["explain", str(image_path), "--model", name, "--weights", str(weights), "--pixels", "5,5", "16,20"]
    assert main([*args, "-o", str(out), "--noise-sigma", "25", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "erf_radius" in printed and "filters.png" in printed
    assert (out / "filters.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "filters.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["row"], row["col"], row["channel"]) for row in rows] == [("5", "5", "grey"), ("16", "20", "grey")]
    for row in rows:
        assert float(row["reconstruction_error"]) < 1e-4
        assert float(row["erf_radius"]) >= 0.0 and int(row["erf_pixels"]) >= 1
        assert np.isfinite(float(row["filter_sum"]))


def test_command_for_a_biased_model_warns_and_still_runs(tmp_path, capsys):
    name = "resnet_5x5_bn_3x3_biased"
    weights = tmp_path / "b.safetensors"
    save_weights(weights, randomised(name, 1), name, 1)
    image_path = write_image(tmp_path / "img.png", np.full((24, 24), 0.5, np.float32))
    args = ["explain", str(image_path), "--model", name, "--weights", str(weights), "--pixels", "12,12"]
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    assert "f(y) = J(y) y does not hold" in capsys.readouterr().err
    with open(tmp_path / "out" / "filters.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert float(row["reconstruction_error"]) > 1e-3


def test_command_without_weights_is_one_line_error(tmp_path, capsys):
    shipped = shipped_models()
    missing = next((name for name in MODELS if f"{name}_grey" not in shipped), None)
    if missing is None:
        pytest.skip("every model has shipped grey weights")
    image_path = write_image(tmp_path / "img.png", np.full((16, 16), 0.5, np.float32))
    code = main(["explain", str(image_path), "--model", missing, "--pixels", "1,1", "-o", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("bdn explain: error: no shipped weights for")
    assert not (tmp_path / "x").exists()


def test_command_pixel_outside_is_one_line_error(tmp_path, capsys):
    name = "resnet_5x5_bn_3x3"
    weights = tmp_path / "m.safetensors"
    save_weights(weights, build_model(name, 1), name, 1)
    image_path = write_image(tmp_path / "img.png", np.full((16, 16), 0.5, np.float32))
    args = ["explain", str(image_path), "--model", name, "--weights", str(weights), "--pixels", "16,2"]
    assert main([*args, "-o", str(tmp_path / "x")]) == 1
    expected = "bdn explain: error: pixel (16, 2) is outside the 16x16 image (rows 0-15, cols 0-15)\n"
    assert capsys.readouterr().err == expected
