"""Training losses beside MSE (seed 004's set): L1, SSIM, total variation, and the VAE's KL term.

`training_loss` adds the weighted terms a config names; each term is a mean over the batch, so weights compare
across batch sizes. SSIM here is the differentiable form of the usual definition (11x11 Gaussian window, sigma 1.5,
K1 0.01, K2 0.03, data range 1): scikit-image's `structural_similarity` with `gaussian_weights=True,
use_sample_covariance=False` (equal to it, tested).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

TERMS = ("mse", "l1", "ssim", "tv", "kl")


def _gaussian_window(channels: int, like: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, size, size)


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two [N, C, H, W] batches in [0, 1] (valid region of the window, per channel, then averaged)."""
    channels = x.shape[1]
    window = _gaussian_window(channels, x)
    size = window.shape[-1]
    if min(x.shape[-2:]) < size:  # tiny patches: a window as large as the patch allows (odd)
        side = min(x.shape[-2:]) - (1 - min(x.shape[-2:]) % 2)
        window = _gaussian_window(channels, x, size=side, sigma=1.5 * side / 11)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=channels)

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return score.mean()


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV, per pixel)."""
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def training_loss(
    net: torch.nn.Module, out: torch.Tensor, clean: torch.Tensor, weights: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """(the weighted sum, each term's value) for the terms with a non-zero weight. 'kl' reads `net.last_kl`."""
    total = out.new_zeros(())
    parts: dict[str, float] = {}
    for term, weight in weights.items():
        if not weight:
            continue
        if term == "mse":
            value = F.mse_loss(out, clean)
        elif term == "l1":
            value = F.l1_loss(out, clean)
        elif term == "ssim":
            value = 1 - ssim(out, clean)
        elif term == "tv":
            value = total_variation(out)
        elif term == "kl":
            value = getattr(net, "last_kl", None)
            if value is None:
                raise ValueError("loss.kl needs a model that reports last_kl (the VAE)")
        else:
            raise ValueError(f"unknown loss term {term!r}")
        total = total + weight * value
        parts[term] = float(value.detach())
    return total, parts
