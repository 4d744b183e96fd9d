"""`bdn export`: a trained model (bdn train's folder) to ONNX and TorchScript, checked against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from bdn.errors import BdnError

# bdn.export's WEIGHTS and DEFAULT_OPSET, here so that --help imports no torch (tests/test_light.py checks).
WEIGHTS = ("best", "last")
DEFAULT_OPSET = 18


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--checkpoint-directory", required=True, help="the folder bdn train wrote")
    add("--pipeline-config", required=True, help="the JSON config the model was trained with")
    add("--output-directory", required=True, help="folder for the exported files and export.json")
    add("--to-onnx", action="store_true", help="write model.onnx (float NCHW in [0,1])")
    add("--to-torchscript", action="store_true", help="write model.pt (float NCHW) and model_uint8.pt (uint8 NHWC)")
    add("--weights", choices=WEIGHTS, default="best", help="which weights to export (default best)")
    add("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")


def run(args: argparse.Namespace) -> int:
    from bdn.export import FILES, export

    if not (args.to_onnx or args.to_torchscript):
        raise BdnError("choose at least one of --to-onnx and --to-torchscript")
    info = export(
        args.checkpoint_directory,
        args.pipeline_config,
        args.output_directory,
        to_onnx=args.to_onnx,
        to_torchscript=args.to_torchscript,
        weights=args.weights,
        opset=args.opset,
    )
    out = Path(args.output_directory)
    colour = {1: "grey", 3: "colour"}[info["channels"]]
    print(f"exported {info['model']} ({colour}) from {info['weights']}")
    for key in FILES:
        if key in info:
            errors = info[key]["max_abs_error"]
            sizes = ", ".join(f"{label}: {error:.2g}" for label, error in errors.items())
            opset = f" (opset {info[key]['opset']})" if "opset" in info[key] else ""
            print(f"  {out / info[key]['file']}{opset}: max |{key} - torch| = {max(errors.values()):.2g} ({sizes})")
    side = info["min_side"]
    print(f"  {out / 'export.json'}; images need at least {side} pixel{'s' if side > 1 else ''} a side")
    return 0
