"""Faster forms of a trained feed-forward model for inference: the same function, fewer passes over memory.

- `fold_norms(net)`: every batch norm that directly follows a convolution goes into that convolution's weights
  (and bias, for a biased norm); a bias-free norm whose every scale is positive and that feeds a ReLU and then a
  convolution (the resnets' pre-activation norms) goes into that convolution's input channels, since
  relu(s x) = s relu(x) for s > 0. A bias-free model stays bias-free.
- `fast_form(net)`: the folded copy, channels-last for the plain convolutional families (on a 2-core AVX-512 Xeon
  it took resnet_5x5_bn_3x3 on a 512x512 grey image from 1.40 s to 0.83 s), checked against `net` on a small
  input: where anything differs by more than 1e-4 the plain eval-mode model is used instead.
- `onnx_form(net, channels)`: the folded model exported to ONNX (bdn.export's recorder) and run by onnxruntime
  (0.41 s for the same image). Recording takes seconds, so the file is kept in a cache folder under a name made
  from the weights and reused.

- `bf16_form(net)`: the folded copy, channels-last, run under `torch.autocast("cpu", torch.bfloat16)`: the
  convolutions compute in bfloat16 (AMX / AVX512-BF16 kernels), the output comes back as float32. Every shipped
  model keeps its Set12 PSNR (sigma 25) within 0.02 dB of float32 this way; running the output convolution in
  float32 too moved it by 0.001 dB at most (resnet_5x5_bn_3x3, sparse_resnet_5x5_bn_3x3, the official
  BF-DnCNN), so the whole net computes in bf16.

`bdn.models.run` uses `fast_form` by default, `onnx_form` with engine="onnxruntime" and `bf16_form` with
precision="bf16" (the default "auto" picks it where the CPU computes bf16 natively: `bf16_supported`);
benchmarks/bf_models.py times the fp32 forms, benchmarks/models_speed.py fp32 against bf16.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from bdn.errors import BdnError, BdnWarning

ENGINES = ("torch", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16")
TOLERANCE = 1e-4  # max abs difference allowed between a fast form and the model, on outputs in [0, 1]
# bf16 keeps 8 bits of mantissa: a gross error (a layer that overflows, a wrong layout) shows as far more than this
# on the check input; the accuracy that matters (PSNR on Set12 within 0.02 dB) is measured by
# benchmarks/models_speed.py, and models that miss it are in FP32_ONLY.
BF16_TOLERANCE = 0.05
CACHE_ENV = "BDN_CACHE"  # where onnx_form keeps its files (default ~/.cache/bdn)
_CHECK_SIZE = (1, 45, 38)  # (N, H, W) of the random input a fast form is checked on: odd and even sides


def _norm_scale(norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """(per-channel scale, shift or None) of an eval-mode batch norm, None for anything else."""
    from bdn.models.layers import BiasFreeBatchNorm2d

    if isinstance(norm, BiasFreeBatchNorm2d):
        return norm.weight / (norm.running_var.sqrt() + norm.eps), None
    if isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
        weight = norm.weight if norm.affine else torch.ones_like(norm.running_var)
        scale = weight / (norm.running_var + norm.eps).sqrt()
        return scale, -norm.running_mean * scale + (norm.bias if norm.affine else 0.0)
    return None


def _copy_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=bias is not None,
        padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        fused.weight.copy_(weight)
        if bias is not None:
            fused.bias.copy_(bias)
    return fused


def fold_after(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """One Conv2d equal (eval mode) to `conv` followed by `norm`; ValueError if `norm` cannot fold."""
    found = _norm_scale(norm)
    if found is None:
        raise ValueError(f"cannot fold {type(norm).__name__} into a convolution")
    with torch.no_grad():
        scale, shift = found
        bias = conv.bias * scale if conv.bias is not None else None
        if shift is not None:
            bias = shift if bias is None else bias + shift
        return _copy_conv(conv, conv.weight * scale.view(-1, 1, 1, 1), bias)


def fold_before_relu(norm: nn.Module, conv: nn.Conv2d) -> nn.Conv2d | None:
    """A Conv2d equal to conv(relu(norm(x))) without the norm, or None where that is not exact: only a bias-free
    norm with every scale positive commutes with the ReLU (grouped convolutions, whose weights see a group's input
    channels only, are left alone)."""
    found = _norm_scale(norm)
    if found is None or found[1] is not None or conv.groups != 1:
        return None
    scale = found[0].detach()
    if not bool((scale > 0).all()):
        return None
    with torch.no_grad():
        return _copy_conv(conv, conv.weight * scale.view(1, -1, 1, 1), conv.bias)


def fold_norms(net: nn.Module) -> nn.Module:
    """A copy of `net` in eval mode with every batch norm that can be folded into a convolution folded."""
    from bdn.models.dncnn import DnCNN
    from bdn.models.resnet import PlainBlock, ResNetDenoiser, SparseBlock

    folded = copy.deepcopy(net).eval()
    for module in folded.modules():
        if isinstance(module, DnCNN):
            for i, (conv, norm) in enumerate(zip(module.hidden_layer_list, module.bn_layer_list, strict=True)):
                module.hidden_layer_list[i] = fold_after(conv, norm)
                module.bn_layer_list[i] = nn.Identity()
        elif isinstance(module, PlainBlock):  # GatedBlock too: norm1 -> relu -> conv1 -> norm2 -> relu -> conv2
            module.conv1, module.norm2 = fold_after(module.conv1, module.norm2), nn.Identity()
            before = fold_before_relu(module.norm1, module.conv1)
            if before is not None:
                module.conv1, module.norm1 = before, nn.Identity()
        elif isinstance(module, SparseBlock):
            module.conv, module.norm = fold_after(module.conv, module.norm), nn.Identity()
        elif isinstance(module, ResNetDenoiser):
            before = fold_before_relu(module.head_norm, module.head)
            if before is not None:
                module.head, module.head_norm = before, nn.Identity()
    return folded


def _channels_last_helps(net: nn.Module) -> bool:
    """Plain stacks of convolutions gain from channels-last on the CPU (FFDNet's one pixel shuffle around its stack
    too); the encoder-decoders' reshapes (wavelets, attention) are unmeasured there, so they keep the default
    layout."""
    from bdn.models.dncnn import DnCNN
    from bdn.models.ffdnet import FFDNet
    from bdn.models.pyramid import PyramidDenoiser
    from bdn.models.resnet import ResNetDenoiser

    base = net.base if isinstance(net, PyramidDenoiser) else net
    return isinstance(base, DnCNN | ResNetDenoiser | FFDNet)  # FFDNet: 0.13 s against 0.72 per 512x512 in bf16


class ChannelsLast(nn.Module):
    """Runs `net` on a channels-last copy of the input and returns an ordinary contiguous tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last)).contiguous()


