"""precision=auto|fp32|bf16 for the model methods (issue 19, item 1): what auto picks, what is refused, and the
bf16 form computing (nearly) the float32 function."""

from __future__ import annotations

import numpy as np
import pytest

from bdn.errors import BdnError

torch = pytest.importorskip("torch")

from bdn.models import fast  # noqa: E402
from bdn.models.run import denoise_with_model, model_precision  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield


@pytest.fixture
def native(monkeypatch):
    """native(True | False): pretend the CPU does (not) compute bf16 natively."""

    def set_to(value: bool) -> None:
        monkeypatch.setattr("bdn.dip.precision.bf16_supported", lambda device: value)

    return set_to


def test_auto_is_bf16_only_where_the_cpu_has_it(native):
    native(True)
    assert fast.resolve_precision("auto", "resnet_5x5_bn_3x3") == "bf16"
    native(False)
    assert fast.resolve_precision("auto", "resnet_5x5_bn_3x3") == "fp32"
    assert fast.resolve_precision("bf16", "resnet_5x5_bn_3x3") == "bf16"  # asked for: honoured (emulated)
    assert fast.resolve_precision("fp32") == "fp32"


def test_auto_keeps_fp32_for_a_model_that_loses_accuracy(native, monkeypatch):
    native(True)
    monkeypatch.setattr(fast, "FP32_ONLY", frozenset({"mwcnn"}))
    assert fast.resolve_precision("auto", "mwcnn") == "fp32"
    assert fast.resolve_precision("bf16", "mwcnn") == "bf16"


def test_onnxruntime_is_fp32(native):
    native(True)
    assert model_precision("resnet_5x5_bn_3x3", "onnxruntime", "auto") == "fp32"
    with pytest.raises(BdnError, match="torch engine"):
        model_precision("resnet_5x5_bn_3x3", "onnxruntime", "bf16")


def test_a_bad_precision_is_refused_before_any_image():
    from bdn.methods import check_params

    with pytest.raises(BdnError, match="resnet_5x5_bn_3x3: precision must be one of auto, fp32, bf16"):
        check_params("resnet_5x5_bn_3x3", {"precision": "fp16"})
    check_params("resnet_5x5_bn_3x3", {"precision": "bf16"})


@pytest.mark.parametrize("name", ["resnet_5x5_bn_3x3", "sparse_resnet_4x5_bn_3x3", "bf_dncnn", "unet"])
def test_bf16_form_is_the_float32_function_to_bf16_rounding(name, randomise_norms):
    from bdn.models import build_model

    torch.manual_seed(0)
    net = randomise_norms(build_model(name, 1)).eval()
    x = torch.rand(1, 1, 32, 48, generator=torch.Generator().manual_seed(1))
    run = fast.bf16_form(net, 1)
    with torch.inference_mode():
        got, expected = run(x), net(x)
    assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == expected.shape
    # bf16 keeps about 3 significant digits: the error scales with what the net predicts (its noise estimate, as
    # large as the image for DnCNN's He-initialised stack with random norms), not with the image
    predicted = (expected - x).abs()
    assert float((got - expected).abs().max()) < 2e-2 * max(1.0, float(predicted.max()))
    assert float((got - expected).abs().mean()) < 2.5e-2 * float(predicted.mean())


def test_a_bf16_form_that_drifts_is_refused(monkeypatch, randomise_norms):
    from bdn.models import build_model

    monkeypatch.setattr(fast, "BF16_TOLERANCE", 0.0)
    net = randomise_norms(build_model("resnet_5x5_bn_3x3", 1))
    with pytest.raises(BdnError, match="precision=fp32"):
        fast.bf16_form(net, 1)


def test_shipped_model_in_bf16_close_to_fp32():
    """The shipped grey resnet on a noisy crop: bf16 and fp32 outputs a few bf16 roundings apart."""
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.1, 0.9, 64, dtype=np.float32), (48, 1))
    noisy = (clean + rng.normal(0, 25 / 255, clean.shape)).astype(np.float32)
    fp32 = denoise_with_model(noisy, model="resnet_5x5_bn_3x3", precision="fp32")
    bf16 = denoise_with_model(noisy, model="resnet_5x5_bn_3x3", precision="bf16")
    assert bf16.dtype == np.float32 and bf16.shape == noisy.shape
    assert float(np.abs(bf16 - fp32).mean()) < 2e-3
    assert not np.array_equal(bf16, fp32)  # it did run in bf16
