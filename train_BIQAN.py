"""train_BIQAN.py: training of the BIQAN quality network (the seed's script, a thin front end over biqan).

    python train_BIQAN.py --score_path runs/PolyU/scores.txt --output_path checkpoints/biqan_polyu --epochs 40
    torchrun --nproc-per-node 2 train_BIQAN.py ...   (data-parallel: the processes share each epoch)

Options, output files, resuming and torchrun: see biqan/train.py (`python train_BIQAN.py --help`).
"""

import sys

from biqan.train import main

if __name__ == "__main__":
    sys.exit(main(prog="train_BIQAN.py"))
