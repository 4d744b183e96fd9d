"""Stopping and selection rules for DIP: which iterate to keep, and when to stop fitting.

One interface for every judge (SPEC.md, "Stopping"): `update(iteration, image) -> bool` sees the iterates one at a
time and returns True when the fit should stop now; `choice() -> int` names the chosen iteration; `name` says
which rule it is. Online, `fit_dip(judge=...)` feeds every iteration; offline, a caller replays a run's snapshots
through the same calls.

Images may be numpy arrays (H, W) / (H, W, 3) or torch tensors in any layout ((C, H, W), (1, C, H, W)); the
variance judges only need the values, so they work on the tensor's own device without copying it to the host.
`source` says what a judge should be fed: the variance judges ('wmv', 'emv') follow ES-WMV and take the raw
network output (the EMA would smooth away the variance they measure); 'oracle' and 'none' take the EMA output,
which is what bdn saves and selects from.

Host syncs: a judge that must decide whether to stop needs its variance on the host. `sync_every` > 1 lets the
variance judges batch those reads (one transfer per `sync_every` updates on a GPU); the decision to stop then
comes up to `sync_every - 1` updates late, and the chosen iteration is unchanged.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from bdn.errors import BdnError

__all__ = [
    "JUDGES",
    "EMVJudge",
    "Judge",
    "NoneJudge",
    "OracleJudge",
    "WMVJudge",
    "make_judge",
]


@runtime_checkable
class Judge(Protocol):
    """What the DIP loop and offline replays need of a judge."""

    name: str
    source: str  # "raw" or "ema": which output the judge is meant to see

    def update(self, iteration: int, image: np.ndarray | torch.Tensor) -> bool:
        """See one iterate; True means stop now."""
        ...

    def choice(self) -> int:
        """The chosen iteration (BdnError if nothing was seen)."""
        ...


def _float_dtype(device: torch.device) -> torch.dtype:
    # Running sums lose digits in float32; MPS has no float64, so it keeps float32 (and re-sums more often).
    return torch.float32 if device.type == "mps" else torch.float64


def _values(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The image's values as a flat float tensor of their own (a copy: callers may reuse their buffers).

    float32 stays float32 (a window of 100 colour 512x512 iterates holds 315 MB, not twice that); sums over
    the values are taken in `_float_dtype`.
    """
    x = image.detach() if isinstance(image, torch.Tensor) else torch.from_numpy(np.asarray(image))
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    return x.to(dtype, copy=True).reshape(-1)


