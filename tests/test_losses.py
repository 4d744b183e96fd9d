"""bdn.models.losses: SSIM equal to scikit-image's Gaussian-window SSIM, total variation, the weighted sum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from bdn.models.losses import total_variation, training_loss
from bdn.torch_metrics import ssim_torch


def test_ssim_matches_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 40, 50))
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    expected = np.mean(
        [
            structural_similarity(a[n, c], b[n, c], data_range=1.0, gaussian_weights=True, use_sample_covariance=False)
            for n in range(2)
            for c in range(3)
        ]
    )
    assert abs(float(ssim_torch(torch.tensor(a), torch.tensor(b), "gaussian")) - expected) < 1e-9
    assert abs(float(ssim_torch(torch.tensor(a), torch.tensor(a), "gaussian")) - 1) < 1e-12


def test_total_variation_and_weighted_sum():
    flat = torch.full((1, 1, 8, 8), 0.5)
    assert float(total_variation(flat)) == 0
    stripes = torch.zeros(1, 1, 8, 8)
    stripes[..., ::2] = 1
    assert float(total_variation(stripes)) == pytest.approx(1.0)
    out, clean = torch.zeros(1, 1, 16, 16), torch.full((1, 1, 16, 16), 0.2)
    total, parts = training_loss(torch.nn.Identity(), out, clean, {"mse": 1.0, "l1": 2.0, "tv": 0.0})
    assert set(parts) == {"mse", "l1"}
    assert float(total) == pytest.approx(0.04 + 2 * 0.2)
    with pytest.raises(ValueError, match="needs a model that reports last_kl"):
        training_loss(torch.nn.Identity(), out, clean, {"kl": 1.0})
    net = torch.nn.Identity()
    net.last_kl = torch.tensor(3.0)
    assert float(training_loss(net, out, clean, {"kl": 0.5})[0]) == pytest.approx(1.5)
