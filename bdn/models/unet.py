"""U-Net family from the seeds: the pixel-shuffle U-Net (seed 003), a plain U-Net and a convolutional VAE (seed 004).

All take float [N, C, H, W] in [0, 1] and return the same shape; each pads the input inside (reflection) to the
multiple its downsampling needs (`self.multiple`) and crops the result back, so any image size works.

- `PixelShuffleUNet`: pairs of 3x3 convolutions and 2x2 max-pooling down to 1/32, and on the way up a sub-pixel
  convolution (3x3 to 4x the channels) + PixelShuffle(2), concatenation with the encoder's map of that scale, a
  pair of convolutions (a single one at full size, as the seed has it), and a 1x1 convolution with a sigmoid: the
  clean image is predicted directly, always inside (0, 1).
- `UNet`: the classic U-Net (convolution pairs, max-pooling down to 1/16, transposed-convolution up, skips), with a
  residual output (a zero-initialised `head` predicts the noise, out = x - noise) so training starts at the noisy
  input's PSNR. Seed 004 does not say which; the residual form is the one that trains well for denoising.
- `VAE`: an encoder (strided convolutions to 1/4) gives the mean and log-variance of a spatial latent; training
  samples z = mu + eps * std (the reparameterisation), eval uses z = mu so inference is deterministic; a decoder
  (transposed convolutions) returns the image through a sigmoid. `forward` returns the image only and keeps the
  KL divergence of that pass in `self.last_kl`, which the trainer adds to the loss with its weight.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import conv, pad_to_multiple
from bdn.models.registry import register_model

# The context each tile gets, on the model's own grid (`multiple`). Measured by gradients, the plain U-Net reaches
# 106 pixels and the VAE 25, so their tiles give the whole image's result; the pixel-shuffle U-Net reaches 278,
# further than a practical overlap, so its tiles match the whole image closely, not exactly.
UNET_CONTEXT = 128


def he_init(module: nn.Module) -> None:
    """He (Kaiming) normal weights and zero biases for every convolution and linear layer under `module`.

    PyTorch's default init shrinks the signal at each ReLU layer; after a dozen layers the features are a few
    hundredths of the input, and a residual head learns almost nothing at first (the seed used he_normal too).
    A transposed convolution's fan-in is what reaches one output pixel: in_channels * kernel area / stride area.
    """
    for layer in module.modules():
        if isinstance(layer, nn.ConvTranspose2d):
            area = layer.kernel_size[0] * layer.kernel_size[1] / (layer.stride[0] * layer.stride[1])
            nn.init.normal_(layer.weight, std=(2.0 / (layer.in_channels * area)) ** 0.5)
        elif isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        else:
            continue
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


def conv_pair(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolutions, each followed by ReLU: the unit of every U-Net level."""
    return nn.Sequential(
        conv(in_channels, out_channels, 3, True),
        nn.ReLU(),
        conv(out_channels, out_channels, 3, True),
        nn.ReLU(),
    )


