"""`bdn demo`: the main job on images that ship with scikit-image, so it runs anywhere bdn is installed.

A colour and a grey image get Gaussian noise of a known level (fixed seed); every registered method denoises both
blind (estimating the noise level, as a user with a real photograph must); the result is a comparison figure, a
table and the denoised images under the output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from bdn.data import centre_crop
from bdn.io import write_image
from bdn.methods import METHODS, denoise, get_method
from bdn.metrics import psnr_ssim
from bdn.noise import add_noise
from bdn.report import comparison_figure, markdown_table, write_table

DEMO_SIGMA = 25.0
DEMO_SEED = 0
DEMO_CROP = 256  # keeps the default methods inside the demo's budget (seconds), DIP on request in minutes


def demo_images() -> dict[str, np.ndarray]:
    """scikit-image's astronaut (colour) and cameraman (grey), as float32 in [0,1]."""
    from skimage import data

    return {
        "astronaut": centre_crop(data.astronaut(), DEMO_CROP).astype(np.float32) / 255,
        "camera": centre_crop(data.camera(), DEMO_CROP).astype(np.float32) / 255,
    }


def default_methods() -> list[str]:
    """Every registered method but DIP: a DIP fit takes minutes a crop on a laptop CPU, so it joins on request
    (`bdn demo --methods nlm bm3d dip`)."""
    return [name for name, method in METHODS.items() if method.family != "dip"]


def run_demo(out_dir: Path, methods: list[str] | None = None, progress: bool = True) -> pd.DataFrame:
    methods = list(methods or default_methods())
    for name in methods:
        get_method(name)  # fail on a typo before any work
    out_dir = Path(out_dir)
    rows, figure_rows = [], []
    for image_name, clean in demo_images().items():
        noisy = add_noise(clean, "gaussian", DEMO_SIGMA, seed=DEMO_SEED)
        noisy_psnr, noisy_ssim = psnr_ssim(clean, noisy)
        rows.append({"image": image_name, "method": "noisy", "psnr": noisy_psnr, "ssim": noisy_ssim, "seconds": 0.0})
        panels = [(f"noisy (σ={DEMO_SIGMA:g})\n{noisy_psnr:.2f} dB / {noisy_ssim:.3f}", noisy)]
        write_image(out_dir / f"{image_name}_noisy.png", noisy)
        for method in tqdm(methods, desc=f"demo {image_name}", unit="method", disable=not progress):
            start = time.perf_counter()
            result = denoise(noisy, method)
            seconds = time.perf_counter() - start
            value_psnr, value_ssim = psnr_ssim(clean, result)
            rows.append(
                {
                    "image": image_name,
                    "method": method,
                    "psnr": value_psnr,
                    "ssim": value_ssim,
                    "seconds": seconds,
                }
            )
            panels.append((f"{method}\n{value_psnr:.2f} dB / {value_ssim:.3f}", result))
            write_image(out_dir / f"{image_name}_{method}.png", result)
        panels.append(("clean", clean))
        figure_rows.append(panels)
    table = pd.DataFrame(rows)
    write_table(table, out_dir / "table", floatfmt=".3f")
    figure = comparison_figure(figure_rows, out_dir / "demo.png")
    print(markdown_table(table, floatfmt=".3f"))
    print(f"figure: {figure}\ntable: {out_dir / 'table.csv'}, {out_dir / 'table.md'}")
    return table
