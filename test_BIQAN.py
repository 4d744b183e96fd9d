"""test_BIQAN.py: picking DIP iterates with BIQAN (the seed's script): a shim over `bdn select`.

    python test_BIQAN.py --run_path results/CC --output_path results/CC_biqan \
        [--model_path biqan.safetensors] [--start_index 40] [--is_smooth True] \
        [--dataset_real_path ../shared/data/CC/real --dataset_mean_path ../shared/data/CC/mean]

The seed's option spellings (and its names --dataset_image_path, --pre_trained_model) and bdn's (`--run-path`)
both work; options: `bdn select --help`; the files it writes: biqan/select.py.
"""

import sys

from bdn.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("select", prog="test_BIQAN.py"))
