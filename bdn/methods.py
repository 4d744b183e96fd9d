"""The registry of denoisers and the one `denoise()` call that every front end uses.

A method is named by a registry line pointing at a function `fn(image, sigma=None, **params) -> image`, imported on
first use so that asking for a median filter never loads a neural network. Adding a denoiser is one file plus one
line in `METHODS`.
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bdn.errors import BdnError


@dataclass(frozen=True)
class Method:
    name: str
    target: str  # "module:function"
    min_size: int  # smallest image side the method can process
    family: str  # classical | model | dip
    summary: str
    params: tuple[tuple[str, object], ...] = ()  # fixed keyword arguments (a model method names its model)
    # "module:function" checking parameter values without an image, called as fn(method name, params + fixed ones)
    check: str = ""


def _shipped_models() -> tuple[Method, ...]:
    """One method per shipped feed-forward model (grey and colour weights share a name): found, not listed, so
    shipping a trained model is dropping its file into checkpoints/. Listing the files loads no torch."""
    from bdn.tensorfile import shipped_files

    kinds: dict[str, list[str]] = {}
    for key in sorted(shipped_files("model_")):
        name, kind = key.rsplit("_", 1)
        kinds.setdefault(name, []).append(kind)
    return tuple(
        Method(
            name,
            "bdn.models.run:denoise_with_model",
            8,
            "model",
            f"trained model ({' and '.join(kinds[name])} weights)",
            (("model", name),),
            "bdn.models.run:check_model_params",
        )
        for name in sorted(kinds)
    )


CLASSICAL_CHECK = "bdn.classical:check_params"

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        # A blind look at the image picks one of the methods below (bdn/auto.py says which rule comes from where).
        # Family "classical": its look is classical and runs on the CPU (app/logic.py orders by the three families).
        Method(
            "auto",
            "bdn.auto:auto",
            16,
            "classical",
            "picks a method for the image and says which",
            check=CLASSICAL_CHECK,
        ),
        Method("nlm", "bdn.classical:nlm", 16, "classical", "non-local means", check=CLASSICAL_CHECK),
        Method("median", "bdn.classical:median", 5, "classical", "median filter", check=CLASSICAL_CHECK),
        Method(
            "adaptive_median",
            "bdn.classical:adaptive_median",
            7,
            "classical",
            "adaptive median (impulse noise)",
            check=CLASSICAL_CHECK,
        ),
        Method(
            "adaptive_wiener",
            "bdn.classical:adaptive_wiener",
            5,
            "classical",
            "locally adaptive Wiener filter",
            check=CLASSICAL_CHECK,
        ),
        Method(
            "bm3d", "bdn.classical:bm3d", 16, "classical", "block-matching and 3-D filtering", check=CLASSICAL_CHECK
        ),
        # Padded inside to the generator's sizes, so any image of a few pixels a side works.
        Method(
            "dip",
            "bdn.dip.denoise:dip",
            4,
            "dip",
            "Deep Image Prior, stopped by a judge (minutes on a CPU)",
            check="bdn.methods:check_dip_params",
        ),
        *_shipped_models(),
    )
}


def unshipped_models() -> list[str]:
    """Registered models that ship no weights: not in `METHODS` (nor `bdn methods`, nor the default lists of
    bench and demo), yet usable by name with ``weights=`` a file `bdn train` wrote. Imports torch."""
    from bdn.models import list_models

    return [name for name in list_models() if name not in METHODS]


def _unshipped_method(name: str) -> Method:
    return Method(
        name,
        "bdn.models.run:denoise_with_model",
        8,
        "model",
        "trained model (no shipped weights: give weights=)",
        (("model", name),),
        "bdn.methods:check_unshipped_model_params",
    )


def check_unshipped_model_params(method: str, params: dict) -> None:
    """A model that ships no weights needs a weights file: one line saying how to get and give one."""
    if params.get("weights") is None:
        raise BdnError(
            f"{method} ships no trained weights: train them with `bdn train` (model name {method!r} in the "
            f"pipeline config), then give the file: bdn denoise -m {method} --weights FILE "
            f"(bdn.denoise(..., weights=FILE))"
        )
    from bdn.models.run import check_model_params

    check_model_params(method, params)


def get_method(name: str) -> Method:
    """The method `name`: one of `METHODS`, or a registered model that ships no weights (usable with weights=)."""
    if name in METHODS:
        return METHODS[name]
    if isinstance(name, str) and name.isidentifier() and name in unshipped_models():
        return _unshipped_method(name)
    raise BdnError(
        f"unknown method {name!r}; choose from {', '.join(METHODS)} (or, with a weights file, a registered model: "
        "bdn methods --all)"
    )


# Methods whose package is an optional extra, not installed by `pip install bdn` (its licence is not MIT's):
# name -> (the module it imports, the one line that says how to get it).
EXTRAS: dict[str, tuple[str, str]] = {
    "bm3d": ("bm3d", "bm3d needs the bm3d package (non-commercial licence): pip install 'bdn[bm3d]'"),
}


def missing_extra(name: str) -> str | None:
    """The one line saying how to install what method `name` needs, or None when nothing is missing."""
    module, line = EXTRAS.get(name, ("", ""))
    return line if module and importlib.util.find_spec(module) is None else None


def method_function(name: str) -> Callable[..., np.ndarray]:
    module_name, function_name = get_method(name).target.split(":")
    missing = missing_extra(name)
    if missing:
        raise BdnError(missing)
    return getattr(importlib.import_module(module_name), function_name)


def check_params(method: str, params: dict) -> None:
    """Refuse, before any image is read, a parameter the method does not take (the message lists those it does)
    and a value it cannot use (the method's own checks, where it has them): one line naming the parameter."""
    spec = get_method(method)
    function = method_function(method)
    fixed = dict(spec.params)
    accepted = [p for p in inspect.signature(function).parameters if p not in fixed]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        choices = ", ".join(p for p in accepted if p != "image")
        raise BdnError(f"{method} has no parameter {', '.join(unknown)}; it takes {choices}")
    if spec.check:
        module_name, function_name = spec.check.split(":")
        getattr(importlib.import_module(module_name), function_name)(method, {**params, **fixed})


def check_dip_params(method: str, params: dict) -> None:
    """What `dip()` checks of its numbers and its judge before it looks at an image (net, init, device and
    precision are checked by dip itself, as they need the image or the machine)."""
    from bdn.dip.denoise import STOPS

    stop = params.get("stop", "auto")
    if stop not in STOPS:
        raise BdnError(f"{method}: stop must be one of {', '.join(STOPS)}, got {stop!r}")
    # Worded as dip() words them.
    wholes = (("iterations", 1, "a whole number >= 1"), ("threads", 1, "a whole number > 0"))
    for name, smallest, wanted in (*wholes, ("tile", 64, "a whole number of pixels >= 64")):
        value = params.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | np.integer) or value < smallest
        ):
            raise BdnError(f"{method}: {name} must be {wanted}, got {value!r}")
    for name in ("sigma", "minutes", "lr", "noise_factor", "memory_gb"):
        value = params.get(name)
        number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if value is not None and not (number and 0 <= value < np.inf and (value > 0 or name == "sigma")):
            least = ">= 0" if name == "sigma" else "> 0"
            raise BdnError(f"{method}: {name} must be a number {least}, got {value!r}")


