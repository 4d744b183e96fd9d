"""The encoder-decoder families: convolutional autoencoder, RED-Net, MWCNN (and MWCNN's Haar transform).

Shapes at odd sizes, gradients, the parameter counts their docstrings state, how far an input pixel reaches (the
`reach` tiles rely on), tracing (export), and that each can start fitting one noisy patch. Tiny inputs and narrow
variants keep the file fast on one thread.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from skimage import data

from bdn.models import autoencoder, get_model_spec, mwcnn, rednet
from bdn.models.autoencoder import ConvAutoencoder
from bdn.models.mwcnn import MWCNN, haar_dwt, haar_iwt
from bdn.models.rednet import REDNet
from bdn.tensors import to_nchw

pytestmark = pytest.mark.usefixtures("torch_one_thread")

MODULES = {"autoencoder": autoencoder, "rednet": rednet, "mwcnn": mwcnn}
NARROW = {  # the same structures, narrow: for the tests that train or differentiate many times
    "autoencoder": lambda channels: ConvAutoencoder(channels, widths=(8, 16, 32)),
    "rednet": lambda channels: REDNet(channels, features=16),
    "mwcnn": lambda channels: MWCNN(channels, widths=(8, 16, 32)),
}


def _count(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(37, 45), (32, 32), (5, 9), (1, 1)])
def test_default_models_keep_any_shape(name, channels, size):
    torch.manual_seed(0)
    net = MODULES[name].builder(channels).eval()
    assert (net.channels, net.bias_free) == (channels, False)
    x = torch.rand(2, channels, *size)
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODULES)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    net = MODULES[name].builder(3)
    x = torch.rand(1, 3, 37, 45, requires_grad=True)
    net(x).square().mean().backward()
    for param_name, param in net.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, param_name
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODULES)
def test_parameter_counts_match_the_docstrings(name):
    module = MODULES[name]
    found = re.search(r"([\d,]+) parameters for\s+grey,?\s+(?:and\s+)?([\d,]+) for\s+colour", module.__doc__)
    assert found, f"{name}: no parameter counts in the module docstring"
    grey, colour = (int(text.replace(",", "")) for text in found.groups())
    assert (_count(module.builder(1)), _count(module.builder(3))) == (grey, colour)


def test_parameter_counts_by_hand():
    """The counts follow from the layer shapes (weights + biases), checked independently of the docstrings."""

    def conv(cin, cout, k=3):
        return cin * cout * k * k + cout

    c = 1
    ae = conv(c, 32) + conv(32, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128)
    ae += conv(128, 64, 4) + conv(64, 64) + conv(64, 32, 4) + conv(32, 32) + conv(32, c)
    assert _count(autoencoder.builder(c)) == ae
    red = conv(c, 64) + 8 * conv(64, 64) + conv(64, c)
    assert _count(rednet.builder(c)) == red
    mw = conv(4 * c, 32) + conv(32, 32) + conv(128, 64) + conv(64, 64) + conv(256, 128) + conv(128, 128)
    mw += conv(128, 128) + conv(128, 256) + conv(64, 64) + conv(64, 128) + conv(32, 32) + conv(32, 4 * c)
    assert _count(mwcnn.builder(c)) == mw


def test_rednet_skips_every_two_layers_from_the_input():
    assert REDNet(1).skips == (2, 4)  # RED-Net-10: p_2, p_4 and the input (the residual)
    assert REDNet(1, depth=20).skips == (2, 4, 6, 8)
    assert len(REDNet(1, depth=20).encoder) == len(REDNet(1, depth=20).decoder) == 10
    with pytest.raises(ValueError, match="even"):
        REDNet(1, depth=9)


def test_residual_models_return_the_input_when_their_last_layer_is_zero():
    """RED-Net and MWCNN predict a correction added to the input (the autoencoder rebuilds the image itself)."""
    x = torch.rand(1, 3, 37, 45)
    for net, last in ((REDNet(3, features=8), lambda n: n.decoder[-1]), (MWCNN(3, (4, 8)), lambda n: n.decoder[0][-1])):
        with torch.no_grad():
            last(net).weight.zero_()
            last(net).bias.zero_()
            assert torch.equal(net(x), x)


# --- the Haar transform ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_haar_inverse_and_energy(dtype, tolerance):
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 24, generator=generator, dtype=dtype)
    y = haar_dwt(x)
    assert y.shape == (2, 12, 8, 12) and y.dtype == dtype
    assert (haar_iwt(y) - x).abs().max() < tolerance
    z = torch.randn(2, 8, 5, 7, generator=generator, dtype=dtype)  # the other way round too, signed subbands
    assert (haar_dwt(haar_iwt(z)) - z).abs().max() < tolerance
    assert abs(y.square().sum() / x.square().sum() - 1) < tolerance
    assert abs(haar_iwt(z).square().sum() / z.square().sum() - 1) < tolerance


def test_haar_subbands_on_known_patterns():
    """Constant -> LL only; columns alternating -> LH only; rows alternating -> HL only; checkerboard -> HH only.
    Channels are grouped by subband: [LL of each channel, LH of each, HL of each, HH of each]."""
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    patterns = [torch.full((8, 8), 0.25)] + [(k % 2 == 0).float() - 0.5 for k in (cols, rows, rows + cols)]
    for band, pattern in enumerate(patterns):
        x = torch.stack([pattern, 2 * pattern])[None]  # two channels, the second twice the first
        y = haar_dwt(x).view(4, 2, 4, 4)  # (subband, channel, h, w)
        energy = y.square().sum(dim=(1, 2, 3))
        assert energy[band] > 0 and all(energy[b] == 0 for b in range(4) if b != band), (band, energy)
        assert torch.allclose(y[:, 1], 2 * y[:, 0])
    constant = haar_dwt(torch.full((1, 1, 4, 4), 0.25))
    assert torch.allclose(constant[0, 0], torch.full((2, 2), 0.5)) and constant[0, 1:].abs().max() == 0
    a, b, c, d = 0.1, 0.2, 0.3, 0.7  # one 2x2 block (a b / c d)
    block = haar_dwt(torch.tensor([[[[a, b], [c, d]]]])).flatten()
    want = torch.tensor([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d]) / 2
    assert torch.allclose(block, want)


# --- reach, tracing, fitting ---------------------------------------------------------------------------------


def _measured_reach(net: torch.nn.Module, multiple: int, size: int) -> int:
    """The farthest input pixel with a non-zero gradient on one output pixel, over every phase of the net's grid."""
    torch.manual_seed(1)
    worst = 0
    centre = size // 2
    for dy in range(multiple):
        for dx in (0, multiple - 1):
            x = torch.rand(1, net.channels, size, size, requires_grad=True)
            net(x)[0, :, centre + dy, centre + dx].sum().backward()
            ys, xs = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
            assert len(ys), "no input pixel reaches this output: a dead network"
            worst = max(worst, (ys - centre - dy).abs().max().item(), (xs - centre - dx).abs().max().item())
    return worst


