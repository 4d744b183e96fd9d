"""DIP generators: the "skip" hourglass of Ulyanov et al. (Deep Image Prior), configurable, with named settings.

The skip network is an encoder-decoder over `scales` levels. At each level the input feeds two branches:
- a skip branch (a `filter_skip_size` convolution to `channels_skip[i]` channels, BN, activation), present only
  when that level has skip channels;
- a deeper branch: a stride-2 `filter_size_down` convolution (the downsampling), BN, activation, a second
  convolution, BN, activation, then the next level (if any), then x2 upsampling (`upsample_mode`).
The two are concatenated (skip first), then BN, a `filter_size_up` convolution to `channels_up[i]`, BN,
activation and (need1x1_up) a 1x1 convolution, BN, activation. A final 1x1 convolution maps `channels_up[0]` to
the output channels, followed by a sigmoid. Every convolution carries a bias; BN is PyTorch's BatchNorm2d, used
in training mode throughout a DIP fit (as DIP does).

Each level halves the image, so the sides must be multiples of 2**scales (`min_size`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bdn.errors import BdnError

__all__ = [
    "NET_TYPES",
    "NetSpec",
    "SkipNet",
    "build_net",
    "check_size",
    "count_parameters",
    "min_size",
    "net_spec",
    "smallest_side",
]

UPSAMPLE_MODES = ("bilinear", "nearest")
ACTIVATIONS = ("LeakyReLU", "ReLU", "ELU")
PADDINGS = ("reflection", "zero")


@dataclass(frozen=True)
class NetSpec:
    """The shape of a skip network; one entry per scale in each channel list (scale 0 = full resolution)."""

    channels_down: tuple[int, ...]
    channels_up: tuple[int, ...]
    channels_skip: tuple[int, ...]
    filter_size_down: int = 3
    filter_size_up: int = 3
    filter_skip_size: int = 1
    upsample_mode: str = "bilinear"
    activation: str = "LeakyReLU"  # LeakyReLU uses slope 0.2, as DIP does
    padding: str = "reflection"
    need_sigmoid: bool = True
    need_bias: bool = True
    need1x1_up: bool = True

    @property
    def scales(self) -> int:
        return len(self.channels_down)

    def check(self) -> None:
        """Raise BdnError naming the first field that cannot make a network."""
        lists = {"channels_down": self.channels_down, "channels_up": self.channels_up}
        lists["channels_skip"] = self.channels_skip
        if not self.channels_down:
            raise BdnError("net spec: channels_down must name at least one scale")
        for name, values in lists.items():
            if len(values) != self.scales:
                raise BdnError(
                    f"net spec: {name} has {len(values)} entries but channels_down has {self.scales}; "
                    "give one per scale"
                )
            least = 0 if name == "channels_skip" else 1
            if any(int(v) != v or v < least for v in values):
                raise BdnError(f"net spec: {name} must hold integers >= {least}, got {list(values)}")
        for name in ("filter_size_down", "filter_size_up", "filter_skip_size"):
            size = getattr(self, name)
            if int(size) != size or size < 1 or size % 2 == 0:
                # Odd sizes keep the "same" padding symmetric, so the sizes of both branches agree.
                raise BdnError(f"net spec: {name} must be an odd positive integer, got {size}")
        for name, value, allowed in (
            ("upsample_mode", self.upsample_mode, UPSAMPLE_MODES),
            ("activation", self.activation, ACTIVATIONS),
            ("padding", self.padding, PADDINGS),
        ):
            if value not in allowed:
                raise BdnError(f"net spec: {name} must be one of {', '.join(allowed)}, got {value!r}")


NET_TYPES: dict[str, NetSpec] = {
    # The seed's run_BDN default: DIP's get_net('skip') with 128 channels down and up, 4 skip channels, 5 scales.
    "skip": NetSpec(channels_down=(128,) * 5, channels_up=(128,) * 5, channels_skip=(4,) * 5),
    # bdn's default (bdn.dip.denoise.DEFAULT_NET_TYPE): the seed's net at half its width, padding with zeros inside
    # the convolutions. On PolyU-train crops it peaks as high as 'skip', as soon, at a fraction of the cost
    # (benchmarks/records/dip_lean_polyu_train_cpu.md).
    "skip64": NetSpec(channels_down=(64,) * 5, channels_up=(64,) * 5, channels_skip=(4,) * 5, padding="zero"),
    # The seed's other setting: narrow near full resolution, skips only at the two coarsest scales.
    "skip_light": NetSpec(
        channels_down=(8, 16, 32, 64, 128), channels_up=(8, 16, 32, 64, 128), channels_skip=(0, 0, 0, 4, 4)
    ),
}


def net_spec(net_type: str | NetSpec) -> NetSpec:
    """The NetSpec named `net_type` (or `net_type` itself when it is one), checked."""
    if isinstance(net_type, NetSpec):
        spec = net_type
    elif net_type in NET_TYPES:
        spec = NET_TYPES[net_type]
    else:
        raise BdnError(f"unknown DIP net type {net_type!r}: choose one of {', '.join(NET_TYPES)}")
    spec.check()
    return spec


def min_size(net_type: str | NetSpec) -> int:
    """The factor both image sides must be multiples of: each scale halves the image once."""
    return 2 ** net_spec(net_type).scales


def smallest_side(net_type: str | NetSpec) -> int:
    """The smallest image side the net accepts (a multiple of `min_size`).

    The coarsest level must keep at least 2x2 pixels: batch norm in training mode needs more than one value per
    channel, and reflection padding needs more pixels than it pads. So 'skip' (5 scales) needs 64, not 32.
    """
    spec = net_spec(net_type)
    pad = max(spec.filter_size_down, spec.filter_size_up, spec.filter_skip_size) // 2
    bottom = max(2, pad + 1) if spec.padding == "reflection" else 2
    return bottom * 2**spec.scales


def check_size(net_type: str | NetSpec, height: int, width: int, what: str = "image") -> None:
    """Raise BdnError unless an image of height x width fits the net (multiples of min_size, not too small)."""
    multiple, least = min_size(net_type), smallest_side(net_type)
    name = net_type if isinstance(net_type, str) else "custom"
    if height % multiple or width % multiple or min(height, width) < least:
        raise BdnError(
            f"{what} of {width}x{height} pixels does not fit DIP net {name!r}: both sides must be multiples of "
            f"{multiple} and at least {least} (crop with bdn.data.crop_to_multiple({multiple}))"
        )


def _activation(name: str) -> nn.Module:
    if name == "LeakyReLU":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "ReLU":
        return nn.ReLU(inplace=True)
    return nn.ELU(inplace=True)


def _conv(spec: NetSpec, c_in: int, c_out: int, size: int, stride: int = 1) -> nn.Conv2d:
    # "same" padding for odd sizes; reflection padding avoids the dark borders zero padding teaches the net.
    mode = "reflect" if spec.padding == "reflection" else "zeros"
    return nn.Conv2d(c_in, c_out, size, stride=stride, padding=size // 2, padding_mode=mode, bias=spec.need_bias)


def _conv_bn_act(spec: NetSpec, c_in: int, c_out: int, size: int, stride: int = 1) -> list[nn.Module]:
    return [_conv(spec, c_in, c_out, size, stride), nn.BatchNorm2d(c_out), _activation(spec.activation)]


class _Scale(nn.Module):
    """One level of the hourglass: its skip branch, its downsampling pair and its merge after upsampling."""

    def __init__(self, spec: NetSpec, index: int, c_in: int) -> None:
        super().__init__()
        down, up, skip = spec.channels_down[index], spec.channels_up[index], spec.channels_skip[index]
        # What comes back up from below: the next level's output, or this level's own at the bottom.
        c_deep = spec.channels_up[index + 1] if index + 1 < spec.scales else down
        self.skip = nn.Sequential(*_conv_bn_act(spec, c_in, skip, spec.filter_skip_size)) if skip else None
        self.down = nn.Sequential(
            *_conv_bn_act(spec, c_in, down, spec.filter_size_down, stride=2),
            *_conv_bn_act(spec, down, down, spec.filter_size_down),
        )
        merge: list[nn.Module] = [
            nn.BatchNorm2d(skip + c_deep),
            *_conv_bn_act(spec, skip + c_deep, up, spec.filter_size_up),
        ]
        if spec.need1x1_up:
            merge += _conv_bn_act(spec, up, up, 1)
        self.merge = nn.Sequential(*merge)


def _head(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The 1x1 output convolution, computed in float32 whatever the body's dtype (a bf16 net's output would be
    rounded to 8 bits of mantissa, coarser than an 8-bit pixel near white: on three PolyU-train crops that cost
    the seed's net 0.03-0.15 dB at its peak).

    On a channels-last CPU tensor it is one matrix product over the pixels: PyTorch's CPU convolution with 3
    output channels falls back to a slow reference kernel (about twice the time, its backward more).
    """
    weight = conv.weight.float()
    bias = None if conv.bias is None else conv.bias.float()
    if x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
        return nn.functional.conv2d(x.float(), weight, bias)
    batch, channels, height, width = x.shape
    pixels = x.permute(0, 2, 3, 1).reshape(-1, channels).float()  # a view of the channels-last memory
    weight = weight.reshape(conv.out_channels, channels)
    out = pixels @ weight.t() if bias is None else torch.addmm(bias, pixels, weight.t())
    return out.reshape(batch, height, width, conv.out_channels).permute(0, 3, 1, 2)  # channels-last again


