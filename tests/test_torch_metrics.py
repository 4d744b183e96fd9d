"""bdn.torch_metrics: PSNR and SSIM on tensors equal bdn.metrics (scikit-image) on the same images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bdn.metrics import psnr, ssim
from bdn.tensors import to_nchw
from bdn.torch_metrics import SSIM_WINDOWS, psnr_torch, ssim_score, ssim_torch


@pytest.mark.parametrize("shape", [(20, 24), (20, 24, 3)])
def test_psnr_and_ssim_equal_bdn_metrics(shape):
    rng = np.random.default_rng(0)
    clean = rng.random(shape)
    out = np.clip(clean + rng.normal(0, 0.1, shape), -0.1, 1.1)  # both clip the output to [0, 1]
    x, y = to_nchw(out, torch.float64), to_nchw(clean, torch.float64)
    assert float(psnr_torch(x, y)) == pytest.approx(psnr(clean, out), abs=1e-10)
    assert float(ssim_score(x, y)) == pytest.approx(ssim(clean, out), abs=1e-10)
    assert ssim_score(x.float(), y.float()).dtype == torch.float64  # a measure is taken in float64


def test_windows_by_name():
    assert set(SSIM_WINDOWS) == {"uniform", "gaussian"}
    x = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert float(ssim_torch(x, x, "gaussian")) == pytest.approx(1.0) == float(ssim_torch(x, x, "uniform"))
    tiny = x[..., :5, :5]  # smaller than either window: the largest odd window that fits
    assert float(ssim_torch(tiny, tiny, "gaussian")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown SSIM window"):
        ssim_torch(x, x, "box")