@pytest.mark.parametrize("name, want", [("autoencoder", (20, 4)), ("rednet", (10, 1)), ("mwcnn", (63, 8))])
def test_reach_bounds_the_receptive_field(name, want):
    """The registry's `reach` (the tile overlap that makes tiling exact away from the borders) bounds the true
    influence and is tight: an overstated reach only costs time, an understated one would leave seams."""
    spec = get_model_spec(name)
    assert (spec.reach, spec.multiple) == want
    torch.manual_seed(0)
    net = NARROW[name](1).eval()  # the registered structure, narrower: the reach is the same
    measured = _measured_reach(net, spec.multiple, size=2 * (spec.reach + 2 * spec.multiple))
    assert spec.reach - spec.multiple <= measured <= spec.reach


@pytest.mark.parametrize("name", MODULES)
def test_traced_models_take_other_sizes(name):
    """TorchScript export traces on an odd-sized example (41x31) and must then run other sizes exactly."""
    torch.manual_seed(0)
    net = NARROW[name](3).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, torch.rand(2, 3, 41, 31), check_trace=False)
        for size in ((64, 64), (37, 45), (23, 30)):
            x = torch.rand(1, 3, *size)
            assert torch.allclose(traced(x), net(x), atol=1e-6)


@pytest.fixture(scope="module")
def noisy_patch():
    clean = data.camera()[200:264:2, 200:264:2].astype(np.float32) / 255  # 32x32 of edges and flat sky
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0, 25 / 255, clean.shape).astype(np.float32)
    return to_nchw(noisy), to_nchw(clean)


def _adam(net: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor, steps: int, lr: float = 1e-3) -> list[float]:
    """Adam (Kingma and Ba: betas 0.9, 0.999) on the MSE, written out: the first torch.optim optimizer in a process
    imports torch._dynamo, which costs more here (~6 s) than all the fitting. Returns the loss before each step."""
    params = list(net.parameters())
    moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
    losses = []
    for step in range(1, steps + 1):
        loss = torch.nn.functional.mse_loss(net(noisy), clean)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for param, grad, (mean, square) in zip(params, grads, moments, strict=True):
                mean.lerp_(grad, 0.1)
                square.lerp_(grad.square(), 0.001)
                param -= lr * (mean / (1 - 0.9**step)) / ((square / (1 - 0.999**step)).sqrt() + 1e-8)
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("name", MODULES)
def test_each_model_starts_fitting_a_noisy_patch(name, noisy_patch):
    noisy, clean = noisy_patch
    torch.manual_seed(0)
    losses = _adam(NARROW[name](1), noisy, clean, steps=30)
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.75 * losses[0], losses
