"""DIP as a method of `bdn.denoise()` and `bdn denoise --method dip`: one image in, its denoised version out.

Any image size: the image is padded by reflection up to the sides the generator needs (multiples of 2**scales,
at least its smallest side), fitted, and the padding cut off again; an image too large for the memory at hand is
fitted in overlapping tiles blended back. No clean image exists here. By default the seed's loop runs from a random
start on bdn's lean generator (`DEFAULT_NET_TYPE`, in bf16 where the CPU or GPU has it) and a judge that needs no
clean image (the noise rule) decides when to stop and which iterate to keep; `net_type="skip"` is the seed's own
net. `init="polyu_masked"` starts from the shipped masked initialisation and runs a blind-spot fit for a fixed
budget instead, keeping the last EMA output (lower on real camera noise).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
import warnings

import numpy as np

from bdn.errors import BdnError, BdnWarning

__all__ = [
    "DEFAULT_INIT",
    "DEFAULT_ITERATIONS",
    "DEFAULT_NET_TYPE",
    "DEFAULT_STOP",
    "DipJob",
    "better_than_input",
    "default_iterations",
    "dip",
    "pad_for_net",
    "plan_tiles",
    "prepare",
]

# bdn's default is the seed's loop from a random start, stopped by the noise rule: measured on issue 3's five CC
# crops, the shipped masked initialisation's blind-spot fit ('polyu_masked': fast, no judge needed) kept 35.81 dB
# on average, under non-local means on the same crops (35.96) and 1.5 dB under the seed's loop's peak
# (benchmarks/records/dip_default_cc_cpu.md), so it is offered, not chosen.
DEFAULT_INIT = "none"
# The generator of a fit from a random start: the seed's skip hourglass at 64 channels with zero padding, chosen on
# PolyU-train crops (benchmarks/records/dip_lean_polyu_train_cpu.md): the seed's peak in as many iterations, each
# several times cheaper (benchmarks/records/dip_speed_cpu.md).
DEFAULT_NET_TYPE = "skip64"
DEFAULT_ITERATIONS = {"masked": 400, "none": 3000}  # by kind of fit: blind-spot, or the seed's loop
# The seed's loop peaks later on a larger image: on PolyU-train, 256x256 crops at iteration 2,074 on average (540 to
# 3,000), 512x512 images at 5,105 (4,200 to 6,000), where a cap of 3,000 loses 0.44 dB on average (up to 1.44) even
# with a perfect judge (benchmarks/records/dip_peaks_skip64_cpu.md). So its cap grows with the image's side
# (the square root of its pixels) from 3,000 at 256 to twice that at 512, and no further: nothing was measured
# above 512, and a larger image costs more per iteration too (`iterations` asks for more).
ITERATIONS_SIDE = 256  # the side up to which DEFAULT_ITERATIONS holds as it is
ITERATIONS_MOST_SCALE = 2.0  # the cap at 512 pixels a side and above: DEFAULT_ITERATIONS x this
STOPS = ("auto", "noise", "wmv", "emv", "none")
DEFAULT_STOP = "auto"  # 'none' for a blind-spot fit, 'noise' for the seed's loop
TILE_OVERLAP = 32  # pixels two neighbouring tiles share, blended linearly
# The noise rule's factor (residual <= factor x estimated sigma); see benchmarks/dip_noise_rule.py.
DEFAULT_NOISE_FACTOR = 1.0


def default_iterations(height: int, width: int, masked: bool = False) -> int:
    """The most iterations a fit of an image this size runs by default (see ITERATIONS_SIDE): 400 for a blind-spot
    fit; for the seed's loop 3,000 up to 256x256 pixels, growing with the side to 6,000 at 512x512 and above."""
    if masked:
        return DEFAULT_ITERATIONS["masked"]
    side = math.sqrt(height * width)
    scale = min(ITERATIONS_MOST_SCALE, max(1.0, side / ITERATIONS_SIDE))
    return int(round(DEFAULT_ITERATIONS["none"] * scale))


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
    precision: str = "auto",
) -> DipJob:
    """Everything `dip()` decides before fitting (benchmarks use it to fit exactly what users get)."""
    from bdn.dip.config import DipConfig
    from bdn.dip.judges import make_judge
    from bdn.dip.nets import min_size, smallest_side

    if stop not in STOPS:
        raise BdnError(f"dip: stop must be one of {', '.join(STOPS)}, got {stop!r}")
    init = None if init in (None, "none") else init
    metadata = {}
    config = DipConfig(net_type=DEFAULT_NET_TYPE, seed=seed, precision=precision)
    init_state = None
    if init is not None:
        from bdn.dip.init import check_init_fits, config_for_init, load_init

        init_state, metadata = load_init(init)
        config = config_for_init(metadata, config)
        if net_type is not None and net_type != config.net_type:
            raise BdnError(f"dip: init {init} is for net {config.net_type!r}; leave net_type out or use another init")
    masked = config.mask_ratio > 0
    if iterations is None:
        iterations = default_iterations(*image.shape[:2], masked=masked)
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