def check_image(image: np.ndarray, method: Method) -> None:
    """Refuse what no method can take, with one line a user understands."""
    if not isinstance(image, np.ndarray) or image.dtype.kind != "f":
        raise BdnError("denoise() takes a float image in [0,1] (use bdn.read_image to load a file)")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise BdnError(f"denoise() takes a grey (H, W) or RGB (H, W, 3) image, got shape {image.shape}")
    height, width = image.shape[:2]
    if min(height, width) < method.min_size:
        raise BdnError(
            f"image is {width}x{height}, too small for {method.name} (needs at least {method.min_size} pixels a side)"
        )
    if not np.isfinite(image).all():
        raise BdnError("image holds NaN or infinite values")


def denoise(image: np.ndarray, method: str = "nlm", **params) -> np.ndarray:
    """Denoise a float image in [0, 1] (grey or RGB) with a registered method.

    The method is looked up in `METHODS` and its module imported on first use, so a median filter never loads a
    neural network. `bdn methods` (or ``list(bdn.METHODS)``) lists the names.

    Parameters
    ----------
    image : numpy.ndarray
        The noisy image: float, grey (H, W) or RGB (H, W, 3), values in [0, 1], finite, at least the method's
        ``METHODS[method].min_size`` pixels a side. `bdn.read_image` gives this.
    method : str, default 'nlm'
        A key of `METHODS`: 'auto' (a blind look at the image picks the method, see `bdn.auto`), 'nlm',
        'median', 'adaptive_median', 'adaptive_wiener', 'bm3d', 'dip' (see `bdn.dip.denoise.dip`) or the name of a
        shipped trained model (see `bdn.load_model`); any registered model (`bdn.models.list_models()`) with
        ``weights=`` a file `bdn train` wrote for it.
    **params
        Keyword arguments of the method's function. ``sigma`` (0-255 units) is the noise level where a method
        takes one; left out, the method estimates it (trained models are blind and do not use it). A model
        method takes ``weights`` (a .safetensors file for that model) in place of its shipped weights.

    Returns
    -------
    numpy.ndarray
        The denoised image, float32, the shape of `image`.

    Raises
    ------
    BdnError
        For an unknown method; an image that is not a float array, not (H, W) or (H, W, 3), smaller than the
        method needs or holding NaN or infinite values; a parameter the method does not take (the message lists
        those it does); and for invalid values of its parameters, as the method checks them.

    Examples
    --------
    >>> import bdn
    >>> from skimage import data
    >>> clean = data.camera()[::8, ::8] / 255.0  # 64x64 grey, float in [0, 1]
    >>> noisy = bdn.add_noise(clean, "gaussian", 25, seed=0)
    >>> out = bdn.denoise(noisy, method="nlm")  # sigma estimated
    >>> out.shape, out.dtype
    ((64, 64), dtype('float32'))
    >>> bdn.psnr(clean, out) > bdn.psnr(clean, noisy)
    True
    >>> out = bdn.denoise(noisy, method="median", sigma=25, size=3)
    """
    spec = get_method(method)
    check_image(image, spec)
    check_params(method, params)
    result = np.asarray(method_function(method)(image, **params, **dict(spec.params)), dtype=np.float32)
    if not np.isfinite(result).all():  # a damaged model gives NaN; nothing such may be written as a result
        raise BdnError(f"{method} gave NaN or infinite values (damaged weights?); nothing written")
    return result
