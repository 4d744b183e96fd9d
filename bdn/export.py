"""Export a trained feed-forward denoiser for use without bdn: ONNX (onnxruntime and other runtimes) and TorchScript.

    bdn export --checkpoint-directory DIR --pipeline-config CONFIG.json --output-directory OUT \\
        [--to-onnx] [--to-torchscript] [--weights best|last] [--opset N]

DIR is what `bdn train` wrote (`best.safetensors`, `last.safetensors`); the config's model name and
channels must be those the weights were trained as. OUT receives, as asked:

- `model.onnx`: float32 [N,C,H,W] in [0,1] in (input `noisy`), the same out clamped to [0,1] (output `denoised`);
  batch, height and width free. Recorded with torch.export and the ONNX exporter built on it (needs onnx,
  onnxscript and onnxruntime).
- `model.pt`: the same entry as TorchScript (torch.jit.trace), and `model_uint8.pt`: uint8 [N,H,W,C] in and out,
  the seed's example. Both load with torch.jit.load alone. They run on the CPU: a trace keeps the device of the
  tensors a model makes for itself (a pyramid's blur kernel).
- `export.json`: what was exported, from which weights, and the largest difference from PyTorch found at each
  checked size.

Every file is run on random inputs of several sizes (odd and even, batch 1 and 2) against the PyTorch model before
anything lands in OUT: a difference over 1e-4 fails the export and OUT stays as it was.

Images smaller than `min_side` a side (in export.json; 5 for a 3-level pyramid, 1 otherwise) make the exported
files raise: the PyTorch pyramid switches to another padding for such tiny inputs, a branch that a recorded graph
does not keep.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from bdn.errors import BdnError
from bdn.io import read_json

WEIGHTS = ("best", "last")
DEFAULT_OPSET = 18  # the oldest opset the torch.export-based ONNX exporter writes natively
TOLERANCE = 1e-4  # max abs difference from PyTorch, on outputs in [0,1]
INPUT_NAME, OUTPUT_NAME = "noisy", "denoised"
# The graph is recorded on an input with odd sides: a pyramid model pads to a multiple of 2^(levels-1) only when
# the size needs it, and a recording keeps the branch it saw. On odd sides it records the padding with amounts
# computed from the input's size, which is right for every size (0 where none is needed); on a multiple it would
# record "no padding" for all sizes. Batch 2 because torch.export fixes any dimension that is 1 in the example.
EXAMPLE_SIZE = (2, 41, 31)  # (N, H, W)
CHECK_SIZES = ((1, 64, 64), (2, 37, 45), (1, 23, 30))  # (N, H, W): even and odd sides, both batch sizes
FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "torchscript_uint8": "model_uint8.pt"}


# --- inputs ------------------------------------------------------------------------------------------------


def read_config(path: str | Path) -> tuple[str, int]:
    """(model name, channels) from a pipeline config; BdnError (one line) if it is missing or malformed."""
    from bdn.models import get_model_spec

    path = Path(path)
    config = read_json(path)
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or "name" not in model or "channels" not in model:
        raise BdnError(f'{path}: needs a "model" section with "name" and "channels"')
    name, channels = model["name"], model["channels"]
    if not isinstance(name, str):
        raise BdnError(f"{path}: model.name must be a string, got {name!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise BdnError(f"{path}: model.channels must be 1 or 3, got {channels!r}")
    try:
        get_model_spec(name)
    except BdnError as error:
        raise BdnError(f"{path}: {error}") from None
    return name, channels


def load_checkpoint(
    directory: str | Path, weights: str, name: str, channels: int, config: str | Path = "the pipeline config"
) -> tuple[nn.Module, dict, Path]:
    """(the trained network in eval mode, its file's metadata, the file) from a model directory; BdnError unless
    the file holds model `name` with `channels` (what `config` says it was trained as)."""
    from bdn.models.weights import COLOURS, load_weights

    directory = Path(directory)
    if weights not in WEIGHTS:
        raise BdnError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if not directory.is_dir():
        raise BdnError(f"{directory}: no such checkpoint directory")
    path = directory / f"{weights}.safetensors"
    if not path.is_file():
        raise BdnError(f"{path}: no such weights file (bdn train writes best and last .safetensors)")
    net, metadata = load_weights(path)
    found_name, found_channels = metadata["model"], int(metadata["channels"])  # load_weights has checked both
    if (found_name, found_channels) != (name, channels):
        raise BdnError(
            f"{path}: holds {COLOURS[found_channels]} weights for model {found_name!r}, but {config} says "
            f"{COLOURS[channels]} (channels={channels}) model {name!r}"
        )
    return net, metadata, path


# --- recording ---------------------------------------------------------------------------------------------


def _example(channels: int, seed: int = 0) -> torch.Tensor:
    batch, height, width = EXAMPLE_SIZE
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


def record_onnx(model: nn.Module, channels: int, path: Path, opset: int) -> None:
    """Write `model` (float [N,C,H,W] in, out) as ONNX with free batch, height and width."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it; say so here rather than deep inside)
    except ImportError as error:
        raise BdnError(f"ONNX export needs onnx, onnxscript and onnxruntime ({error}; pip install them)") from None
    from torch.export import Dim

    dynamic = {0: Dim.DYNAMIC, 2: Dim.DYNAMIC, 3: Dim.DYNAMIC}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(model, (_example(channels),), dynamic_shapes=(dynamic,), strict=False)
            onnx_program = torch.onnx.export(
                program,
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                optimize=True,
                verbose=False,
            )
        except Exception as error:  # the exporters raise many kinds; the user needs one line, not their trace
            raise BdnError(f"ONNX export failed: {' '.join(str(error).split())[:300]}") from None
        onnx_program.save(str(path), external_data=False)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)


