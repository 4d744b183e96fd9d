"""BIQAN as a DIP judge: bdn's judge protocol (bdn/dip/judges.py) over the quality network's score.

    judge = BiqanJudge(model, protocol="native", crop=224, start_index=40, smooth=0.8, patience=20, every=20)
    stop = judge.update(iteration, ema_output)  # inside the DIP loop, or offline over a run's snapshots
    judge.choice()                               # the chosen iteration

It does online, one iterate at a time, what `biqan.select.choose` does over a scored run: the mean score of each
scored iterate (the 8-bit quantised EMA output, as run_BDN saves it, through the scoring transform and the net),
low-pass filtered from the first scored iterate (s_0 = x_0, s_t = smooth s_(t-1) + (1 - smooth) x_t; no filter
with smooth None), and the choice is the highest filtered score after the first `start_index` scored iterates
(among all of them while there are no more than that; ties to the earliest). Replayed over a run's snapshots with
every=1, it chooses what `choose(score_run(...), start_index, smooth)` chooses. `every` scores only the iterations
divisible by it: with run_BDN's save_iter it scores the iterates that are saved, and `start_index` then counts
saved iterates as the seed's did. It says stop once `patience` scored iterates after the first `start_index` have
not raised the best filtered score (never with patience None). `tiles` k > 1 scores each iterate as the mean
distribution over a k x k grid of crops (`biqan.model.prepare_tiles`) instead of its centre crop.

Each scored iterate costs one forward pass and one read of its score on the host. `state()` holds the scores seen
(plain numbers) so that `load_state` on a judge made with the same options goes on exactly as before. The network
itself is not part of the state: give the resumed judge the same one.

biqan builds on bdn's ground floor only, so this file repeats the few lines of bookkeeping bdn.dip.judges shares.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from bdn.errors import BdnError
from bdn.tensors import rounded_to_8bit
from biqan.select import START_INDEX, Transform, check_smooth, default_transform, distribution_stats, score_images

__all__ = ["BiqanJudge"]


def _whole(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise BdnError(f"judge biqan: {name} must be an integer >= {least}, got {value!r}")
    return int(value)


class BiqanJudge:
    """The BIQAN judge (name 'biqan', fed the EMA output); see the module docstring.

    bdn's judge protocol (bdn/dip/judges.py): ``update(iteration, image)`` scores an iterate and says whether to
    stop, ``choice()`` is the chosen iteration, ``state()`` / ``load_state()`` resume it. `bdn run --stop biqan`
    and `fit_dip(judge=...)` feed it; replayed over a run's snapshots with every=1 it chooses what
    ``biqan.select.choose(score_run(...), start_index, smooth)`` chooses.

    Parameters
    ----------
    model : torch.nn.Module, optional
        A BIQAN (float [N,3,H,W] in [0,1] -> probabilities [N,10]). Left out, the network is loaded from
        `model_path`, else the one that ships with bdn (`biqan.model.shipped_biqan`), and `protocol` and `crop`
        default to the checkpoint's.
    protocol : {'native', 'resize'}, optional
        The scoring transform's protocol (`biqan.model.prepare`); default the checkpoint's, else 'native'.
    crop : int, optional
        The crop side in pixels (at least 32); default the checkpoint's, else 224.
    start_index : int, default 40
        The choice is the best filtered score after the first `start_index` scored iterates (among all of them
        while there are no more than that; ties to the earliest).
    smooth : float, optional
        Low-pass factor of the mean scores (s_0 = x_0, s_t = smooth s_(t-1) + (1 - smooth) x_t; the seed's 0.8);
        None: no filter.
    patience : int, optional
        Say stop once this many scored iterates after the first `start_index` have not raised the best filtered
        score; None: never.
    every : int, default 1
        Score only the iterations divisible by it (with run_BDN's save_iter: the iterates that are saved;
        `start_index` then counts saved iterates as the seed's did).
    model_path : str or pathlib.Path, optional
        A `bdn train-biqan` (train_BIQAN.py) checkpoint, read with `biqan.model.load_biqan`.
    device : str or torch.device, optional
        Moves the model there (default: where it is).
    transform : callable, optional
        Replaces the scoring transform (default ``biqan.model.prepare(image, protocol, crop)``).
    tiles : int, default 1
        k > 1 scores each iterate as the mean distribution over a k x k grid of crops
        (`biqan.model.prepare_tiles`) instead of its centre crop.

    Raises
    ------
    BdnError
        For options that are not whole numbers in range, a bad `smooth`, and a checkpoint `load_biqan` refuses (or
        no shipped one when neither `model` nor `model_path` is given); `update` for iterations that do not
        increase, `choice` before any iterate.

    Examples
    --------
    >>> import numpy as np
    >>> from biqan.judge import BiqanJudge
    >>> judge = BiqanJudge(crop=64, start_index=2, patience=3)  # the shipped network
    >>> rng = np.random.default_rng(0)
    >>> for iteration in range(1, 21):
    ...     if judge.update(iteration, rng.random((64, 64, 3))):
    ...         break
    >>> 3 <= judge.choice() <= iteration
    True

    Inside a DIP fit (here 10 iterations of a 64x64 image; a real fit runs thousands, with ``every=20``):

    >>> import bdn
    >>> from bdn.dip import DipConfig, fit_dip
    >>> noisy = bdn.add_noise(np.full((64, 64, 3), 0.5), "gaussian", 25, seed=0)
    >>> judge = BiqanJudge(crop=64, start_index=2)
    >>> result = fit_dip(noisy, config=DipConfig(net_type="skip64", num_iter=10), judge=judge, progress=False)
    >>> result.judge_name, 3 <= result.judge_iteration <= 10
    ('biqan', True)
    """

    source = "ema"

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        protocol: str | None = None,
        crop: int | None = None,
        start_index: int = START_INDEX,
        smooth: float | None = None,
        patience: int | None = None,
        every: int = 1,
        *,
        model_path: str | Path | None = None,
        device: str | torch.device | None = None,
        transform: Transform | None = None,
        tiles: int = 1,
    ) -> None:
        self.name = "biqan"
        if model is None:
            from biqan.model import load_biqan, shipped_biqan

            model, metadata = load_biqan(shipped_biqan() if model_path is None else model_path)
            protocol = str(metadata.get("protocol", "native")) if protocol is None else protocol
            crop = int(metadata.get("crop", 224)) if crop is None else crop
        self.protocol = "native" if protocol is None else str(protocol)
        self.crop = 224 if crop is None else _whole("crop", crop, 1)
        self.start_index = _whole("start_index", start_index, 0)
        try:
            self.smooth = check_smooth(smooth)
        except BdnError as error:
            raise BdnError(f"judge biqan: {error}") from None
        self.patience = None if patience is None else _whole("patience", patience, 1)
        self.every = _whole("every", every, 1)
        if device is not None:
            model.to(device)
        self.model = model.eval()
        self.tiles = _whole("tiles", tiles, 1)
        self._transform = default_transform(self.protocol, self.crop, self.tiles) if transform is None else transform
        self._last: int | None = None
        self._count = 0
        self._rows: list[tuple[int, float, float, float]] = []  # (iteration, mean, std, filtered) per scored
        self._first_best: int | None = None  # row index: best filtered score among the first start_index
        self._best: int | None = None  # row index: best filtered score after them
        self._since_best = 0
        self.stopped = False

    def _options(self) -> dict:
        options = {
            "protocol": self.protocol,
            "crop": self.crop,
            "start_index": self.start_index,
            "smooth": self.smooth,
            "patience": self.patience,
            "every": self.every,
        }
        if self.tiles != 1:  # only then, so states saved before the option existed still load
            options["tiles"] = self.tiles
        return options

    # --- the protocol -----------------------------------------------------------------------------------------

    def update(self, iteration: int, image: np.ndarray | torch.Tensor) -> bool:
        iteration = int(iteration)
        if self._last is not None and iteration <= self._last:
            raise BdnError(f"judge biqan: iterations must increase, got {iteration} after {self._last}")
        self._last = iteration
        self._count += 1
        if iteration % self.every == 0:
            mean, std = distribution_stats(score_images(self.model, [rounded_to_8bit(image)], self._transform))
            self._add(iteration, float(mean[0]), float(std[0]))
        return self.stopped

    def _add(self, iteration: int, mean: float, std: float) -> None:
        if not self._rows or self.smooth is None:
            figure = mean
        else:
            figure = self.smooth * self._rows[-1][3] + (1.0 - self.smooth) * mean
        self._rows.append((iteration, mean, std, figure))
        self._rank(len(self._rows) - 1)

    def _value(self, index: int | None) -> float:
        figure = self._rows[index][3]
        return -math.inf if math.isnan(figure) else figure  # NaN never wins over a number

    def _rank(self, index: int) -> None:
        """The running argmax of `biqan.select.pick`: before start_index among all, after it among the rest."""
        value = self._value(index)
        if index < self.start_index:
            if self._first_best is None or value > self._value(self._first_best):
                self._first_best = index
            return
        if self._best is None or value > self._value(self._best):
            self._best, self._since_best = index, 0
        else:
            self._since_best += 1
            if self.patience is not None and self._since_best >= self.patience:
                self.stopped = True

    def _chosen_row(self) -> int | None:
        return self._best if self._best is not None else self._first_best

    def chosen_image(self) -> None:
        """None: the judge keeps scores, not images (the run's snapshot at its choice is the image)."""
        return None

    @property
    def latest_choice(self) -> int | None:
        """The choice so far (None before any iterate); every score is on the host already, so no sync."""
        row = self._chosen_row()
        return self._rows[row][0] if row is not None else self._last

    def choice(self) -> int:
        if self._last is None:
            raise BdnError("judge biqan: no iterate seen yet, nothing to choose")
        return self.latest_choice

    @property
    def note(self) -> str | None:
        """A line when the choice is among all scored iterates because there are no more than start_index."""
        n = len(self._rows)
        if 0 < n <= self.start_index:
            return f"only {n} iterates, not more than start_index {self.start_index}: chose among all of them"
        return None

    @property
    def scores(self) -> list[tuple[int, float]]:
        """(iteration, filtered mean score) per scored iterate: the figure the judge decides by."""
        return [(i, f) for i, _, _, f in self._rows]

    @property
    def mean_scores(self) -> list[tuple[int, float, float]]:
        """(iteration, mean score, std of the score distribution) per scored iterate."""
        return [(i, m, s) for i, m, s, _ in self._rows]

    # --- resuming ---------------------------------------------------------------------------------------------

    def state(self) -> dict:
        """What the judge has seen: the scores (float64 [N, 4]: iteration, mean, std, filtered) and its counters."""
        return {
            "judge": self.name,
            "options": self._options(),
            "seen": {"last": self._last, "count": self._count},
            "rows": torch.tensor(self._rows, dtype=torch.float64).reshape(-1, 4),
            "since_best": self._since_best,
            "stopped": self.stopped,
        }

    def load_state(self, state: dict, device: torch.device | None = None) -> None:
        """Put back `state()`'s content (the device is not needed: every figure is a host number)."""
        if not isinstance(state, dict) or state.get("judge") != self.name:
            made = state.get("judge") if isinstance(state, dict) else None
            raise BdnError(f"judge biqan: the saved state is not this judge's (it names judge {made!r})")
        if state.get("options") != self._options():
            saved = state.get("options")
            raise BdnError(f"judge biqan: the saved state was made with {saved!r}, this judge has {self._options()!r}")
        try:
            rows = state["rows"]
            if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or rows.shape[1] != 4:
                raise ValueError("rows must be a [N, 4] tensor")
            last, count = state["seen"]["last"], int(state["seen"]["count"])
            since_best, stopped = int(state["since_best"]), bool(state["stopped"])
        except (KeyError, TypeError, ValueError) as error:
            detail = " ".join(str(error).split())[:120]
            raise BdnError(f"judge biqan: the saved state is damaged ({type(error).__name__}: {detail})") from None
        self._rows, self._first_best, self._best = [], None, None
        for i, mean, std, figure in rows.tolist():
            self._rows.append((int(i), mean, std, figure))
            self._rank(len(self._rows) - 1)
        self._last = None if last is None else int(last)
        self._count, self._since_best, self.stopped = count, since_best, stopped
