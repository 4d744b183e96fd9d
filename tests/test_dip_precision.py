"""bf16 DIP fits: the precision setting, the bf16 mirror of the network, and the exact fast upsampling backward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bdn
from bdn.dip.config import DipConfig
from bdn.dip.fit import fit_dip
from bdn.dip.nets import Upsample2x
from bdn.dip.precision import bf16_supported, resolve_precision
from bdn.errors import BdnError


def _pair(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    clean = data.astronaut()[120 : 120 + size, 200 : 200 + size].astype(np.float32) / 255
    return clean, bdn.add_noise(clean, "gaussian", 25, seed=0)


def test_precision_is_resolved_by_hardware_and_checked():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_supported(cpu) else "fp32")
    with pytest.raises(BdnError, match="precision must be one of auto, fp32, bf16, got 'half'"):
        resolve_precision("half", cpu)
    with pytest.raises(BdnError, match="DIP config: precision must be one of"):
        fit_dip(_pair()[1], None, DipConfig(num_iter=1, precision="fp16"), progress=False)


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_upsampling_and_its_fast_backward_equal_pytorchs(mode, dtype):
    x = torch.rand(1, 6, 9, 7, dtype=dtype).to(memory_format=torch.channels_last).requires_grad_()
    reference = x.detach().clone().requires_grad_()
    grad = torch.randn(1, 6, 18, 14, dtype=dtype)
    ours = Upsample2x(mode)(x)
    theirs = torch.nn.Upsample(scale_factor=2, mode=mode, align_corners=False if mode == "bilinear" else None)
    expected = theirs(reference)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    ours.backward(grad)
    expected.backward(grad)
    tolerance = 1e-6 if dtype == torch.float32 else 1e-2  # the same sums in another order, rounded to bf16
    torch.testing.assert_close(x.grad.float(), reference.grad.float(), rtol=tolerance, atol=tolerance)


def test_bf16_fit_keeps_float32_weights_and_tracks_the_fp32_fit(torch_one_thread):
    clean, noisy = _pair()
    results = {
        precision: fit_dip(
            noisy, clean, DipConfig(net_type="skip_light", lr=0.02, num_iter=600, precision=precision), progress=False
        )
        for precision in ("fp32", "bf16")
    }
    bf16, fp32 = results["bf16"], results["fp32"]
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32")
    assert all(value.dtype == torch.float32 for value in bf16.state_dict.values() if value.is_floating_point())
    assert bf16.ema.dtype == np.float32 and bf16.ema.shape == noisy.shape
    # Fixed seeds: both climb from 20.4 dB (noisy) to 28.3-28.6 dB at iteration 600, still rising, 0.25 dB apart.
    assert bf16.final_psnr > bdn.psnr(clean, noisy) + 7
    assert abs(bf16.final_psnr - fp32.final_psnr) < 0.35
    # Batch norm's running statistics, updated only in the bf16 mirror, reach the returned weights.
    running = [key for key in bf16.state_dict if key.endswith("running_mean")]
    assert running and any(bf16.state_dict[key].abs().sum() > 0 for key in running)


def test_bf16_fit_resumes_exactly(torch_one_thread):
    clean, noisy = _pair()
    config = DipConfig(num_iter=12, precision="bf16", show_iter=4)
    whole = fit_dip(noisy, clean, config, progress=False)
    states = {}

    def keep(iteration, frame):
        if iteration == 5:
            states["cut"] = frame.state()
            return True
        return False

    fit_dip(noisy, clean, config, progress=False, on_iteration=keep)
    resumed = fit_dip(noisy, clean, config, progress=False, resume_state=states["cut"])
    np.testing.assert_array_equal(resumed.ema, whole.ema)
    assert [row["loss"] for row in resumed.history] == [row["loss"] for row in whole.history]