def better_than_input(candidate: np.ndarray, noisy: np.ndarray, sigma: float) -> tuple[bool, float]:
    """Whether `candidate` is estimated closer to the clean image than `noisy` is, from the noise level alone.

    With y = x + n and an estimate x' that has not yet fitted the noise, mean((y - x')^2) ~ mean((x - x')^2) +
    sigma^2, so x' has the smaller error iff its residual std against y is below sqrt(2) sigma. An early, blurry
    iterate fails this (it has removed image as well as noise). Returns (better, residual std in 0-255 units).
    """
    residual = float(np.sqrt(np.mean((np.asarray(candidate, np.float64) - noisy) ** 2)) * 255.0)
    return residual < math.sqrt(2.0) * sigma, residual


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Tiles (top, left, bottom, right) of at most tile x tile pixels covering the image, neighbours sharing at
    least `overlap` pixels (for blending); one tile when the image fits in one."""

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        count = math.ceil((size - overlap) / (tile - overlap))
        return [round(i * (size - tile) / (count - 1)) for i in range(count)]

    return [
        (top, left, min(top + tile, height), min(left + tile, width))
        for top in starts(height)
        for left in starts(width)
    ]


def _blend_weight(box: tuple[int, int, int, int], height: int, width: int, overlap: int) -> np.ndarray:
    """Weights that rise linearly across `overlap` pixels on the tile's sides that face a neighbour."""
    top, left, bottom, right = box

    def ramp(start: int, stop: int, size: int) -> np.ndarray:
        n = stop - start
        ramp_up = np.minimum(1.0, (np.arange(n) + 1.0) / (overlap + 1.0))
        weight = np.ones(n)
        if start > 0:
            weight = np.minimum(weight, ramp_up)
        if stop < size:
            weight = np.minimum(weight, ramp_up[::-1])
        return weight

    return np.outer(ramp(top, bottom, height), ramp(left, right, width)).astype(np.float32)