def record_torchscript(model: nn.Module, example: torch.Tensor, path: Path, info: dict) -> None:
    """Write `model` as TorchScript by tracing it on `example` (scripting fails on the pyramid and gated models;
    tracing keeps shapes free for these models, as the checks confirm). `info` goes in as extra file bdn.json."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)  # the checks below compare more thoroughly
        torch.jit.save(traced, str(path), _extra_files={"bdn.json": json.dumps(info)})


# --- checks ------------------------------------------------------------------------------------------------


def _inputs(channels: int, seed: int = 1):
    """(label, float [N,C,H,W] in [0,1]) for each checked size, the same on every run."""
    generator = torch.Generator().manual_seed(seed)
    for batch, height, width in CHECK_SIZES:
        yield f"{batch}x{channels}x{height}x{width}", torch.rand(batch, channels, height, width, generator=generator)


def _compare(label: str, what: str, got, want: torch.Tensor) -> float:
    got = torch.as_tensor(got)
    if tuple(got.shape) != tuple(want.shape):
        raise BdnError(
            f"{what} check failed at {label}: output shape {tuple(got.shape)}, PyTorch gives {tuple(want.shape)}"
        )
    return float((got.double() - want.double()).abs().max())


def _verdict(what: str, errors: dict[str, float], tolerance: float) -> dict[str, float]:
    worst = max(errors, key=errors.get)
    if not errors[worst] <= tolerance:  # also catches NaN
        raise BdnError(
            f"{what} check failed: differs from PyTorch by {errors[worst]:.3g} at {worst} (tolerance {tolerance:g})"
        )
    return errors


def check_onnx(path: Path, model: nn.Module, channels: int) -> dict[str, float]:
    """Max abs difference between onnxruntime and PyTorch per checked size; BdnError if any exceeds TOLERANCE."""
    try:
        import onnxruntime
    except ImportError as error:
        raise BdnError(f"checking the ONNX file needs onnxruntime ({error}; pip install onnxruntime)") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # e.g. an opset newer than this onnxruntime knows
        raise BdnError(
            f"ONNX check failed: onnxruntime cannot load the file ({' '.join(str(error).split())[:300]})"
        ) from None
    errors = {}
    for label, x in _inputs(channels):
        with torch.no_grad():
            want = model(x)
        try:
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        except Exception as error:  # onnxruntime's own error types; the verdict is what matters
            raise BdnError(f"ONNX check failed at {label}: {' '.join(str(error).split())[:300]}") from None
        errors[label] = _compare(label, "ONNX", got, want)
    return _verdict("ONNX", errors, TOLERANCE)


def check_torchscript(path: Path, model: nn.Module, channels: int, uint8: bool = False) -> dict[str, float]:
    """Max abs difference between the TorchScript file (loaded back with torch.jit.load) and PyTorch per checked
    size; for the uint8 entry in grey levels, where 1 is allowed (a value a hair from .5 may round either way)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 marks torch.jit.load deprecated
        loaded = torch.jit.load(str(path), map_location="cpu")
    errors = {}
    for label, x in _inputs(channels):
        if uint8:
            x = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        with torch.no_grad():
            want, got = model(x), loaded(x)
        if got.dtype != want.dtype:
            raise BdnError(f"TorchScript check failed at {label}: output dtype {got.dtype}, PyTorch gives {want.dtype}")
        errors[label] = _compare(label, "TorchScript", got, want)
    return _verdict("TorchScript uint8" if uint8 else "TorchScript", errors, 1.0 if uint8 else TOLERANCE)


# --- the whole export --------------------------------------------------------------------------------------


