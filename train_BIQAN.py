"""train_BIQAN.py: training of the BIQAN quality network (the seed's script): a shim over `bdn train-biqan`.

    python train_BIQAN.py --score_path runs/PolyU/scores.txt --output_path checkpoints/biqan_polyu --epochs 40
    torchrun --nproc-per-node 2 train_BIQAN.py ...   (data-parallel: the processes share each epoch)

The seed's option spellings (`--batch_size`) and bdn's (`--batch-size`) both work; options: `bdn train-biqan
--help`; output files, resuming and torchrun: biqan/train.py.
"""

import sys

from bdn.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("train-biqan", prog="train_BIQAN.py"))
