"""test_BIQAN.py: picking DIP iterates with BIQAN (the seed's script, a thin front end over biqan.select).

    python test_BIQAN.py --run_path results/CC --output_path results/CC_biqan \
        [--model_path biqan.safetensors] [--start_index 40] [--is_smooth True] \
        [--dataset_real_path ../shared/data/CC/real --dataset_mean_path ../shared/data/CC/mean]

Scores every snapshot of a run_BDN output folder, picks each image's best and writes `<id>_BIQAN.png`,
`<id>_Compare.png`, `<id>_Curves.png`, `Denoised_PSNR.txt`, and choice.json + result.png in the run's image folders.
The seed's option names --dataset_image_path and --pre_trained_model are accepted. See biqan/select.py.
"""

import sys

from biqan.select import main

if __name__ == "__main__":
    sys.exit(main(prog="test_BIQAN.py"))
