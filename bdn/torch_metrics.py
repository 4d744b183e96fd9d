"""PSNR and SSIM on torch tensors: bdn.metrics' measures where the images already live on a device.

bdn.metrics (numpy, scikit-image) is the reference; these give the same numbers without a trip to the host,
for DIP's per-iteration curves, the snapshots run_BDN scores, the oracle judge and the SSIM training loss.
Images are (N, C, H, W) (the PSNR takes any shape), data range 1.

SSIM's window is chosen by name, each named for the scikit-image call it equals (tested):
- "uniform": 7x7 mean, sample covariance: ``structural_similarity(..., data_range=1)``, its defaults, which
  bdn.metrics.ssim uses;
- "gaussian": 11x11 Gaussian of sigma 1.5, population covariance: ``gaussian_weights=True,
  use_sample_covariance=False`` (Wang et al.'s definition; the SSIM training loss).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["SSIM_WINDOWS", "psnr_torch", "ssim_score", "ssim_torch"]

#: SSIM windows by name: (side, Gaussian sigma or None for a uniform mean, sample covariance?).
SSIM_WINDOWS = {"uniform": (7, None, True), "gaussian": (11, 1.5, False)}

_C1, _C2 = 0.01**2, 0.03**2  # (K1 * L)^2, (K2 * L)^2 with K1 0.01, K2 0.03, data range L 1


def psnr_torch(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """bdn's PSNR in dB (x clipped to [0, 1], data range 1, all values pooled) as a 0-d tensor on x's device,
    in the inputs' dtype; inf for identical images."""
    return -10.0 * torch.log10(torch.mean((x.clamp(0.0, 1.0) - reference) ** 2))


def ssim_torch(x: torch.Tensor, y: torch.Tensor, window: str = "uniform") -> torch.Tensor:
    """Mean SSIM of x against y, (N, C, H, W), with the named window (see the module docstring).

    Differentiable, in the inputs' dtype, over the windows lying wholly inside the image (scikit-image filters
    with reflection and then crops half a window on every side, which leaves exactly those), per channel, then
    averaged. Images smaller than the window get the largest odd window that fits (the Gaussian's sigma scaled
    with it), so a loss works on tiny patches.
    """
    if window not in SSIM_WINDOWS:
        raise ValueError(f"unknown SSIM window {window!r}; choose one of {', '.join(SSIM_WINDOWS)}")
    side, sigma, sample_covariance = SSIM_WINDOWS[window]
    smallest = min(x.shape[-2:])
    if smallest < side:
        side, sigma = smallest - (1 - smallest % 2), sigma and sigma * (smallest - (1 - smallest % 2)) / side
    if sigma is None:

        def mean(t: torch.Tensor) -> torch.Tensor:
            return F.avg_pool2d(t, side, stride=1)
    else:
        kernel = _gaussian_kernel(x.shape[1], side, sigma, x)

        def mean(t: torch.Tensor) -> torch.Tensor:
            return F.conv2d(t, kernel, groups=x.shape[1])

    norm = side * side / (side * side - 1.0) if sample_covariance else 1.0
    ux, uy = mean(x), mean(y)
    # Squares as **2, not ux * ux: the same values, and the gradient the SSIM loss has always had.
    vx = norm * (mean(x * x) - ux**2)
    vy = norm * (mean(y * y) - uy**2)
    vxy = norm * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + _C1) * (2 * vxy + _C2)) / ((ux**2 + uy**2 + _C1) * (vx + vy + _C2))
    return s.mean()


def ssim_score(x: torch.Tensor, y: torch.Tensor, window: str = "uniform") -> torch.Tensor:
    """SSIM as a measure, equal to bdn.metrics.ssim: x clipped to [0, 1], no gradient, in float64 (float32 on
    MPS, which has no float64), as a 0-d tensor on x's device."""
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    return ssim_torch(x.detach().to(dtype).clamp(0.0, 1.0), y.detach().to(dtype), window)


def _gaussian_kernel(channels: int, side: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """A normalised side x side Gaussian as a depthwise conv2d kernel (channels, 1, side, side)."""
    coords = torch.arange(side, dtype=like.dtype, device=like.device) - (side - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g).expand(channels, 1, side, side)