class _BilinearUp2x(torch.autograd.Function):
    """x2 bilinear upsampling (align_corners=False) with a fast backward on the CPU.

    The adjoint of this upsampling is a stride-2 depthwise convolution with the separable kernel
    [1, 3, 3, 1] / 4 over the gradient padded by replication (the clamped border samples), exactly. PyTorch's own
    backward on the CPU zero-fills and scatters; for 64 channels at 256x256 in bf16 channels-last it took 4.5 ms
    alone and 18 ms inside a DIP step, this 0.7 ms.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.channels = x.shape[1]
        return nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        taps = torch.tensor([0.25, 0.75, 0.75, 0.25], dtype=grad.dtype, device=grad.device)
        kernel = (taps[:, None] * taps[None, :]).expand(ctx.channels, 1, 4, 4)
        padded = nn.functional.pad(grad, (1, 1, 1, 1), mode="replicate")
        return nn.functional.conv2d(padded, kernel, stride=2, groups=ctx.channels)


class Upsample2x(nn.Module):
    """x2 upsampling, 'bilinear' (align_corners=False, as DIP) or 'nearest'; the same numbers as nn.Upsample."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "bilinear" and x.device.type == "cpu" and torch.is_grad_enabled() and x.requires_grad:
            return _BilinearUp2x.apply(x)
        align = False if self.mode == "bilinear" else None
        return nn.functional.interpolate(x, scale_factor=2, mode=self.mode, align_corners=align)