def _hwc(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A bdn image (H, W) or (H, W, 3), float32, from numpy or from a tensor in (C, H, W) or (1, C, H, W)."""
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        if x.ndim == 4:
            x = x[0]
        if x.ndim == 3:
            x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
        return x.numpy().astype(np.float32, copy=True)
    return np.array(image, dtype=np.float32, copy=True)


class _Seen:
    """Bookkeeping common to every judge: the iterations seen, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: int | None = None
        self.count = 0

    def see(self, iteration: int) -> None:
        iteration = int(iteration)
        if self.last is not None and iteration <= self.last:
            raise BdnError(f"judge {self.name}: iterations must increase, got {iteration} after {self.last}")
        self.last = iteration
        self.count += 1

    def require(self) -> int:
        if self.last is None:
            raise BdnError(f"judge {self.name}: no iterate seen yet, nothing to choose")
        return self.last


class _MinTracker:
    """Minimum of a score over updates, with a patience counter and host reads batched `sync_every` at a time."""

    def __init__(self, patience: int, sync_every: int) -> None:
        self.patience = patience
        self.sync_every = sync_every
        self.pending: list[tuple[int, torch.Tensor]] = []
        self.best = math.inf
        self.best_iteration: int | None = None
        self.since_best = 0
        self.stopped = False
        self.scores: list[tuple[int, float]] = []  # (iteration, score), for curves and tests
        self.improved: list[int] = []  # iterations that set a new minimum in the latest resolve

    def add(self, iteration: int, score: torch.Tensor) -> None:
        self.pending.append((iteration, score))
        if len(self.pending) >= self.sync_every:
            self.resolve()

    def resolve(self) -> None:
        """Bring pending scores to the host (one transfer) and run the minimum and patience rules over them."""
        self.improved = []
        if not self.pending:
            return
        values = torch.stack([s for _, s in self.pending]).tolist()
        for (iteration, _), value in zip(self.pending, values, strict=True):
            self.scores.append((iteration, value))
            if value < self.best:  # NaN never wins
                self.best, self.best_iteration, self.since_best = value, iteration, 0
                self.improved.append(iteration)
            else:
                self.since_best += 1
                if self.since_best >= self.patience:
                    self.stopped = True
        self.pending = []


def _check_int(judge: str, name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise BdnError(f"judge {judge}: {name} must be an integer >= {least}, got {value!r}")
    return int(value)


class WMVJudge:
    """ES-WMV (Wang et al., TMLR 2023): stop when the windowed moving variance of the iterates stops falling.

    Keeps the last `window` iterates. Their variance is the mean over the window of each iterate's mean squared
    difference to the window's mean image, kept with running sums (the sum image S and the sum of squared norms
    Q: var = (Q - |S|^2 / W) / (W n)), so an update costs O(n) whatever W is, and memory is W images. The sums
    are recomputed from the window every `window` updates so that rounding cannot drift. The chosen iteration is
    the newest iterate of the window with the least variance; the fit stops after `patience` variance updates
    with no new minimum.
    """

    source = "raw"

    def __init__(self, window: int = 100, patience: int = 1000, sync_every: int = 1) -> None:
        self.name = "wmv"
        self.window = _check_int(self.name, "window", window, 2)
        self.patience = _check_int(self.name, "patience", patience, 1)
        sync_every = _check_int(self.name, "sync_every", sync_every, 1)
        if sync_every > self.window:
            raise BdnError(f"judge wmv: sync_every ({sync_every}) must not exceed the window ({self.window})")
        self._seen = _Seen(self.name)
        self._track = _MinTracker(self.patience, sync_every)
        self._frames: deque[tuple[int, torch.Tensor, torch.Tensor]] = deque()  # (iteration, values, |values|^2)
        self._sum: torch.Tensor | None = None
        self._sumsq: torch.Tensor | None = None
        self._shape: tuple[int, ...] | None = None
        self._fed_tensors = False
        self._best_image: torch.Tensor | None = None

    def update(self, iteration: int, image: np.ndarray | torch.Tensor) -> bool:
        self._seen.see(iteration)
        x = _values(image)
        self._shape, self._fed_tensors = tuple(image.shape), isinstance(image, torch.Tensor)
        wide = x.to(_float_dtype(x.device))
        norm = torch.dot(wide, wide)
        if self._sum is None or self._sum.shape != x.shape or self._sum.device != x.device:
            self._frames.clear()
            self._sum, self._sumsq = torch.zeros_like(wide), torch.zeros_like(norm)
        self._frames.append((int(iteration), x, norm))
        self._sum += wide
        self._sumsq += norm
        if len(self._frames) > self.window:
            _, old, old_norm = self._frames.popleft()
            self._sum -= old.to(self._sum.dtype)
            self._sumsq -= old_norm
        if self._seen.count % self.window == 0:
            self._resum()
        if len(self._frames) == self.window:
            self._track.add(int(iteration), self.variance_now())
            self._keep_best_image()
        return self._track.stopped

    def _resum(self) -> None:
        self._sum = torch.stack([x for _, x, _ in self._frames]).sum(0, dtype=self._sum.dtype)
        self._sumsq = torch.stack([n for _, _, n in self._frames]).sum()

    def variance_now(self) -> torch.Tensor:
        """The current window's variance (0-d tensor on the images' device); valid once the window is full."""
        w, n = len(self._frames), self._sum.numel()
        return (self._sumsq - torch.dot(self._sum, self._sum) / w) / (w * n)

    def _keep_best_image(self) -> None:
        # The newest iterate of a new minimum-variance window is still in the window when its score resolves
        # (sync_every <= window), so it can be kept before it slides out.
        if self._track.improved:
            newest = self._track.improved[-1]
            for iteration, x, _ in self._frames:
                if iteration == newest:
                    self._best_image = x  # the window's own copy: never modified in place
            self._track.improved = []

    @property
    def variances(self) -> list[tuple[int, float]]:
        """(iteration, window variance) for every full window so far."""
        self._track.resolve()
        self._keep_best_image()
        return list(self._track.scores)

    @property
    def latest_choice(self) -> int | None:
        """The choice as far as resolved scores go, without a host sync (exact when sync_every is 1)."""
        return self._track.best_iteration

    def choice(self) -> int:
        self._track.resolve()
        self._keep_best_image()
        last = self._seen.require()
        # Before the first full window there is no variance: the newest iterate is the best guess.
        return self._track.best_iteration if self._track.best_iteration is not None else last

    def chosen_image(self) -> np.ndarray | None:
        """The iterate at `choice()` as it was fed (float32, bdn layout for numpy input), or None if not kept."""
        self.choice()
        if self._best_image is None or self._shape is None:
            return None
        image = self._best_image.reshape(self._shape)
        return _hwc(image) if self._fed_tensors else image.numpy().astype(np.float32)


class EMVJudge:
    """ES-EMV: like ES-WMV, with an exponential moving mean and variance (constant memory: one mean image).

    With delta = x - mean: mean += alpha * delta; var = (1 - alpha) * (var + alpha * mean(delta^2)) (the
    exponentially weighted variance, averaged over pixels). The variance starts at 0, so the first `warmup`
    updates (default ceil(3 / alpha)) are not candidates; after that, the chosen iteration is the one with the
    least variance and the fit stops after `patience` updates with no new minimum.
    """

    source = "raw"

    def __init__(
        self, alpha: float = 0.1, patience: int = 1000, warmup: int | None = None, sync_every: int = 1
    ) -> None:
        self.name = "emv"
        if not isinstance(alpha, (int, float)) or not 0.0 < alpha < 1.0:
            raise BdnError(f"judge emv: alpha must be a number in (0, 1), got {alpha!r}")
        self.alpha = float(alpha)
        self.patience = _check_int(self.name, "patience", patience, 1)
        self.warmup = math.ceil(3 / self.alpha) if warmup is None else _check_int(self.name, "warmup", warmup, 0)
        self._track = _MinTracker(self.patience, _check_int(self.name, "sync_every", sync_every, 1))
        self._seen = _Seen(self.name)
        self._mean: torch.Tensor | None = None
        self._var: torch.Tensor | None = None

    def update(self, iteration: int, image: np.ndarray | torch.Tensor) -> bool:
        self._seen.see(iteration)
        x = _values(image)
        x = x.to(_float_dtype(x.device))
        if self._mean is None or self._mean.shape != x.shape or self._mean.device != x.device:
            self._mean, self._var = x, torch.zeros((), dtype=x.dtype, device=x.device)
        else:
            delta = x - self._mean
            self._mean = self._mean + self.alpha * delta
            self._var = (1 - self.alpha) * (self._var + self.alpha * torch.mean(delta * delta))
        if self._seen.count > self.warmup:
            self._track.add(int(iteration), self._var.clone())
        return self._track.stopped

    @property
    def variances(self) -> list[tuple[int, float]]:
        """(iteration, moving variance) for every update after the warm-up."""
        self._track.resolve()
        return list(self._track.scores)

    @property
    def latest_choice(self) -> int | None:
        return self._track.best_iteration

    def choice(self) -> int:
        self._track.resolve()
        last = self._seen.require()
        return self._track.best_iteration if self._track.best_iteration is not None else last


class OracleJudge:
    """The best iterate by PSNR against the clean image (bdn's PSNR: output clipped to [0, 1], data range 1).

    Needs the clean image, so it exists offline and for measurement only; it never stops a fit. Ties go to the
    earliest iteration. Tensors are compared on their device (no host sync until `choice()`).
    """

    source = "ema"

    def __init__(self, clean: np.ndarray) -> None:
        self.name = "oracle"
        self.clean = np.asarray(clean)
        if not (self.clean.ndim == 2 or (self.clean.ndim == 3 and self.clean.shape[2] == 3)):
            raise BdnError(f"judge oracle: clean image must be (H, W) or (H, W, 3), got shape {self.clean.shape}")
        self._seen = _Seen(self.name)
        self._iterations: list[int] = []
        self._psnrs: list[torch.Tensor] = []
        self._clean_chw: torch.Tensor | None = None
        self._best_psnr: torch.Tensor | None = None
        self._best_image: torch.Tensor | None = None

    def _reference(self, image: torch.Tensor) -> torch.Tensor:
        if self._clean_chw is None or self._clean_chw.device != image.device:
            c = torch.from_numpy(np.asarray(self.clean, dtype=np.float64))
            c = c[None] if c.ndim == 2 else c.permute(2, 0, 1)
            self._clean_chw = c.to(device=image.device, dtype=_float_dtype(image.device))
        return self._clean_chw

    def _as_chw(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            x = image.detach()
            x = x[0] if x.ndim == 4 else x
            x = x[None] if x.ndim == 2 else x
        else:
            arr = np.asarray(image, dtype=np.float64)
            x = torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        reference = self._reference(x)
        if x.shape != reference.shape:
            raise BdnError(f"judge oracle: iterate has shape {tuple(image.shape)}, clean image {self.clean.shape}")
        return x.to(reference.dtype)

    def update(self, iteration: int, image: np.ndarray | torch.Tensor) -> bool:
        self._seen.see(iteration)
        x = self._as_chw(image).clamp(0.0, 1.0)
        mse = torch.mean((x - self._clean_chw) ** 2)
        psnr = -10.0 * torch.log10(mse)
        self._iterations.append(int(iteration))
        self._psnrs.append(psnr)
        # Keep the best image on the device without asking the host which one it is.
        if self._best_psnr is None:
            self._best_psnr, self._best_image = psnr.clone(), x.clone()
        else:
            better = psnr > self._best_psnr
            self._best_psnr = torch.where(better, psnr, self._best_psnr)
            self._best_image = torch.where(better, x, self._best_image)
        return False

    @property
    def psnrs(self) -> list[tuple[int, float]]:
        """(iteration, PSNR) for every iterate seen."""
        values = torch.stack(self._psnrs).tolist() if self._psnrs else []
        return list(zip(self._iterations, values, strict=True))

    @property
    def latest_choice(self) -> int | None:
        return None  # resolved only by choice(): the oracle never needs the host during a fit

    def choice(self) -> int:
        self._seen.require()
        values = torch.stack(self._psnrs).tolist()
        return self._iterations[int(np.argmax(values))]  # argmax: the first of equal maxima

    def chosen_image(self) -> np.ndarray:
        self._seen.require()
        return _hwc(self._best_image)


class NoneJudge:
    """No rule: never stops, and chooses the last iterate (the seed's fixed iteration count)."""

    source = "ema"

    def __init__(self) -> None:
        self.name = "none"
        self._seen = _Seen(self.name)

    def update(self, iteration: int, image: np.ndarray | torch.Tensor) -> bool:
        self._seen.see(iteration)
        return False

    @property
    def latest_choice(self) -> int | None:
        return self._seen.last

    def choice(self) -> int:
        return self._seen.require()


JUDGES = {"oracle": OracleJudge, "wmv": WMVJudge, "emv": EMVJudge, "none": NoneJudge}


def make_judge(name: str, **kwargs: object) -> Judge:
    """A judge by name ('oracle' needs clean=...); BdnError for unknown names or options."""
    if name not in JUDGES:
        raise BdnError(f"unknown judge {name!r}: choose one of {', '.join(JUDGES)}")
    try:
        return JUDGES[name](**kwargs)
    except TypeError as error:  # a missing or unexpected option, said in the user's terms
        raise BdnError(f"judge {name}: {error}") from None
