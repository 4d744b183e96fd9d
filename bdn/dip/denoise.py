"""DIP as a method of `bdn.denoise()` and `bdn denoise --method dip`: one image in, its denoised version out.

Any image size: the image is padded by reflection up to the sides the generator needs (multiples of 2**scales,
at least its smallest side), fitted, and the padding cut off again. No clean image exists here, so a judge that
needs none decides when to stop and which iterate to keep (`stop`, default `DEFAULT_STOP`); with `stop="none"`
the last EMA output after `iterations` is returned, as the seed does.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bdn.errors import BdnError

__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_STOP", "DipJob", "dip", "pad_for_net", "prepare"]

# The seed's fixed budget; the judge usually ends a fit well before it.
DEFAULT_ITERATIONS = 3000
DEFAULT_STOP = "noise"
# The noise rule's factor (residual <= factor x estimated sigma), set on PolyU-train curves of the seed's loop
# (benchmarks/dip_noise_rule.py; benchmarks/records/dip_noise_rule_polyu_cpu.md).
DEFAULT_NOISE_FACTOR = 1.0
STOPS = ("noise", "wmv", "emv", "none")


def pad_for_net(image: np.ndarray, multiple: int, least: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad the bottom and right of `image` to sides that are multiples of `multiple` and >= `least`.

    Returns the padded image and the original (height, width). Symmetric reflection ('symmetric' in numpy) keeps
    the border pixels' statistics, so the noise the net sees in the padding looks like the image's own.
    """
    height, width = image.shape[:2]
    target_h = max(least, -(-height // multiple) * multiple)
    target_w = max(least, -(-width // multiple) * multiple)
    pad = [(0, target_h - height), (0, target_w - width)] + [(0, 0)] * (image.ndim - 2)
    padded = image
    # np.pad in 'symmetric' mode cannot pad by more than the side itself in one call; small images need rounds.
    while padded.shape[0] < target_h or padded.shape[1] < target_w:
        step = [
            (0, min(target_h - padded.shape[0], padded.shape[0])),
            (0, min(target_w - padded.shape[1], padded.shape[1])),
        ] + pad[2:]
        padded = np.pad(padded, step, mode="symmetric")
    return np.ascontiguousarray(padded, dtype=np.float32), (height, width)


@dataclasses.dataclass
class DipJob:
    """One image made ready for `fit_dip`: the padded image, the config, the initial weights and the judge."""

    padded: np.ndarray
    size: tuple[int, int]  # the image's own (height, width)
    config: object  # DipConfig
    init_state: dict | None
    judge: object | None  # a Judge, or None for stop='none'

    def crop(self, image: np.ndarray) -> np.ndarray:
        height, width = self.size
        return np.ascontiguousarray(image[:height, :width], dtype=np.float32)


def prepare(
    image: np.ndarray,
    sigma: float | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    stop: str = DEFAULT_STOP,
    init: str | None = None,
    net_type: str | None = None,
    lr: float | None = None,
    seed: int = 0,
    noise_factor: float = DEFAULT_NOISE_FACTOR,
) -> DipJob:
    """Everything `dip()` decides before fitting (benchmarks use it to fit exactly what users get)."""
    from bdn.dip.fit import DipConfig
    from bdn.dip.judges import make_judge
    from bdn.dip.nets import min_size, smallest_side

    if stop not in STOPS:
        raise BdnError(f"dip: stop must be one of {', '.join(STOPS)}, got {stop!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise BdnError(f"dip: iterations must be a whole number >= 1, got {iterations!r}")
    config = DipConfig(num_iter=int(iterations), seed=seed, show_iter=min(100, int(iterations)))
    init_state = None
    if init is not None:
        from bdn.dip.init import config_for_init, load_init

        init_state, metadata = load_init(init)
        config = config_for_init(metadata, config)
        if net_type is not None and net_type != config.net_type:
            raise BdnError(f"dip: init {init} is for net {config.net_type!r}; leave net_type out or use another init")
    if net_type is not None:
        config = dataclasses.replace(config, net_type=net_type)
    if lr is not None:
        config = dataclasses.replace(config, lr=lr)
    if init is not None:
        from bdn.dip.init import check_init_fits

        check_init_fits(metadata, config, 1 if image.ndim == 2 else 3, f"init {init}")
    padded, size = pad_for_net(image, min_size(config.net_type), smallest_side(config.net_type))
    judge = None
    if stop == "noise":
        judge = make_judge("noise", noisy=padded, sigma=sigma, factor=noise_factor)
    elif stop != "none":
        judge = make_judge(stop)
    return DipJob(padded, size, config, init_state, judge)


def dip(
    image: np.ndarray,
    sigma: float | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    stop: str = DEFAULT_STOP,
    init: str | None = None,
    net_type: str | None = None,
    lr: float | None = None,
    device: str = "auto",
    seed: int = 0,
    noise_factor: float = DEFAULT_NOISE_FACTOR,
    progress: bool = False,
) -> np.ndarray:
    """Deep Image Prior on one image (float [0, 1], grey or RGB); returns the chosen EMA output, same shape.

    sigma: the noise level (0-255) for the 'noise' judge; estimated from the image when left out.
    iterations: the most iterations to run. stop: 'noise' (discrepancy principle), 'wmv', 'emv' or 'none'.
    noise_factor: the noise rule stops once the residual std <= noise_factor x sigma (> 1 stops sooner).
    init: a shipped initialisation's name or a safetensors file (see `bdn dip-init`); it fixes the net and input.
    net_type, lr: override the generator ('skip', 'skip_light') and the learning rate.
    """
    from bdn.dip.fit import fit_dip

    job = prepare(image, sigma, iterations, stop, init, net_type, lr, seed, noise_factor)
    result = fit_dip(
        job.padded, None, job.config, device=device, init_state=job.init_state, judge=job.judge, progress=progress
    )
    return job.crop(result.judge_image if result.judge_image is not None else result.ema)
