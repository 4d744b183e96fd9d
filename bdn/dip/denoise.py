"""DIP as a method of `bdn.denoise()` and `bdn denoise --method dip`: one image in, its denoised version out.

Any image size: the image is padded by reflection up to the sides the generator needs (multiples of 2**scales,
at least its smallest side), fitted, and the padding cut off again. No clean image exists here. By default the
seed's loop runs from a random start and a judge that needs no clean image (the noise rule) decides when to stop
and which iterate to keep; `init="polyu_masked"` starts from the shipped masked initialisation and runs a blind-spot
fit for a fixed budget instead, keeping the last EMA output (faster, lower on real camera noise).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bdn.errors import BdnError

__all__ = ["DEFAULT_INIT", "DEFAULT_ITERATIONS", "DEFAULT_STOP", "DipJob", "dip", "pad_for_net", "prepare"]

# bdn's default is the seed's loop from a random start, stopped by the noise rule: measured on issue 3's five CC
# crops, the shipped masked initialisation's blind-spot fit ('polyu_masked': fast, no judge needed) kept 35.81 dB
# on average, under non-local means on the same crops (35.96) and 1.5 dB under the seed's loop's peak
# (benchmarks/records/dip_default_cc_cpu.md), so it is offered, not chosen.
DEFAULT_INIT = "none"
DEFAULT_ITERATIONS = {"masked": 400, "none": 3000}  # by kind of fit: blind-spot, or the seed's loop
STOPS = ("auto", "noise", "wmv", "emv", "none")
DEFAULT_STOP = "auto"  # 'none' for a blind-spot fit, 'noise' for the seed's loop
# The noise rule's factor (residual <= factor x estimated sigma); see benchmarks/dip_noise_rule.py.
DEFAULT_NOISE_FACTOR = 1.0


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
    grey_as_colour: bool = False  # a grey image fitted as three equal channels (for a colour initialisation)

    def crop(self, image: np.ndarray) -> np.ndarray:
        height, width = self.size
        out = image[:height, :width]
        return np.ascontiguousarray(out.mean(axis=2) if self.grey_as_colour else out, dtype=np.float32)


def prepare(
    image: np.ndarray,
    sigma: float | None = None,
    iterations: int | None = None,
    stop: str = DEFAULT_STOP,
    init: str | None = DEFAULT_INIT,
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
    init = None if init in (None, "none") else init
    metadata = {}
    config = DipConfig(seed=seed)
    init_state = None
    if init is not None:
        from bdn.dip.init import check_init_fits, config_for_init, load_init

        init_state, metadata = load_init(init)
        config = config_for_init(metadata, config)
        if net_type is not None and net_type != config.net_type:
            raise BdnError(f"dip: init {init} is for net {config.net_type!r}; leave net_type out or use another init")
    masked = config.mask_ratio > 0
    if iterations is None:
        iterations = DEFAULT_ITERATIONS["masked" if masked else "none"]
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 1:
        raise BdnError(f"dip: iterations must be a whole number >= 1, got {iterations!r}")
    if stop == "auto":
        stop = "none" if masked else "noise"
    config = dataclasses.replace(config, num_iter=int(iterations), show_iter=min(100, int(iterations)))
    if net_type is not None:
        config = dataclasses.replace(config, net_type=net_type)
    if lr is not None:
        config = dataclasses.replace(config, lr=lr)
    # A grey image meets a colour initialisation as three equal channels; the result is their mean.
    grey_as_colour = image.ndim == 2 and metadata.get("channels") == "3"
    if grey_as_colour:
        image = np.repeat(image[..., None], 3, axis=2)
    if init is not None:
        check_init_fits(metadata, config, 1 if image.ndim == 2 else 3, f"init {init}")
    padded, size = pad_for_net(image, min_size(config.net_type), smallest_side(config.net_type))
    judge = None
    if stop == "noise":
        judge = make_judge("noise", noisy=padded, sigma=sigma, factor=noise_factor)
    elif stop != "none":
        judge = make_judge(stop)
    return DipJob(padded, size, config, init_state, judge, grey_as_colour)


def dip(
    image: np.ndarray,
    sigma: float | None = None,
    iterations: int | None = None,
    stop: str = DEFAULT_STOP,
    init: str | None = DEFAULT_INIT,
    net_type: str | None = None,
    lr: float | None = None,
    device: str = "auto",
    seed: int = 0,
    noise_factor: float = DEFAULT_NOISE_FACTOR,
    progress: bool = False,
    minutes: float | None = None,
) -> np.ndarray:
    """Deep Image Prior on one image (float [0, 1], grey or RGB); returns the chosen EMA output, same shape.

    sigma: the noise level (0-255) for the 'noise' judge; estimated from the image when left out.
    iterations: the most iterations to run (default 400 for the blind-spot fit, 3000 for the seed's loop).
    stop: 'auto' ('none' for a blind-spot fit, 'noise' otherwise), 'noise' (discrepancy principle), 'wmv', 'emv',
    'none' (the last EMA output).
    noise_factor: the noise rule stops once the residual std <= noise_factor x sigma (> 1 stops sooner).
    init: 'none' (default: a random start and the seed's loop), a shipped initialisation's name ('polyu_masked') or
    a safetensors file (see `bdn dip-init`); an initialisation fixes the net, input and fit settings.
    net_type, lr: override the generator ('skip', 'skip_light') and the learning rate.
    minutes: a time budget: the fit ends at the first iteration past it (or sooner, when the judge stops it) and
    gives the judge's choice if it has made one, else the EMA output then. On a CPU the seed's loop costs seconds
    an iteration at 512x512 (7.7 s with 2 threads on this project's Xeon), so a budget bounds a run that the judge
    would let go on for hours.
    """
    import time

    from bdn.dip.fit import fit_dip

    if minutes is not None and (isinstance(minutes, bool) or not isinstance(minutes, int | float) or not minutes > 0):
        raise BdnError(f"dip: minutes must be a number > 0, got {minutes!r}")
    job = prepare(image, sigma, iterations, stop, init, net_type, lr, seed, noise_factor)
    deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
    result = fit_dip(
        job.padded,
        None,
        job.config,
        device=device,
        init_state=job.init_state,
        judge=job.judge,
        progress=progress,
        on_iteration=None if deadline is None else (lambda iteration, frame: time.monotonic() >= deadline),
    )
    return job.crop(result.judge_image if result.judge_image is not None else result.ema)