class SkipNet(nn.Module):
    """The skip hourglass generator; `forward` maps (N, input_depth, H, W) to (N, out_channels, H, W)."""

    def __init__(self, spec: NetSpec, input_depth: int, out_channels: int) -> None:
        super().__init__()
        spec.check()
        self.spec = spec
        ins = (input_depth, *spec.channels_down[:-1])
        self.scales = nn.ModuleList(_Scale(spec, i, c_in) for i, c_in in enumerate(ins))
        self.head = nn.Conv2d(spec.channels_up[0], out_channels, 1, bias=spec.need_bias)
        self.upsample = Upsample2x(spec.upsample_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips: list[torch.Tensor | None] = []
        for scale in self.scales:  # encoder: remember each level's skip features, go down
            skips.append(scale.skip(x) if scale.skip is not None else None)
            x = scale.down(x)
        for scale, skip in zip(reversed(self.scales), reversed(skips), strict=True):  # decoder: up, join, merge
            x = self.upsample(x)
            if skip is not None:
                x = torch.cat((skip, x), dim=1)
            x = scale.merge(x)
        x = _head(self.head, x)
        return torch.sigmoid(x) if self.spec.need_sigmoid else x


def build_net(net_type: str | NetSpec, input_depth: int, out_channels: int) -> SkipNet:
    """A freshly initialised generator of the named type (PyTorch's default initialisation, as DIP uses)."""
    for name, value in (("input_depth", input_depth), ("out_channels", out_channels)):
        if int(value) != value or value < 1:
            raise BdnError(f"DIP net: {name} must be a positive integer, got {value}")
    return SkipNet(net_spec(net_type), int(input_depth), int(out_channels))


def count_parameters(net: nn.Module) -> int:
    """Number of learnable values (BN running statistics are buffers, not counted)."""
    return sum(p.numel() for p in net.parameters())