class PixelShuffleUNet(nn.Module):
    """Seed 003's U-Net: max-pooling down to 1/32, sub-pixel convolution + pixel shuffle up, sigmoid output.

    Widths double per level from `width` (the seed: 16 at the top, 512 at the bottom) and are capped at
    `max_width` so the CPU default stays small; `dropout` after each pooling as the seed (0.1 there) or none.
    """

    depth = 5  # poolings: 2^5 = 32

    def __init__(self, channels: int = 1, width: int = 16, max_width: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.channels, self.bias_free = channels, False
        self.multiple = 2**self.depth
        widths = [min(width * 2**level, max_width) for level in range(self.depth + 1)]
        self.encoder = nn.ModuleList(
            conv_pair(channels if level == 0 else widths[level - 1], widths[level]) for level in range(self.depth)
        )
        self.drop = nn.Dropout(dropout)
        self.bottom = conv_pair(widths[-2], widths[-1])
        # Level `level` of the decoder lifts the map below it to widths[level] channels at twice the size
        self.upsample = nn.ModuleList(
            nn.Sequential(conv(widths[level + 1], 4 * widths[level], 3, True), nn.PixelShuffle(2))
            for level in range(self.depth)
        )
        self.decoder = nn.ModuleList(
            conv_pair(2 * widths[level], widths[level])
            if level > 0
            else nn.Sequential(conv(2 * widths[0], widths[0], 3, True), nn.ReLU())
            for level in range(self.depth)
        )
        self.head = nn.Conv2d(widths[0], channels, 1)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, (height, width) = pad_to_multiple(x, self.multiple)
        skips = []
        for block in self.encoder:
            h = block(h)
            skips.append(h)
            h = self.drop(F.max_pool2d(h, 2))
        h = self.bottom(h)
        for level in reversed(range(self.depth)):
            h = self.decoder[level](torch.cat([skips[level], self.upsample[level](h)], dim=1))
        return torch.sigmoid(self.head(h))[..., :height, :width]


class UNet(nn.Module):
    """Plain U-Net (Ronneberger et al. 2015) with a residual output: out = x - head(features)."""

    def __init__(self, channels: int = 1, width: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.channels, self.bias_free = channels, False
        self.depth, self.multiple = depth, 2**depth
        widths = [width * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            conv_pair(channels if level == 0 else widths[level - 1], widths[level]) for level in range(depth)
        )
        self.bottom = conv_pair(widths[-2], widths[-1])
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2) for level in range(depth)
        )
        self.decoder = nn.ModuleList(conv_pair(2 * widths[level], widths[level]) for level in range(depth))
        self.head = nn.Conv2d(widths[0], channels, 1)
        he_init(self)
        # A fresh model is the identity (no noise predicted); training learns the correction
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, self.multiple)
        h, skips = padded, []
        for block in self.encoder:
            h = block(h)
            skips.append(h)
            h = F.max_pool2d(h, 2)
        h = self.bottom(h)
        for level in reversed(range(self.depth)):
            h = self.decoder[level](torch.cat([skips[level], self.upsample[level](h)], dim=1))
        return (padded - self.head(h))[..., :height, :width]


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent element, averaged over channels, positions and the batch: the
    ELBO's regulariser scaled like the per-pixel reconstruction losses, so a config's KL weight means the same for
    every patch size (the summed form grows with the image's area)."""
    return (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).mean()


class VAE(nn.Module):
    """Convolutional VAE with a spatial latent at 1/4 of the image's size (`latent` channels).

    The latent keeps positions (not one global vector) so the decoder can place detail; a denoiser needs that,
    and it lets the model take any image size. The log-variance layer starts with a bias of -6 (std 0.05) so
    early training is not drowned in sampling noise; the KL term moves it towards the prior from there.
    """

    def __init__(self, channels: int = 1, width: int = 32, latent: int = 32) -> None:
        super().__init__()
        self.channels, self.bias_free = channels, False
        self.multiple = 4
        self.encoder = nn.Sequential(
            conv(channels, width, 3, True),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            conv(2 * width, 2 * width, 3, True),
            nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.ReLU(),
            conv(4 * width, 4 * width, 3, True),
            nn.ReLU(),
        )
        self.mu = conv(4 * width, latent, 3, True)
        self.logvar = conv(4 * width, latent, 3, True)
        self.decoder = nn.Sequential(
            conv(latent, 4 * width, 3, True),
            nn.ReLU(),
            nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2),
            nn.ReLU(),
            conv(2 * width, 2 * width, 3, True),
            nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 2, stride=2),
            nn.ReLU(),
            conv(width, width, 3, True),
            nn.ReLU(),
            conv(width, channels, 3, True),
        )
        he_init(self)
        nn.init.constant_(self.logvar.bias, -6.0)
        self.last_kl: torch.Tensor | None = None

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of the latent for a padded input; logvar clamped so exp() stays finite."""
        h = self.encoder(x)
        return self.mu(h), self.logvar(h).clamp(-20.0, 10.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, self.multiple)
        mu, logvar = self.encode(padded)
        self.last_kl = kl_divergence(mu, logvar)
        # Reparameterisation (gradients reach mu and logvar through the sample); eval decodes the mean
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return self.decode(z)[..., :height, :width]


# No weights ship: 0.40 dB above the noisy input on CC, under bdn's half-decibel bar
# (benchmarks/records/bench_models_cpu.md); `bdn train` and `--weights` still serve it.
@register_model(
    "pixelshuffle_unet",
    bias_free=False,
    reach=UNET_CONTEXT,
    multiple=32,
    exact_tiles=False,
    summary="seed 003's U-Net: to 1/32, pixel-shuffle up, sigmoid",
)
def pixelshuffle_unet(channels: int) -> PixelShuffleUNet:
    """Seed 003's network: 16 channels at the top, doubling per level, capped at 128 (the seed goes to 512)."""
    return PixelShuffleUNet(channels)


@register_model(
    "unet",
    bias_free=False,
    reach=UNET_CONTEXT,
    multiple=16,
    shipped=("colour",),
    summary="seed 004's U-Net: conv pairs, 4 poolings, transposed-conv up, residual output",
)
def unet(channels: int) -> UNet:
    """Seed 004's U-Net: 16 channels at the top, four poolings (256 at the bottom), residual output."""
    return UNet(channels)


# No weights ship: under the noisy input on CC (32.02 against 33.41 dB, benchmarks/records/bench_models_cpu.md);
# `bdn train` and `--weights` still serve it.
@register_model(
    "vae",
    bias_free=False,
    reach=UNET_CONTEXT,
    multiple=4,
    summary="seed 004's convolutional VAE (spatial latent; the KL term in last_kl)",
)
def vae(channels: int) -> VAE:
    """Seed 004's VAE: 32 channels at the top, a 32-channel latent at 1/4 of the size."""
    return VAE(channels)
