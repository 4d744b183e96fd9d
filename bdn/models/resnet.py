"""Bias-free residual denoisers (the seed's resnet family): plain, sparse, and gated per block.

Naming as the seed's pretrained models: `<kind>_<B>x<K>_bn_3x3` is a K x K stem convolution, B residual blocks of
bias-free batch norm + 3 x 3 convolutions, and a 3 x 3 head that predicts the noise (out = y - head): so
`resnet_5x5_bn_3x3` has a 5 x 5 stem and 5 blocks, `sparse_resnet_4x5_bn_3x3` a 5 x 5 stem and 4 sparse blocks.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bdn.models.layers import BlockGate, DiffReLU, ScaleNorm, conv, norm_layer
from bdn.models.pyramid import PyramidDenoiser, pyramid_reach
from bdn.models.registry import register_model

KINDS = ("plain", "sparse", "gated")


class PlainBlock(nn.Module):
    """Pre-activation residual block: (norm, ReLU, conv 3x3) twice, added to its input."""

    def __init__(self, features: int, bias_free: bool) -> None:
        super().__init__()
        bias = not bias_free
        self.norm1, self.conv1 = norm_layer(features, bias_free), conv(features, features, 3, bias)
        self.norm2, self.conv2 = norm_layer(features, bias_free), conv(features, features, 3, bias)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.residual(x)


class SparseBlock(nn.Module):
    """Conv 3x3, norm, ReLU, then a depthwise 3x3 whose output is normalised (ScaleNorm) and cut by a smooth
    ReLU with a threshold, so most responses are near zero, then a 1x1 mix; added to the input.

    In training it keeps `activity`, the mean magnitude of the thresholded responses relative to the input's
    scale: the trainer adds it to the loss (the sparsity constraint, weight `sparsity` in the config).
    """

    def __init__(self, features: int, bias_free: bool) -> None:
        super().__init__()
        bias = not bias_free
        self.conv = conv(features, features, 3, bias)
        self.norm = norm_layer(features, bias_free)
        self.depthwise = conv(features, features, 3, bias, groups=features)
        self.scale = ScaleNorm()
        self.cut = DiffReLU(sharpness=4.0, threshold=1.0)
        self.mix = conv(features, features, 1, bias)
        self.activity: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(self.conv(x)))
        h = self.cut(self.scale(self.depthwise(h), x))
        if self.training:
            self.activity = h.abs().mean() / (x.pow(2).mean().sqrt() + 1e-12)
        return x + self.mix(h)


_is_compiling = getattr(torch.compiler, "is_compiling", None) or (lambda: False)  # torch < 2.3 lacks it


def _recording() -> bool:
    """True while a graph is being recorded (torch.jit.trace, torch.export, torch.compile, ONNX export): the skip
    in GatedBlock branches on a tensor's value, which a recorded graph cannot, so there the gate multiplies."""
    return torch.jit.is_tracing() or _is_compiling() or torch.onnx.is_in_onnx_export()


