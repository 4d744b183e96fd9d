"""What a DIP fit is asked to do (`DipConfig`, checked by `check_config`) and what it gives back (`DipResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bdn.errors import BdnError

if TYPE_CHECKING:
    import torch

    from bdn.dip.nets import NetSpec

# Read without torch (bdn run --help builds its options from these; tests/test_light.py checks they match
# bdn.dip.nets.NET_TYPES and bdn.dip.precision.PRECISIONS, whose modules import torch).
NET_TYPE_NAMES = ("skip", "skip64", "skip_light")
PRECISIONS = ("auto", "fp32", "bf16")

__all__ = ["INPUT_BASES", "NET_TYPE_NAMES", "PERTURBATIONS", "PRECISIONS", "DipConfig", "DipResult", "check_config"]

INPUT_BASES = ("noise", "image", "smoothed")
PERTURBATIONS = ("fixed", "random", "none")


@dataclass
class DipConfig:
    """Every setting of one DIP fit; the defaults are the seed's run_BDN defaults (except save_iter)."""

    net_type: str | NetSpec = "skip"
    input_depth: int = 32  # channels of the noise input; 'image' and 'smoothed' inputs use the image's channels
    lr: float = 1e-2
    num_iter: int = 3000
    save_iter: int = 20  # snapshot interval: SSIM, the oracle's candidates, the files a caller writes
    show_iter: int = 100  # how often figures reach the host (progress bar, history)
    ema: float = 0.99
    input_base: str = "noise"  # 'noise' (uniform [0, 1) x 0.1), 'image' (the noisy image), 'smoothed'
    input_std: float = 8.5  # perturbation of the input, std in 1/255 units
    input_perturbation: str = "fixed"  # 'fixed' (std = input_std), 'random' (std ~ U[0, input_std]), 'none'
    reference_std: float = 8.5  # fresh noise added to the noisy reference each iteration, 1/255 units
    reference_perturbation: str = "fixed"  # the seed's literal behaviour; 'random' or 'none' as alternatives
    fallback_db: float | None = 8.0  # restore the last good weights when PSNR vs noisy drops by more; None: off
    smooth_sigma: float = 1.0  # Gaussian sigma in pixels for input_base='smoothed'
    # Blind-spot fitting (MPI, Ma et al. 2024): each iteration hides this share of the pixels from the input and
    # takes the loss only on the hidden ones, so the net cannot copy a pixel's noise; needs an image input.
    mask_ratio: float = 0.0
    seed: int = 0
    channels_last: bool | None = None  # None: chosen by device and net width (see pick_memory_format)
    cuda_graph: bool | None = None  # None: on CUDA, replay each iteration as one CUDA graph (see bdn/dip/graphs.py)
    # 'auto': bf16 where the CPU has AMX / AVX512-BF16 or the GPU has bf16, else fp32; 'bf16' runs the network in
    # bfloat16 with float32 master weights, optimiser, loss, EMA and metrics (see bdn/dip/precision.py).
    precision: str = "auto"


@dataclass
class DipResult:
    """What a fit gives back. Images are bdn images: float32 (H, W) or (H, W, 3) in [0, 1]."""

    ema: np.ndarray  # the final EMA output
    raw: np.ndarray  # the final raw output
    history: list[dict]  # one dict per iteration (see fit_dip)
    iterations: int  # iterations run
    stopped_early: bool
    fallbacks: list[int]  # iterations whose weights were thrown away
    seconds: float
    parameters: int
    state_dict: dict[str, torch.Tensor]  # final weights on the CPU (for learned initialisations)
    config: DipConfig
    best_iteration: int | None = None  # oracle: the snapshot with the best EMA PSNR (needs the clean image)
    best_psnr: float | None = None  # scikit-image figures of best_image
    best_ssim: float | None = None
    best_image: np.ndarray | None = None
    peak_iteration: int | None = None  # best EMA PSNR over every iteration (the seed's max_index), from history
    peak_psnr: float | None = None
    final_psnr: float | None = None  # scikit-image figures of `ema`
    final_ssim: float | None = None
    judge_name: str | None = None
    judge_iteration: int | None = None
    judge_image: np.ndarray | None = None  # EMA output at judge_iteration (see fit_dip)
    precision: str = "fp32"  # what the network computed in: 'fp32' or 'bf16' (config.precision resolved)
    extra: dict = field(default_factory=dict)

    @property
    def seconds_per_iteration(self) -> float:
        return self.seconds / max(self.iterations, 1)


def check_config(config: DipConfig) -> None:
    """BdnError naming the first setting that cannot work."""
    from bdn.dip.nets import net_spec

    net_spec(config.net_type)

    def positive_int(name: str) -> None:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise BdnError(f"DIP config: {name} must be a positive integer, got {value!r}")

    for name in ("input_depth", "num_iter", "save_iter", "show_iter"):
        positive_int(name)
    for name, low, high in (("lr", 0.0, math.inf), ("ema", 0.0, 1.0)):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not (low < value < high or (name == "ema" and value == 0)):
            raise BdnError(f"DIP config: {name} must be a number in ({low}, {high}), got {value!r}")
    for name in ("input_std", "reference_std", "smooth_sigma"):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not 0 <= value < math.inf:
            raise BdnError(f"DIP config: {name} must be a number >= 0, got {value!r}")
    if config.input_base not in INPUT_BASES:
        raise BdnError(f"DIP config: input_base must be one of {', '.join(INPUT_BASES)}, got {config.input_base!r}")
    ratio = config.mask_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise BdnError(f"DIP config: mask_ratio must be a number in [0, 1), got {ratio!r}")
    if ratio > 0 and config.input_base == "noise":
        raise BdnError("DIP config: mask_ratio > 0 hides pixels of the input image: use input_base image or smoothed")
    for name in ("input_perturbation", "reference_perturbation"):
        if getattr(config, name) not in PERTURBATIONS:
            raise BdnError(
                f"DIP config: {name} must be one of {', '.join(PERTURBATIONS)}, got {getattr(config, name)!r}"
            )
    if config.fallback_db is not None and (not isinstance(config.fallback_db, (int, float)) or config.fallback_db <= 0):
        raise BdnError(f"DIP config: fallback_db must be a positive number of dB or None, got {config.fallback_db!r}")
    for name in ("channels_last", "cuda_graph"):
        if getattr(config, name) not in (None, True, False):
            raise BdnError(f"DIP config: {name} must be True, False or None (automatic), got {getattr(config, name)!r}")
    if isinstance(config.seed, bool) or not isinstance(config.seed, (int, np.integer)) or config.seed < 0:
        raise BdnError(f"DIP config: seed must be an integer >= 0, got {config.seed!r}")
    if config.precision not in PRECISIONS:
        raise BdnError(f"DIP config: precision must be one of {', '.join(PRECISIONS)}, got {config.precision!r}")