def _check_input(channels: int) -> torch.Tensor:
    batch, height, width = _CHECK_SIZE
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(0))


def largest_difference(fast: Callable[[torch.Tensor], torch.Tensor], net: nn.Module, channels: int) -> float:
    """Max abs difference between `fast` and `net` (eval mode) on a fixed random input."""
    x = _check_input(channels)
    with torch.inference_mode():
        return float((fast(x).double() - net.eval()(x).double()).abs().max())


def fast_form(net: nn.Module, channels: int) -> nn.Module:
    """The fastest pure-PyTorch form of `net` for inference (see the module docstring), or `net` in eval mode
    where the folded form does not give the same output."""
    net = net.eval()
    fast = fold_norms(net)
    if _channels_last_helps(net):
        fast = ChannelsLast(fast)
    if not largest_difference(fast, net, channels) <= TOLERANCE:  # also catches NaN
        return net
    return fast


def weights_digest(net: nn.Module) -> str:
    """A short hash of a model's class, parameters and buffers: names the cached ONNX file of those weights."""
    digest = hashlib.sha256(type(net).__qualname__.encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return digest.hexdigest()[:20]


def cache_folder() -> Path:
    """$BDN_CACHE, else ~/.cache/bdn (XDG_CACHE_HOME respected)."""
    if os.environ.get(CACHE_ENV, "").strip():
        return Path(os.environ[CACHE_ENV].strip()).expanduser()
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bdn"


def _onnx_name(net: nn.Module, channels: int) -> str:
    return f"{weights_digest(net)}_{channels}.onnx"


def _onnx_file(net: nn.Module, channels: int, folder: Path) -> Path:
    """The folded model as ONNX in `folder`, recorded once per set of weights (written whole or not at all)."""
    from bdn.export import DEFAULT_OPSET, record_onnx

    path = folder / _onnx_name(net, channels)
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as staging:
            part = Path(staging) / path.name
            record_onnx(fold_norms(net), channels, part, DEFAULT_OPSET)
            os.replace(part, path)
    except OSError as error:
        raise BdnError(
            f"{folder}: cannot keep the ONNX file there ({error.strerror}); set {CACHE_ENV} to a writable folder"
        ) from None
    return path


class OnnxRunner:
    """Calls an onnxruntime session like a module: float [N, C, H, W] tensor in, the same out."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {self.input: x.detach().cpu().float().numpy()})[0])


def onnx_form(net: nn.Module, channels: int, cache: str | Path | None = None) -> OnnxRunner:
    """`net` run by onnxruntime on the CPU (see the module docstring); BdnError when onnxruntime or the exporter
    is missing, the export fails, or the runtime's output differs from the model's by more than 1e-4."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BdnError(
            "engine 'onnxruntime' needs onnxruntime, onnx and onnxscript: pip install 'bdn[export]'"
        ) from None
    net = net.eval()
    folder = Path(cache) if cache else cache_folder()
    cached = (folder / _onnx_name(net, channels)).is_file()
    path = _onnx_file(net, channels, folder)
    runner, trouble = _checked_runner(path, net, channels)
    if trouble is not None and cached:  # a damaged or stale cache entry (cut short, edited): record it again, once
        warnings.warn(f"{path}: cached ONNX file unusable ({trouble}); recorded it again", BdnWarning, stacklevel=2)
        path.unlink(missing_ok=True)
        runner, trouble = _checked_runner(_onnx_file(net, channels, folder), net, channels)
    if runner is None:
        raise BdnError(f"{path}: {trouble}")
    return runner