class GatedBlock(PlainBlock):
    """A plain block whose residual is switched on or off per image by a BlockGate (soft while training)."""

    def __init__(self, features: int, bias_free: bool) -> None:
        super().__init__(features, bias_free)
        self.gate = BlockGate(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.gate(x)
        # Checked first so a recorded graph never reads the batch size or the gate's value (it would bake them in)
        if not self.training and not _recording() and x.shape[0] == 1 and float(gate) == 0.0:
            return x  # an 'off' block is skipped, not computed and multiplied by zero
        return x + gate * self.residual(x)


_BLOCKS = {"plain": PlainBlock, "sparse": SparseBlock, "gated": GatedBlock}


class ResNetDenoiser(nn.Module):
    def __init__(
        self,
        channels: int = 1,
        blocks: int = 5,
        features: int = 32,
        stem_kernel: int = 5,
        kind: str = "plain",
        bias_free: bool = True,
    ) -> None:
        super().__init__()
        if kind not in _BLOCKS:
            raise ValueError(f"unknown resnet kind {kind!r}; choose from {', '.join(KINDS)}")
        self.channels, self.bias_free, self.kind = channels, bias_free, kind
        bias = not bias_free
        self.stem = conv(channels, features, stem_kernel, bias)
        self.blocks = nn.ModuleList(_BLOCKS[kind](features, bias_free) for _ in range(blocks))
        self.head_norm = norm_layer(features, bias_free)
        self.head = conv(features, channels, 3, bias)
        # A fresh model starts as the identity (no noise predicted): training then begins near the noisy input's
        # PSNR instead of far below it, and the blocks learn corrections.
        nn.init.zeros_(self.head.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return x - self.head(F.relu(self.head_norm(h)))

    def sparsity(self) -> torch.Tensor | None:
        """The sparse blocks' mean activity from the last training forward pass (None for other kinds)."""
        found = [b.activity for b in self.blocks if isinstance(b, SparseBlock) and b.activity is not None]
        return torch.stack(found).mean() if found else None


# --- registry entries ------------------------------------------------------------------------------------------

REACH = 16  # the stem, two 3x3 a block and the head reach 13 pixels (5 plain blocks); the tile overlap keeps 3 more
FAMILIES = {  # name: (blocks, stem kernel, kind)
    "resnet_5x5_bn_3x3": (5, 5, "plain"),
    "sparse_resnet_5x5_bn_3x3": (5, 5, "sparse"),
    "sparse_resnet_4x5_bn_3x3": (4, 5, "sparse"),
    "gated_resnet_5x5_bn_3x3": (5, 5, "gated"),
}
PYRAMIDS = {"lp": "laplacian", "gp": "gaussian"}  # name prefix: kind
SHIPPED = {  # the trained weights in checkpoints/ (benchmarks/ship_models.py puts them there)
    "resnet_5x5_bn_3x3": ("grey", "colour"),
    "sparse_resnet_5x5_bn_3x3": ("grey", "colour"),
    "sparse_resnet_4x5_bn_3x3": ("grey", "colour"),
}  # not shipped, with the evidence in benchmarks/records/bf_models_cpu.md: gp3_resnet_5x5_bn_3x3 (grey), under the
# plain resnet it wraps at every level (Set12 sigma 25: 28.20 against 29.09 dB) and 3-4 times slower


def _builder(blocks: int, stem: int, kind: str, bias_free: bool, pyramid: str | None = None, levels: int = 1):
    """channels -> the resnet, or the resnet shared over a pyramid of `levels` of kind `pyramid`."""

    def build(channels: int) -> nn.Module:
        base = ResNetDenoiser(channels, blocks=blocks, stem_kernel=stem, kind=kind, bias_free=bias_free)
        return base if pyramid is None else PyramidDenoiser(base, levels=levels, kind=pyramid)

    return build


def _register_resnets() -> None:
    """Each family, its biased twin and its two 3-level pyramids."""
    levels = 3
    for name, (blocks, stem, kind) in FAMILIES.items():
        exact = kind != "gated"  # a gated block switches on or off per tile, as it does per image
        register_model(
            name,
            bias_free=True,
            reach=REACH,
            exact_tiles=exact,
            shipped=SHIPPED.get(name, ()),
            summary=f"{kind} resnet, {stem}x{stem} stem, {blocks} blocks of bias-free batch norm + 3x3",
        )(_builder(blocks, stem, kind, bias_free=True))
        register_model(
            f"{name}_biased",
            bias_free=False,
            reach=REACH,
            exact_tiles=exact,
            shipped=SHIPPED.get(f"{name}_biased", ()),
            summary=f"{name} with biases (its twin)",
        )(_builder(blocks, stem, kind, bias_free=False))
        for prefix, pyramid in PYRAMIDS.items():
            register_model(
                f"{prefix}{levels}_{name}",
                bias_free=True,
                reach=pyramid_reach(REACH, levels),
                multiple=2 ** (levels - 1),  # the pyramid's padding and sampling grid
                exact_tiles=exact,
                shipped=SHIPPED.get(f"{prefix}{levels}_{name}", ()),
                min_side=2 ** (levels - 1) + 1,  # below it the pyramid pads otherwise (see bdn/export.py)
                summary=f"{name} shared over a {levels}-level {pyramid} pyramid",
            )(_builder(blocks, stem, kind, bias_free=True, pyramid=pyramid, levels=levels))


_register_resnets()