@contextlib.contextmanager
def _torch_threads(threads: int | None):
    """Run with `threads` torch threads, and give the process its own number back afterwards."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_number(name: str, value: object, integer: bool = False, least: float = 0.0) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > least or not math.isfinite(value):
        what = "a whole number" if integer else "a number"
        raise BdnError(f"dip: {name} must be {what} > {least:g}, got {value!r}")


def _fit_one(
    job: DipJob, image: np.ndarray, sigma: float, minutes: float | None, device, progress: bool
) -> tuple[np.ndarray, str | None]:
    """One DIP fit of `image` (prepared as `job`) as `dip()` does it; returns the image to keep and a note for the
    user (or None)."""
    from bdn.dip.fit import fit_dip

    deadline = None if minutes is None else time.monotonic() + 60.0 * minutes
    ran_out: list[int] = []

    def out_of_time(iteration: int, frame) -> bool:
        if time.monotonic() >= deadline:
            ran_out.append(iteration)
            return True
        return False

    result = fit_dip(
        job.padded,
        None,
        job.config,
        device=device,
        init_state=job.init_state,
        judge=job.judge,
        progress=progress,
        on_iteration=None if deadline is None else out_of_time,
    )
    chosen = job.crop(result.judge_image if result.judge_image is not None else result.ema)
    if not ran_out or job.judge is None:  # finished as planned: the judge's choice, or the last EMA output
        return chosen, None
    # The budget ended the fit before its judge stopped it: keep what the judge holds only if the noise level says
    # it beats the input (an early iterate is blurry), else the input itself.
    iteration = result.judge_iteration if result.judge_image is not None else result.iterations
    better, residual = better_than_input(chosen, image, sigma)
    head = f"the {minutes:g}-minute budget ended the fit at iteration {ran_out[0]}, before its judge "
    head += f"({job.judge.name}) chose"
    if better:
        return chosen, f"{head}; kept iteration {iteration}, estimated better than the input"
    return image.astype(np.float32), (
        f"{head}; returned the input unchanged: iteration {iteration} still differs from it by {residual:.1f} "
        f"(0-255), more than noise of sigma {sigma:.1f} explains (give more minutes)"
    )


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
    precision: str = "auto",
    threads: int | None = None,
    tile: int | None = None,
    memory_gb: float | None = None,
) -> np.ndarray:
    """Deep Image Prior on one image (float [0, 1], grey or RGB); returns the chosen EMA output, same shape.

    Any image size: the image is padded by reflection up to the sides the generator needs, fitted, and the
    padding cut off again; an image too large for the memory at hand is fitted in overlapping tiles blended back.
    By default the seed's loop runs from a random start on bdn's lean generator (``DEFAULT_NET_TYPE``) and the
    noise rule, which needs no clean image, decides when to stop and which iterate to keep (see the module
    docstring). This is the 'dip' method of `bdn.denoise` and `bdn denoise --method dip`.

    Parameters
    ----------
    image : numpy.ndarray
        The noisy image, float32 (H, W) or (H, W, 3) in [0, 1]; any size (padded to the net's sides inside).
    sigma : float, optional
        The noise level (0-255) for the 'noise' judge and the budget's safety check; estimated when left out
        (`bdn.noise.estimate_noise_level`, once for all tiles).
    iterations : int, optional
        The most iterations to run (default 400 for the blind-spot fit; for the seed's loop 3000 up to 256x256
        pixels, growing with the side to 6000 at 512x512 and above: `default_iterations`).
    stop : {'auto', 'noise', 'wmv', 'emv', 'none'}, default 'auto'
        The judge that stops the fit and chooses the iterate: 'auto' ('none' for a blind-spot fit, 'noise'
        otherwise), 'noise' (discrepancy principle), 'wmv' or 'emv' (ES-WMV, ES-EMV), 'none' (the last EMA output).
    init : str, default 'none'
        'none' (a random start), a shipped initialisation's name ('polyu_masked': a blind-spot fit for a fixed
        budget, keeping the last EMA output) or a safetensors file (see `bdn dip-init`); an initialisation fixes
        the net, input and fit settings.
    net_type, lr : str, float, optional
        Override the generator ('skip64', the default ``DEFAULT_NET_TYPE``; 'skip', the seed's own net;
        'skip_light') and the learning rate.
    device : str, default 'auto'
        'auto' (cuda, else mps, else cpu) or a torch device name.
    seed : int, default 0
        Seeds the fit: on the CPU the same call gives the same output (a `minutes` budget aside).
    noise_factor : float, default 1.0
        The noise rule stops once the residual std <= noise_factor x sigma (> 1 stops sooner).
    progress : bool, default False
        Show a progress bar.
    minutes : float, optional
        A time budget (split evenly over tiles). A fit that it ends before the judge has chosen keeps the
        judge's current iterate only if the noise level says it beats the input (`better_than_input`), else
        returns the input; either way a `BdnWarning` says which.
    precision : {'auto', 'fp32', 'bf16'}, default 'auto'
        'auto': bf16 where the CPU has AMX / AVX512-BF16 or the GPU bf16, else fp32.
    threads : int, optional
        Torch threads for this call (the process's own number is restored after).
    tile : int, optional
        Fit tiles of at most tile x tile pixels (>= 64), blended over 32-pixel overlaps. Left out, tiles are used
        only when the whole image would need more memory than `memory_gb` (see bdn/dip/memory.py), with a
        `BdnWarning`.
    memory_gb : float, optional
        The memory a fit may use (default: BDN_DIP_MEMORY_GB, else 70 % of the memory available now).

    Returns
    -------
    numpy.ndarray
        float32, the image's shape: the EMA output at the judge's choice (the last one with stop 'none').

    Raises
    ------
    BdnError
        For an unknown stop, init, net_type, device or precision; iterations, minutes, threads or tile that are
        not valid numbers; an initialisation that does not fit the image's channels; and memory too small for
        even a 64x64 tile.

    Examples
    --------
    >>> import bdn
    >>> from bdn.dip.denoise import dip
    >>> from skimage import data
    >>> noisy = bdn.add_noise(data.camera()[::16, ::16] / 255.0, "gaussian", 25, seed=0)  # 32x32 grey
    >>> out = dip(noisy, iterations=5)  # a real fit this size runs up to 3000, stopped by the noise rule
    >>> out.shape, out.dtype
    ((32, 32), dtype('float32'))
    >>> out = bdn.denoise(noisy, method="dip", iterations=5, stop="none")  # the same through bdn.denoise
    >>> clean = dip(noisy, minutes=5)  # doctest: +SKIP
    """
    from bdn.devices import pick_device
    from bdn.dip.memory import job_bytes, memory_budget_bytes
    from bdn.dip.precision import resolve_precision
    from bdn.noise import estimate_noise_level

    _check_number("minutes", minutes)
    _check_number("threads", threads, integer=True)
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int | np.integer) or tile < 64):
        raise BdnError(f"dip: tile must be a whole number of pixels >= 64, got {tile!r}")
    dev = pick_device(device, what="dip: device")
    options = dict(iterations=iterations, stop=stop, init=init, net_type=net_type, lr=lr, seed=seed)
    options.update(noise_factor=noise_factor, precision=resolve_precision(precision, dev))
    with _torch_threads(None if threads is None else int(threads)):
        if stop not in STOPS:
            raise BdnError(f"dip: stop must be one of {', '.join(STOPS)}, got {stop!r}")
        # One blind estimate for the noise rule and the budget's check, shared by every tile (not one per judge).
        sigma = float(sigma) if sigma is not None else float(estimate_noise_level(image))
        whole = prepare(image, sigma, **options)  # checks the other options before any fitting
        budget = memory_budget_bytes(memory_gb)
        height, width = image.shape[:2]
        tile_asked = tile
        if tile is None and job_bytes(whole) > budget:
            tile = next((t for t in range(1024, 63, -64) if job_bytes(whole, t, t) <= budget), None)
            if tile is None:
                raise BdnError(
                    f"dip: even a 64x64 tile needs more than the memory limit of {budget / 2**30:.1f} GB "
                    "(raise memory_gb or BDN_DIP_MEMORY_GB)"
                )
        boxes = plan_tiles(height, width, tile, TILE_OVERLAP) if tile is not None else [(0, 0, height, width)]
        if len(boxes) == 1:
            result, note = _fit_one(whole, image, sigma, minutes, dev, progress)
            if note:
                warnings.warn(note, BdnWarning, stacklevel=2)
            return result
        why = (
            f"the whole image would need {job_bytes(whole, height, width) / 2**30:.1f} GB, over the "
            f"{budget / 2**30:.1f} GB limit; see memory_gb"
            if tile_asked is None
            else "as asked"
        )
        warnings.warn(
            f"DIP on {width}x{height} pixels in {len(boxes)} tiles of at most {tile}x{tile}, blended over "
            f"{TILE_OVERLAP} pixels ({why})",
            BdnWarning,
            stacklevel=2,
        )
        total = np.zeros(image.shape, np.float64)
        weights = np.zeros((height, width), np.float64)
        share = None if minutes is None else minutes / len(boxes)
        notes = []
        for box in boxes:
            top, left, bottom, right = box
            part = image[top:bottom, left:right]
            part, note = _fit_one(prepare(part, sigma, **options), part, sigma, share, dev, progress)
            notes += [note] if note else []
            weight = _blend_weight(box, height, width, TILE_OVERLAP)
            total[top:bottom, left:right] += part * (weight[..., None] if part.ndim == 3 else weight)
            weights[top:bottom, left:right] += weight
        if notes:
            unchanged = sum("returned the input unchanged" in note for note in notes)
            warnings.warn(
                f"the {minutes:g}-minute budget ended {len(notes)} of {len(boxes)} tile fits before their judge "
                f"chose: {len(notes) - unchanged} kept an iterate estimated better than their input, {unchanged} "
                "returned their input unchanged (give more minutes)",
                BdnWarning,
                stacklevel=2,
            )
        return (total / (weights[..., None] if image.ndim == 3 else weights)).astype(np.float32)
