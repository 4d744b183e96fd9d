"""generator_dataset.py: score labels for DIP iterates from run_BDN's logs (the seed's script, a thin front end).

    python generator_dataset.py --run_path results/PolyU --output_path results/PolyU/scores.txt
    python generator_dataset.py --dataset_path RUN --output_path S --is_use_fix_minmax False --start_position 8

Writes the score file (`<snapshot path> p1 ... p10` per iterate) and `<output stem>_psnr_vs_score.png`; the
recipe, options and file format: see biqan/labels.py (`python generator_dataset.py --help`).
"""

import sys

from biqan.labels import main

if __name__ == "__main__":
    sys.exit(main(prog="generator_dataset.py"))
