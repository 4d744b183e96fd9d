"""bdn.models.pridnet and bdn.models.unet: shapes at odd sizes, finite gradients, the VAE's sampling and KL, the
pixel-shuffle U-Net's sigmoid range, and that each network can fit one small patch."""

from __future__ import annotations

import pytest
import torch
from skimage import data

from bdn.models.pridnet import PRIDNet, pridnet
from bdn.models.unet import VAE, PixelShuffleUNet, UNet, kl_divergence, pixelshuffle_unet, unet, vae
from bdn.tensors import to_nchw

BUILDERS = {"pridnet": pridnet, "pixelshuffle_unet": pixelshuffle_unet, "unet": unet, "vae": vae}


@pytest.fixture(autouse=True)
def one_thread():
    """The machine is shared: keep every test on one core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _build(name: str, channels: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return BUILDERS[name](channels)


def _patch(channels: int) -> torch.Tensor:
    """A 32x32 natural patch (scikit-image's camera or astronaut, every 4th pixel), [1, C, 32, 32] in [0, 1]."""
    image = data.camera()[100:228:4, 200:328:4] if channels == 1 else data.astronaut()[20:148:4, 160:288:4]
    return to_nchw(image) / 255.0


@pytest.mark.parametrize("name", sorted(BUILDERS))
@pytest.mark.parametrize("channels", [1, 3])
def test_models_keep_the_shape_at_odd_sizes(name, channels):
    net = _build(name, channels).eval()
    assert (net.channels, net.bias_free) == (channels, False)
    with torch.no_grad():
        for shape in [(1, channels, 17, 23), (2, channels, 33, 50), (1, channels, 16, 64), (1, channels, 5, 9)]:
            out = net(torch.rand(*shape))
            assert out.shape == shape
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gradients_reach_every_parameter_and_are_finite(name):
    net = _build(name, 3).train()
    x = torch.rand(2, 3, 21, 27)
    out = net(x)
    loss = (out - x.flip(-1)).pow(2).mean()
    if name == "vae":
        loss = loss + 1e-3 * net.last_kl
    loss.backward()
    for param_name, param in net.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
    # The identity-initialised heads still get a gradient: training can leave the identity
    if name in ("pridnet", "unet"):
        assert net.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["pridnet", "unet"])
def test_residual_models_start_as_the_identity(name):
    net = _build(name, 3).eval()
    x = torch.rand(1, 3, 19, 26)
    with torch.no_grad():
        assert torch.equal(net(x), x)


def test_pixelshuffle_unet_outputs_stay_inside_zero_one():
    net = _build("pixelshuffle_unet", 3).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for x in (torch.rand(2, 3, 29, 37, generator=generator), torch.zeros(1, 3, 20, 20), torch.ones(1, 3, 20, 20)):
            out = net(x)
            assert out.min() > 0 and out.max() < 1


def test_pixelshuffle_unet_goes_down_to_one_32nd_and_caps_its_width():
    net = PixelShuffleUNet(1, width=16, max_width=64)
    assert net.multiple == 32
    assert [block[0].out_channels for block in net.encoder] == [16, 32, 64, 64, 64]
    assert net.bottom[0].out_channels == 64
    # Sub-pixel convolutions: 4x the channels, then PixelShuffle(2) back to the level's width
    assert [up[0].out_channels for up in net.upsample] == [64, 128, 256, 256, 256]
    assert all(isinstance(up[1], torch.nn.PixelShuffle) for up in net.upsample)


def test_kl_divergence_is_zero_at_the_prior_and_matches_the_closed_form():
    zero = torch.zeros(2, 4, 3, 5)
    assert kl_divergence(zero, zero).item() == 0.0
    # mu = 1, logvar = 0: 0.5 per element, and the mean over elements is that
    assert kl_divergence(torch.ones(2, 4, 3, 5), zero).item() == pytest.approx(0.5)
    # mu = 0, var = e: 0.5 * (e - 1 - 1) per element
    logvar = torch.ones(3, 2, 2, 2)
    assert kl_divergence(torch.zeros_like(logvar), logvar).item() == pytest.approx(0.5 * (torch.e - 2), rel=1e-6)
    generator = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(4, 8, 6, 6, generator=generator), torch.randn(4, 8, 6, 6, generator=generator)
    assert kl_divergence(mu, logvar).item() > 0


def test_vae_is_deterministic_in_eval_and_samples_in_training():
    net = VAE(1, width=8, latent=8)
    x = torch.rand(2, 1, 22, 30)
    net.eval()
    with torch.no_grad():
        first, second = net(x), net(x)
        assert torch.equal(first, second)
        assert net.last_kl.item() >= 0
        # eval decodes the mean: the same as decode(mu) by hand
        mu, _ = net.encode(torch.nn.functional.pad(x, (0, 2, 0, 2), mode="reflect"))
        assert torch.allclose(first, net.decode(mu)[..., :22, :30])
    net.train()
    with torch.no_grad():
        torch.nn.init.zeros_(net.logvar.bias)  # std ~ 1: samples differ visibly
        first, second = net(x), net(x)
    assert not torch.allclose(first, second)
    assert first.shape == x.shape
    assert net.last_kl.ndim == 0 and net.last_kl.item() >= 0


def test_pridnet_pads_for_its_coarsest_scale():
    net = PRIDNet(1, features=8, scales=(1, 2, 4))
    assert net.multiple == 8
    assert len(net.pyramid) == 3
    with torch.no_grad():
        assert net.eval()(torch.rand(1, 1, 5, 9)).shape == (1, 1, 5, 9)


@pytest.mark.parametrize(("name", "channels"), [("pridnet", 3), ("pixelshuffle_unet", 1), ("unet", 1), ("vae", 3)])
def test_each_model_fits_one_patch(name, channels):
    """30 Adam steps on one noisy 32x32 patch lower the loss against its clean version (eval-mode loss)."""
    clean = _patch(channels)
    generator = torch.Generator().manual_seed(2)
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    net = _build(name, channels)

    def eval_loss() -> float:
        net.eval()
        with torch.no_grad():
            return torch.nn.functional.mse_loss(net(noisy), clean).item()

    before = eval_loss()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)  # fused: a quarter of the CPU time
    net.train()
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(net(noisy), clean)
        if isinstance(net, VAE):
            loss = loss + 1e-6 * net.last_kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = eval_loss()
    assert after < 0.9 * before, (before, after)


def test_builders_give_the_documented_shapes():
    assert isinstance(pixelshuffle_unet(3), PixelShuffleUNet)
    assert isinstance(unet(1), UNet) and unet(1).multiple == 16
    assert isinstance(vae(3), VAE) and vae(3).multiple == 4
    assert isinstance(pridnet(1), PRIDNet) and pridnet(1).multiple == 32
