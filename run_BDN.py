"""run_BDN.py: Deep Image Prior over a folder of noisy images (the seed's script, a thin front end over bdn).

    python run_BDN.py --dataset_real_path ../shared/data/CC/real/ --dataset_mean_path ../shared/data/CC/mean/ \
        --output_path results/CC --num_iter 3000 --save_iter 20
    torchrun --nproc-per-node 2 run_BDN.py ...   (the images are shared among the processes)

Options, output files, resuming and torchrun: see bdn/dip/run.py (`python run_BDN.py --help`).
"""

import sys

from bdn.dip.run import main

if __name__ == "__main__":
    sys.exit(main(prog="run_BDN.py"))
