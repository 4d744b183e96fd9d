"""A shipped feed-forward model as a bdn method: `bdn.denoise(image, "<model name>")`, `bdn denoise --method NAME`.

Grey images use the model's grey weights and colour images its colour weights; when only the other kind is
shipped, a grey model runs on each colour channel alone (as the official BF-DnCNN is used on colour images) and
a colour model sees a grey image as three equal channels. Images larger than a tile go through overlapping tiles.
"""

from __future__ import annotations

import numpy as np

from bdn.errors import BdnError

TILE = 512


def _net_for(model: str, channels: int, weights: str | None):
    """(net, the channels it takes): the shipped weights for `channels`, else the other kind."""
    from bdn.models.registry import COLOURS, get_model_spec
    from bdn.models.weights import load_weights, shipped_weights

    if weights is not None:
        net, metadata = load_weights(str(weights), expect_name=model)
        return net, int(metadata["channels"])
    shipped = get_model_spec(model).shipped
    for wanted in (channels, 4 - channels):
        if COLOURS[wanted] in shipped:
            return load_weights(shipped_weights(model, wanted))[0], wanted
    raise BdnError(f"no shipped weights for model {model!r}; train them with bdn train or pass weights=")


def smallest_tile(model: str) -> int:
    """The smallest `tile` that leaves a core once the model's context (its reach, on its grid) is cut off."""
    from bdn.models.registry import get_model_spec

    spec = get_model_spec(model)
    overlap = -(-spec.reach // spec.multiple) * spec.multiple  # as bdn.models.tiles.tiled rounds it
    return 2 * overlap + spec.multiple


def model_precision(model: str, engine: str = "torch", precision: str = "auto") -> str:
    """'fp32' or 'bf16': what `precision` means for `model` on this CPU with `engine`. 'auto' is bf16 where the CPU
    has it (bdn.models.fast.resolve_precision) on the torch engine, fp32 with onnxruntime; an explicit bf16 with
    onnxruntime is refused (BdnError), as is any other value."""
    from bdn.models.fast import resolve_precision

    resolved = resolve_precision(precision, model)
    if engine != "torch" and resolved == "bf16":
        if precision == "bf16":
            raise BdnError(f"precision bf16 runs on the torch engine, not {engine}: use precision=fp32 or auto")
        return "fp32"
    return resolved


def check_model_params(method: str, params: dict) -> None:
    """The checks `denoise_with_model` needs of its parameters, made once before any image is read (the weights
    file's header is read; its tensors are not): BdnError naming the parameter otherwise."""
    from bdn.models.fast import ENGINES
    from bdn.models.weights import read_weights_metadata

    tile = params.get("tile", TILE)
    least = smallest_tile(params["model"])
    if isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < least:
        raise BdnError(
            f"{method}: tile must be a whole number of pixels >= {least} (the model's context on both sides and a "
            f"core), got {tile!r}"
        )
    engine = params.get("engine", "torch")
    if engine not in ENGINES:
        raise BdnError(f"{method}: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    precision = params.get("precision", "auto")
    try:
        model_precision(params["model"], engine, precision)
    except BdnError as error:
        raise BdnError(f"{method}: {error}") from None
    weights = params.get("weights")
    if weights is not None:
        try:
            read_weights_metadata(str(weights), expect_name=params["model"])
        except BdnError as error:  # its message starts with the file's name
            raise BdnError(f"{method}: weights {error}") from None


def denoise_with_model(
    image: np.ndarray,
    sigma: float | None = None,
    *,
    model: str,
    weights: str | None = None,
    tile: int = TILE,
    engine: str = "torch",
    precision: str = "auto",
) -> np.ndarray:
    """Denoise a float image in [0, 1] with a trained model (blind: `sigma` is not used).

    `engine`: 'torch' runs the model with its batch norms folded (bdn.models.fast.fast_form), 'onnxruntime'
    through onnxruntime (faster on CPUs in float32; the first call records an ONNX file into the cache folder).
    `precision`: 'fp32', 'bf16' (torch engine: the convolutions in bfloat16 under autocast, channels-last) or
    'auto': bf16 where the CPU computes it natively (AMX or AVX512-BF16) and the model keeps its Set12 PSNR
    within 0.02 dB in it (benchmarks/records/models_bf16_cpu.md), else fp32."""
    from bdn.models.fast import inference_form
    from bdn.models.registry import get_model_spec

    channels = 1 if image.ndim == 2 else 3
    net, takes = _net_for(model, channels, weights)
    spec = get_model_spec(model)  # its tiles: `reach` pixels of context, origins on its `multiple` grid
    run = inference_form(net, takes, engine, model_precision(model, engine, precision))
    return np.clip(run_per_channel(run, image, takes, tile, spec.reach, spec.multiple), 0.0, 1.0).astype(np.float32)


def run_per_channel(run, image: np.ndarray, takes: int, tile: int, overlap: int, align: int) -> np.ndarray:
    """`run` over `image` through tiles (bdn.models.tiles.tiled), in the image's layout, not clipped.

    A net that `takes` one channel runs on each colour channel alone; one that takes three sees a grey image
    as three equal channels and gives back their mean.
    """
    import torch

    from bdn.models.tiles import tiled
    from bdn.tensors import to_image, to_nchw

    with torch.inference_mode():
        x = to_nchw(image)
        if takes == 1:
            x = x.transpose(0, 1).contiguous()  # each channel on its own: (C, 1, H, W)
        elif x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out = torch.cat([tiled(run, x[k : k + 1], tile, overlap, align) for k in range(x.shape[0])])
    result = to_image(out.transpose(0, 1) if takes == 1 else out)
    return result.mean(axis=2) if image.ndim == 2 and takes == 3 else result
