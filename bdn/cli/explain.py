"""`bdn explain`: a bias-free model's adaptive filters at chosen pixels (f(y) = J(y) y)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bdn.cli.options import set_threads, whole


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("image", help="image file")
    add("--model", required=True, help="a registered model name (bdn.models.MODELS)")
    add("--channels", type=int, help="1 (grey) or 3 (colour); default: the image's own")
    add("--weights", help="a .safetensors file from bdn (default: the weights shipped for the model)")
    add("--pixels", nargs="+", required=True, metavar="ROW,COL", help="output pixels to explain")
    add("-o", "--output", help="output folder (default explain_<image stem>)")
    add("--noise-sigma", type=float, help="add Gaussian noise of this sigma (0-255 units) first")
    add("--seed", type=int, default=0, help="seed of that noise (default 0)")
    add("--fraction", type=float, default=0.9, help="share of |weight| the ERF holds (default 0.9)")
    add("--threads", type=whole, help="CPU threads for torch")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from bdn.explain import explain, image_for_channels, parse_pixel
    from bdn.io import read_image
    from bdn.models import get_model_spec, load_model
    from bdn.noise import add_noise
    from bdn.report import markdown_table

    pixels = [parse_pixel(text) for text in args.pixels]
    spec = get_model_spec(args.model)
    image, _ = read_image(args.image)
    channels = args.channels or (1 if image.ndim == 2 else 3)
    image = image_for_channels(image, channels)
    if args.noise_sigma:
        image = add_noise(image, "gaussian", args.noise_sigma, seed=args.seed)
    set_threads(args.threads)
    model = load_model(args.model, channels, weights=args.weights)
    if not spec.bias_free:
        print(
            f"bdn: warning: {args.model} has biases, so f(y) = J(y) y does not hold: the filters are only its local "
            "linearisation, and the reconstruction_error column shows what the biases add",
            file=sys.stderr,
        )
    out_dir = Path(args.output or f"explain_{Path(args.image).stem}")
    title = args.model + (f", noise sigma {args.noise_sigma:g}" if args.noise_sigma else "")
    rows, paths = explain(model, image, pixels, out_dir, fraction=args.fraction, title=title)
    from bdn.record import make_record, options_of, write_record

    weights = [args.weights] if args.weights else []
    record = make_record(
        "bdn explain", options_of(args), inputs=[args.image], weights=weights, outputs=paths, seed=args.seed
    )
    write_record(out_dir / "record.json", record)
    print(markdown_table(pd.DataFrame(rows), floatfmt=".3g"))
    print(f"wrote {', '.join(map(str, paths))} (ERF: the radius holding {args.fraction:.0%} of the filter's |weight|)")
    return 0
