"""run_BDN.py: Deep Image Prior over a folder of noisy images (the seed's script): a shim over `bdn run`.

    python run_BDN.py --dataset_real_path ../shared/data/CC/real/ --dataset_mean_path ../shared/data/CC/mean/ \
        --output_path results/CC --num_iter 3000 --save_iter 20
    torchrun --nproc-per-node 2 run_BDN.py ...   (the images are shared among the processes)

The seed's option spellings (`--num_iter`) and bdn's (`--num-iter`) both work; options: `bdn run --help`; the
files it writes: bdn/dip/runfolder.py.
"""

import sys

from bdn.cli import run_script

if __name__ == "__main__":
    sys.exit(run_script("run", prog="run_BDN.py"))