def export(
    checkpoint_directory: str | Path,
    pipeline_config: str | Path,
    output_directory: str | Path,
    *,
    to_onnx: bool = False,
    to_torchscript: bool = False,
    weights: str = "best",
    opset: int = DEFAULT_OPSET,
) -> dict:
    """Export, check and write the files; returns what export.json holds. BdnError (and OUT untouched) on failure."""
    import bdn
    from bdn.models import get_model_spec
    from bdn.models.wrap import ImageDenoiser

    if not (to_onnx or to_torchscript):
        raise BdnError("nothing to export: ask for --to-onnx and/or --to-torchscript")
    if to_onnx and not 7 <= opset <= _newest_opset():
        raise BdnError(f"--opset must be between 7 and {_newest_opset()}, got {opset}")
    name, channels = read_config(pipeline_config)
    net, metadata, weights_path = load_checkpoint(checkpoint_directory, weights, name, channels, pipeline_config)
    model = ImageDenoiser(net).eval()
    info = {
        "model": name,
        "channels": channels,
        "weights": str(weights_path),
        "weights_metadata": metadata,
        "min_side": get_model_spec(name).min_side,
        "tolerance": TOLERANCE,
        "bdn_version": getattr(bdn, "__version__", "unknown"),
        "torch_version": torch.__version__,
    }
    from bdn.record import make_record

    # The run record (bdn.record): versions, git commit, threads, every option, the weights' and config's SHA-256.
    options = {
        "checkpoint_directory": str(checkpoint_directory),
        "pipeline_config": str(pipeline_config),
        "output_directory": str(output_directory),
        "to_onnx": to_onnx,
        "to_torchscript": to_torchscript,
        "weights": weights,
        "opset": opset,
    }
    info["record"] = make_record("export", options, inputs=[pipeline_config], weights=[weights_path])
    out = Path(output_directory)
    try:
        with _staging(out) as staging:
            if to_onnx:
                info["onnx"] = _write_onnx(model, channels, staging, opset, info)
            if to_torchscript:
                info.update(_write_torchscript(model, channels, staging, info))
            from bdn.record import file_sha256

            info["record"]["outputs"] = [
                {"path": str(out / p.name), "sha256": file_sha256(p)} for p in sorted(staging.iterdir()) if p.is_file()
            ]
            (staging / "export.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
            _publish(staging, out)
    except OSError as error:
        raise BdnError(f"{out}: cannot write the exported files ({error.strerror or error})") from None
    return info


def _write_onnx(model: nn.Module, channels: int, folder: Path, opset: int, info: dict) -> dict:
    path = folder / FILES["onnx"]
    record_onnx(model, channels, path, opset)
    written_opset = _tag_onnx(path, info)
    return {
        "file": FILES["onnx"],
        "opset": written_opset,  # the exporter may keep a newer one than asked (it warns then)
        "input_names": [INPUT_NAME],
        "output_names": [OUTPUT_NAME],
        "input": "float32 [N, C, H, W] in [0, 1]; N, H and W free",
        "output": "float32 [N, C, H, W], clamped to [0, 1]",
        "max_abs_error": check_onnx(path, model, channels),
        "onnx_version": _version("onnx"),
        "onnxruntime_version": _version("onnxruntime"),
    }


def _write_torchscript(model: nn.Module, channels: int, folder: Path, info: dict) -> dict:
    tag = {key: info[key] for key in ("model", "channels", "min_side")}
    float_example = _example(channels)
    uint8_example = (float_example * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    entries = {}
    for key, example, what in (
        ("torchscript", float_example, "float32 [N, C, H, W] in [0, 1]"),
        ("torchscript_uint8", uint8_example, "uint8 [N, H, W, C]"),
    ):
        path = folder / FILES[key]
        record_torchscript(model, example, path, tag)
        entries[key] = {
            "file": FILES[key],
            "method": "torch.jit.trace",
            # A trace keeps the device of tensors the model makes itself (the pyramids' blur kernel): CPU here
            "device": "cpu",
            "input": what,
            "output": what.replace(" in [0, 1]", ", clamped to [0, 1]"),
            "max_abs_error": check_torchscript(path, model, channels, uint8=key.endswith("uint8")),
        }
    return entries


def _newest_opset() -> int:
    try:
        import onnx
    except ImportError:
        return DEFAULT_OPSET  # record_onnx reports the missing package
    return onnx.defs.onnx_opset_version()


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def _tag_onnx(path: Path, info: dict) -> int:
    """Name the model inside the ONNX file too (metadata_props), so the file alone says what it is; returns the
    file's opset."""
    import onnx

    proto = onnx.load(str(path))
    for key in ("model", "channels", "min_side"):
        entry = proto.metadata_props.add()
        entry.key, entry.value = f"bdn.{key}", str(info[key])
    proto.doc_string = f"bdn denoiser {info['model']} ({info['channels']} channel(s)): noisy in [0,1] -> denoised"
    onnx.save(proto, str(path))
    return next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


class _staging:
    """A private folder beside OUT that the files are written and checked in; removed whatever happens."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def __enter__(self) -> Path:
        if self.out.exists() and not self.out.is_dir():
            raise BdnError(f"{self.out}: exists and is not a folder")
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.export-", dir=self.out.parent))
        except OSError as error:
            where = f": {error.filename}" if error.filename else ""
            raise BdnError(f"{self.out}: cannot create it ({error.strerror or error}{where})") from None
        return self.path

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _publish(staging: Path, out: Path) -> None:
    """Move the checked files into OUT, export.json last (renames within one file system: no partial files)."""
    names = sorted(p.name for p in staging.iterdir() if p.name != "export.json") + ["export.json"]
    try:
        out.mkdir(exist_ok=True)
        for name in names:
            os.replace(staging / name, out / name)
    except OSError as error:
        raise BdnError(f"{out}: cannot write there ({error.strerror or error})") from None


# --- command line ------------------------------------------------------------------------------------------
