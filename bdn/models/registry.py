"""The model registry, in the style of timm's: each model file registers its entries where the model is defined.

An entry (`ModelSpec`) holds what callers need to know about a model without building or probing it: whether it
is bias-free, how much context a tile needs and on which grid (`reach`, `multiple`), whether tiles then give the
whole image's result, and which trained weights ship in checkpoints/. A new denoiser is one file whose builder is
decorated with `register_model`, plus its import in bdn/models/__init__.py (which imports every model file, so
the registry is complete whenever `bdn.models` is imported).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from bdn.errors import BdnError

COLOURS = {1: "grey", 3: "colour"}  # channels -> the word in weights files' names and messages


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[int], nn.Module]  # channels (1 or 3) -> a fresh, randomly initialised module
    bias_free: bool  # f(a y) = a f(y) in eval mode (the tests check it)
    reach: int  # tile overlap in pixels: at least how far one input pixel can change the output, when exact_tiles
    multiple: int  # the model pads its input to a multiple of this inside; tile origins keep to this grid
    exact_tiles: bool  # tiles with `reach` of context give the whole image's result (else close, not equal)
    shipped: tuple[str, ...]  # colours whose trained weights ship: checkpoints/model_<name>_<colour>.safetensors
    min_side: int  # smallest image side an exported (recorded) graph handles: below it the model pads otherwise
    summary: str


MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    bias_free: bool,
    reach: int,
    summary: str,
    multiple: int = 1,
    exact_tiles: bool = True,
    shipped: tuple[str, ...] = (),
    min_side: int | None = None,
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    """Decorator: record the builder it wraps as model `name` and return the builder unchanged.

    `min_side` defaults to what reflect padding to `multiple` needs, more than half of it a side: below that the
    model pads by replication, a branch a recorded graph (bdn/export.py) does not keep."""
    unknown = set(shipped) - set(COLOURS.values())
    if unknown:
        raise ValueError(f"{name}: shipped colours must be among {', '.join(COLOURS.values())}, got {unknown}")

    def register(build: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        side = multiple // 2 + 1 if min_side is None else min_side
        MODELS[name] = ModelSpec(name, build, bias_free, reach, multiple, exact_tiles, tuple(shipped), side, summary)
        return build

    return register


def list_models(*, shipped: bool = False) -> list[str]:
    """Registered model names, sorted; `shipped=True`: only those whose trained weights ship."""
    return sorted(name for name, spec in MODELS.items() if spec.shipped or not shipped)


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise BdnError(f"unknown model {name!r}; choose from {', '.join(list_models())}") from None


def build_model(name: str, channels: int = 1) -> nn.Module:
    """A fresh (untrained) model of a registered architecture for grey (1) or colour (3) images."""
    if channels not in COLOURS:
        raise BdnError(f"channels must be 1 (grey) or 3 (colour), got {channels!r}")
    return get_model_spec(name).build(channels)
