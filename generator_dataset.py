"""generator_dataset.py: score labels for DIP iterates (the seed's script): a shim over `bdn label`.

    python generator_dataset.py --run_path results/PolyU --output_path results/PolyU/scores.txt
    python generator_dataset.py --dataset_path RUN --output_path S --is_use_fix_minmax False --start_position 8

The seed's option spellings (`--start_position`) and bdn's (`--start-position`) both work; options: `bdn label
--help`; the recipe and the score file's format: biqan/labels.py.
"""

import sys

from bdn.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("label", prog="generator_dataset.py"))
