"""Training losses beside MSE (seed 004's set): L1, SSIM, total variation, and the VAE's KL term.

`training_loss` adds the weighted terms a config names; each term is a mean over the batch, so weights compare
across batch sizes. The SSIM term is bdn.torch_metrics.ssim_torch with the "gaussian" window (11x11, sigma 1.5,
K1 0.01, K2 0.03, data range 1): scikit-image's `structural_similarity` with `gaussian_weights=True,
use_sample_covariance=False` (equal to it, tested).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from bdn.torch_metrics import ssim_torch

TERMS = ("mse", "l1", "ssim", "tv", "kl")


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
            value = 1 - ssim_torch(out, clean, "gaussian")
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
