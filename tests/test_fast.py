"""bdn.models.fast: folded and onnxruntime forms compute the same function as the model they come from."""

import numpy as np
import pytest

from bdn.errors import BdnError

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from bdn.models import fast  # noqa: E402
from bdn.models.layers import BiasFreeBatchNorm2d  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread(torch_one_thread):
    yield


def _norms(net: nn.Module) -> int:
    return sum(isinstance(m, BiasFreeBatchNorm2d | nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("bias_free", [True, False])
def test_fold_norms_dncnn_same_function(bias_free, randomise_norms):
    from bdn.models.dncnn import DnCNN

    torch.manual_seed(0)  # the convolutions' own initialisation too
    net = randomise_norms(DnCNN(1, depth=5, features=8, bias_free=bias_free))
    folded = fast.fold_norms(net)
    x = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = net(x), folded(x)
        last = fast.ChannelsLast(folded)(x)
    assert float((expected - got).abs().max()) < 1e-5
    assert float((expected - last).abs().max()) < 1e-5
    assert last.is_contiguous()
    assert float((expected - x).abs().max()) > 1e-2  # the net does something, so the check means something
    assert _norms(folded) == 0 and _norms(net) == 3  # the original is kept
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    assert all((m.bias is None) == bias_free for m in convs)  # a bias-free net stays bias-free


@pytest.mark.parametrize(
    ("name", "left"),
    [
        ("resnet_5x5_bn_3x3", 0),  # every norm folds: after a conv, or before a ReLU and a conv (scales > 0)
        ("gated_resnet_5x5_bn_3x3", 0),
        ("gp3_resnet_5x5_bn_3x3", 0),
        ("resnet_5x5_bn_3x3_biased", 6),  # a biased pre-activation norm has a shift: it stays (5 blocks + head)
        ("lp3_sparse_resnet_4x5_bn_3x3", 0),  # a sparse block's norm follows its conv; the head's precedes a ReLU
    ],
)
def test_fold_norms_resnets_same_function(name, left, randomise_norms):
    from bdn.models import build_model

    net = randomise_norms(build_model(name, 1))
    folded = fast.fold_norms(net)
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert float((net(x) - folded(x)).abs().max()) < 1e-5
    assert _norms(folded) <= left


def test_negative_scale_is_not_moved_past_the_relu(randomise_norms):
    from bdn.models import build_model

    net = randomise_norms(build_model("resnet_5x5_bn_3x3", 1), low=-0.5)  # some scales negative
    folded = fast.fold_norms(net)
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        assert float((net(x) - folded(x)).abs().max()) < 1e-5
    assert _norms(folded) > 0  # the norms whose scales are not all positive stay where they are


def test_folded_bias_free_model_stays_scale_equivariant(randomise_norms):
    from bdn.models import build_model

    folded = fast.fast_form(randomise_norms(build_model("resnet_5x5_bn_3x3", 1)), 1)
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        base = folded(x)
        for a in (0.3, 2.0):
            assert float((folded(a * x) - a * base).abs().max()) <= 1e-4 * float(base.abs().max()) * a


def test_fast_form_falls_back_when_the_fold_differs(monkeypatch, randomise_norms):
    from bdn.models import build_model

    net = randomise_norms(build_model("resnet_5x5_bn_3x3", 1))
    broken = fast.fold_norms(net)
    with torch.no_grad():
        broken.stem.weight.mul_(1.1)
    monkeypatch.setattr(fast, "fold_norms", lambda _: broken)
    assert fast.fast_form(net, 1) is net


def test_encoder_decoders_keep_their_layout():
    from bdn.models import build_model

    net = build_model("unet", 3)
    form = fast.fast_form(net, 3)
    assert not isinstance(form, fast.ChannelsLast)
    assert fast.largest_difference(form, net, 3) <= fast.TOLERANCE


def test_weights_digest_follows_the_weights():
    from bdn.models import build_model

    a, b = build_model("resnet_5x5_bn_3x3", 1), build_model("resnet_5x5_bn_3x3", 1)
    b.load_state_dict(a.state_dict())
    assert fast.weights_digest(a) == fast.weights_digest(b)
    with torch.no_grad():
        b.stem.weight[0, 0, 0, 0] += 1e-3
    assert fast.weights_digest(a) != fast.weights_digest(b)


def test_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(fast.CACHE_ENV, str(tmp_path / "c"))
    assert fast.cache_folder() == tmp_path / "c"
    monkeypatch.delenv(fast.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert fast.cache_folder() == tmp_path / "x" / "bdn"


def test_onnx_form_matches_and_reuses_its_file(tmp_path, randomise_norms):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bdn.models import build_model

    net = randomise_norms(build_model("sparse_resnet_4x5_bn_3x3", 1))
    runner = fast.onnx_form(net, 1, cache=tmp_path)
    files = list(tmp_path.glob("*.onnx"))
    assert [p.name for p in files] == [f"{fast.weights_digest(net)}_1.onnx"]
    x = torch.rand(1, 1, 37, 50, generator=torch.Generator().manual_seed(5))  # another size than the recording's
    with torch.inference_mode():
        assert float((runner(x) - net(x)).abs().max()) <= fast.TOLERANCE
    stamp = files[0].stat().st_mtime_ns
    fast.onnx_form(net, 1, cache=tmp_path)
    assert files[0].stat().st_mtime_ns == stamp  # recorded once
    assert list(tmp_path.iterdir()) == files  # no staging folder left behind


def test_onnx_form_records_a_stale_file_again_and_refuses_a_wrong_export(tmp_path, randomise_norms, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bdn.errors import BdnWarning
    from bdn.models import build_model

    net = randomise_norms(build_model("resnet_5x5_bn_3x3", 1))
    other = randomise_norms(build_model("resnet_5x5_bn_3x3", 1))
    with torch.no_grad():
        other.stem.weight.mul_(-1)
    path = fast.onnx_form(other, 1, cache=tmp_path).path
    path.rename(tmp_path / f"{fast.weights_digest(net)}_1.onnx")  # a stale file under net's name
    with pytest.warns(BdnWarning, match="unusable \\(onnxruntime differs from PyTorch by .*\\); recorded it again"):
        runner = fast.onnx_form(net, 1, cache=tmp_path)
    x = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert float((runner(x) - net(x)).abs().max()) <= fast.TOLERANCE
    monkeypatch.setattr(fast, "largest_difference", lambda *args: 0.5)  # an export that never agrees
    with pytest.raises(BdnError, match="onnxruntime differs from PyTorch by 0.5"), pytest.warns(BdnWarning):
        fast.onnx_form(net, 1, cache=tmp_path)
    with pytest.raises(BdnError, match="onnxruntime differs from PyTorch by 0.5"):
        fast.onnx_form(net, 1, cache=tmp_path / "fresh")  # recorded just now: nothing to record again


def test_onnx_form_unwritable_cache(tmp_path, randomise_norms):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bdn.models import build_model

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(BdnError, match=r"file/bdn: cannot keep the ONNX file there .*set BDN_CACHE"):
        fast.onnx_form(randomise_norms(build_model("resnet_5x5_bn_3x3", 1)), 1, cache=blocker / "bdn")


def test_unknown_engine():
    with pytest.raises(BdnError, match="unknown engine 'tvm': choose one of torch, onnxruntime"):
        fast.inference_form(nn.Identity(), 1, "tvm")


def test_denoise_with_model_engines_agree(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bdn.models.run import denoise_with_model

    monkeypatch.setenv(fast.CACHE_ENV, str(tmp_path))
    image = np.random.default_rng(0).random((40, 52), dtype=np.float32)
    torch_out = denoise_with_model(image, model="resnet_5x5_bn_3x3", precision="fp32")  # auto may be bf16
    onnx_out = denoise_with_model(image, model="resnet_5x5_bn_3x3", engine="onnxruntime")
    assert np.abs(torch_out - onnx_out).max() <= 1e-4