def _checked_runner(path: Path, net: nn.Module, channels: int) -> tuple[OnnxRunner | None, str | None]:
    """(the runner, None) when onnxruntime loads `path` and agrees with `net` to TOLERANCE, else (None, why not)."""
    runner, trouble = _loaded_runner(path)
    if runner is None:
        return None, trouble
    difference = largest_difference(runner, net, channels)
    if not difference <= TOLERANCE:
        return None, f"onnxruntime differs from PyTorch by {difference:.3g}"
    return runner, None


def _loaded_runner(path: Path) -> tuple[OnnxRunner | None, str | None]:
    """(the runner, None) when onnxruntime loads `path`, else (None, why not)."""
    from bdn.tensorfile import error_cause

    try:
        return OnnxRunner(path, torch.get_num_threads()), None
    except Exception as error:  # onnxruntime's errors (InvalidProtobuf, InvalidArgument, Fail) derive from Exception
        said = error_cause(error)  # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Load model from PATH failed:WHY"
        return None, f"onnxruntime cannot load it: {said.rsplit('failed:', 1)[-1].strip()}"


class Bf16Autocast(nn.Module):
    """Runs `net` channels-last under CPU autocast to bfloat16; float32 [N, C, H, W] in, contiguous float32 out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = self.net(x.contiguous(memory_format=torch.channels_last))
        return out.float().contiguous()


def bf16_form(net: nn.Module, channels: int) -> nn.Module:
    """`net` with its norms folded, computing in bfloat16 (see the module docstring); BdnError where its output
    on the check input differs from float32 by more than BF16_TOLERANCE (or is not finite)."""
    net = net.eval()
    with torch.inference_mode():
        if not torch.isfinite(net(_check_input(channels))).all():
            return net  # broken weights: float32 shows it, and the caller's NaN check names the file
    fast = Bf16Autocast(fold_norms(net))
    difference = largest_difference(fast, net, channels)
    if not difference <= BF16_TOLERANCE:
        raise BdnError(f"{type(net).__name__} in bf16 differs from float32 by {difference:.3g}: use precision=fp32")
    return fast


def resolve_precision(precision: str, model: str | None = None) -> str:
    """'fp32' or 'bf16' for a model method's `precision` ('auto', 'fp32' or 'bf16') on this CPU.

    'auto' is bf16 where the CPU computes it natively (bdn.dip.precision.bf16_supported: AMX or AVX512-BF16) and
    the model is not in FP32_ONLY (bf16 costs it more than 0.02 dB on Set12, or does not make it faster)."""
    from bdn.dip.precision import resolve_precision as resolve_for_device

    if precision not in PRECISIONS:  # the same message as DIP's precision
        raise BdnError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto" and model in FP32_ONLY:
        return "fp32"
    return resolve_for_device(precision, torch.device("cpu"))


# Models whose 'auto' precision is fp32 although the CPU has bf16: see benchmarks/records/models_bf16_cpu.md.
FP32_ONLY: frozenset[str] = frozenset()


def inference_form(
    net: nn.Module, channels: int, engine: str = "torch", precision: str = "fp32"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`net` for inference with the named engine: 'torch' (fast_form) or 'onnxruntime' (onnx_form) in float32;
    precision 'bf16' (already resolved: see `resolve_precision`) is the torch engine's `bf16_form`."""
    if engine not in ENGINES:
        raise BdnError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if precision == "bf16":
        if engine != "torch":
            raise BdnError(f"precision bf16 runs on the torch engine, not {engine}: use precision=fp32 with it")
        return bf16_form(net, channels)
    if precision != "fp32":
        raise BdnError(f"precision must be fp32 or bf16 here, got {precision!r}")
    if engine == "torch":
        return fast_form(net, channels)
    return onnx_form(net, channels)
