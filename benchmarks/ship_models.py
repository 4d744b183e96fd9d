"""Copy trained models into checkpoints/ (shipped with the package), stored as float16 to halve their size.

    python benchmarks/ship_models.py --runs /tmp/gpu/train resnet_5x5_bn_3x3_grey unet_colour ...

Each RUN is a `bdn train` model directory under --runs; its best.safetensors (best validation PSNR)
becomes checkpoints/model_<model>_<grey|colour>.safetensors, where bdn.load_model, `bdn denoise --method` and
`bdn bench` find it once the model's registration names that colour in `shipped` (bdn/models/registry.py;
tests/test_models_run.py checks that the registrations and the folder agree). The recipe of each shipped file
is its config in benchmarks/configs/gpu/ (see session.sh).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bdn.models.weights import COLOURS, halve_weights, load_weights

CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=Path, required=True, help="folder of bdn.train model directories")
    parser.add_argument("names", nargs="+", help="model directories to ship")
    args = parser.parse_args()
    for run in args.names:
        source = args.runs / run / "best.safetensors"
        _, info = load_weights(source)  # refuses anything that is not a loadable bdn model
        target = CHECKPOINTS / f"model_{info['model']}_{COLOURS[int(info['channels'])]}.safetensors"
        halve_weights(source, target)
        load_weights(target, expect_name=info["model"], expect_channels=int(info["channels"]))
        print(f"{run}: epoch {info.get('epoch')}, validation {info.get('val_psnr')} dB -> {target.name}")


if __name__ == "__main__":
    main()
