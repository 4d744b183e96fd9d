"""The learned judge: one small linear model over what each judge sees, trained on PolyU-train's DIP snapshots.

Every saved snapshot k (an EMA iterate, `every` iterations apart) gets five figures, each computed from snapshots
0..k only, so the judge can run online (`bdn run --stop learned`) and offline (`bdn judge --judge learned`) alike:
- `rho`: log of the noise rule's residual variance mean((x - noisy)^2) over the estimated noise variance
  (sigma / 255)^2 (bdn.dip.judges.NoiseJudge's figures): about 0 where the residual is as large as the noise;
- `slope`: how fast that residual still falls: log residual now minus three snapshots ago (0 before);
- `wmv`: log of ES-WMV's windowed variance over the last three snapshots over its least value so far
  (bdn.dip.judges.WMVJudge's figures): 0 at a new minimum, where WMV would choose (0 before the first window);
- `biqan_rel`: BIQAN's mean score minus its best so far (biqan.judge.BiqanJudge's figures; 0 at a new best);
- `biqan_trend`: BIQAN's mean score now minus three snapshots ago (0 before).
The model predicts how far a snapshot is below the image's best PSNR (as a negative number of dB, gaps clipped at
3 dB), w . features + bias, fitted by ridge regression on PolyU's training split only (benchmarks/learned_judge.py).
The judge keeps the snapshot with the highest prediction so far; with `patience` it says stop once that many
snapshots have not raised it (never by default: the fit's own iteration count ends it).

The weights are a small JSON file: {"features": [...], "weights": [...], "bias": b, "trained_on": "...", ...};
`checkpoints/judge_learned.json` ships with bdn. Features and weights are listed in the README with what they
measured.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

from bdn.errors import BdnError

__all__ = ["FEATURES", "CombinedJudge", "feature_table", "load_weights", "shipped_weights"]

FEATURES = ("rho", "slope", "wmv", "biqan_rel", "biqan_trend")
LAG = 3  # snapshots back for `slope` and `biqan_trend`
WMV_WINDOW = 3  # snapshots in ES-WMV's window
WEIGHTS_NAME = "judge_learned.json"


def feature_table(residuals: np.ndarray, sigma: float, variances: np.ndarray, biqan_means: np.ndarray) -> np.ndarray:
    """The features of every snapshot, [N, len(FEATURES)], from its figures in iteration order.

    `residuals`: mean((x - noisy)^2) on [0, 1] images; `sigma`: the noise level (0-255) of the noisy image;
    `variances`: WMV's windowed variance (NaN before the first full window); `biqan_means`: BIQAN's mean score
    (NaN where not scored: its features are then 0). Each row uses that snapshot and earlier ones only.
    """
    residuals = np.asarray(residuals, dtype=np.float64)
    n = residuals.size
    log_res = np.log(np.maximum(residuals, 1e-12))
    rho = log_res - math.log(max((sigma / 255.0) ** 2, 1e-12))
    slope = np.zeros(n)
    slope[LAG:] = log_res[LAG:] - log_res[:-LAG]
    log_var = np.log(np.maximum(np.asarray(variances, dtype=np.float64), 1e-20))
    least = np.fmin.accumulate(log_var) if n else log_var
    wmv = np.nan_to_num(log_var - least, nan=0.0)
    scores = np.asarray(biqan_means, dtype=np.float64)
    best = np.fmax.accumulate(scores) if n else scores
    biqan_rel = np.nan_to_num(scores - best, nan=0.0)
    trend = np.zeros(n)
    trend[LAG:] = np.nan_to_num(scores[LAG:] - scores[:-LAG], nan=0.0)
    return np.stack([rho, slope, wmv, biqan_rel, trend], axis=1)


def shipped_weights() -> Path:
    """checkpoints/judge_learned.json as installed with bdn; BdnError when none ships."""
    from importlib import resources

    try:
        path = Path(str(resources.files("bdn.checkpoints") / WEIGHTS_NAME))
    except ModuleNotFoundError:
        path = Path(__file__).resolve().parent.parent / "checkpoints" / WEIGHTS_NAME
    if not path.is_file():
        raise BdnError(
            f"no learned judge ships with this install ({WEIGHTS_NAME}); train one with "
            "benchmarks/learned_judge.py and give weights=FILE"
        )
    return path


def load_weights(path: str | Path | None = None) -> dict:
    """A learned judge's weights (the shipped ones for None); BdnError naming the file for a bad one."""
    path = shipped_weights() if path is None else Path(path)
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
        weights = [float(w) for w in model["weights"]]
        bias = float(model["bias"])
        if list(model["features"]) != list(FEATURES) or len(weights) != len(FEATURES):
            raise ValueError(f"features {model['features']} are not {list(FEATURES)}")
    except FileNotFoundError:
        raise BdnError(f"{path}: no such learned judge file") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BdnError(f"{path}: not a learned judge's weights ({error})") from None
    if not all(math.isfinite(w) for w in [*weights, bias]):
        raise BdnError(f"{path}: its weights are not all finite numbers")
    return {**model, "weights": weights, "bias": bias}


class CombinedJudge:
    """The learned judge (name 'learned', fed the EMA output); see the module docstring.

    Parameters
    ----------
    noisy : numpy.ndarray
        The image being fitted (the noise rule's reference).
    weights : str, pathlib.Path or None
        The judge's weights file; None: the one that ships with bdn.
    sigma : float or None
        The noise level in 0-255 units; None: estimated from `noisy` (bdn.noise.estimate_noise_level).
    every : int
        Look only at iterations divisible by it (run_BDN's save_iter: the snapshots it keeps).
    patience : int or None
        Say stop after this many looked-at snapshots without a better prediction (None: never).
    model, model_path, tiles
        BIQAN, as `biqan.judge.BiqanJudge` takes it (None and None: the shipped network).
    """

    source = "ema"

    def __init__(
        self,
        noisy: np.ndarray | None = None,
        weights: str | Path | None = None,
        sigma: float | None = None,
        every: int = 1,
        patience: int | None = None,
        *,
        model: torch.nn.Module | None = None,
        model_path: str | Path | None = None,
        tiles: int = 1,
    ) -> None:
        from bdn.dip.judges import NoiseJudge, WMVJudge
        from biqan.judge import BiqanJudge

        self.name = "learned"
        if noisy is None:
            raise BdnError("judge learned: needs the noisy image being fitted (noisy=...)")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise BdnError(f"judge learned: every must be a whole number >= 1, got {every!r}")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
            raise BdnError(f"judge learned: patience must be a whole number >= 1 or None, got {patience!r}")
        self.model_weights = load_weights(weights)
        self.every, self.patience = every, patience
        self._noise = NoiseJudge(noisy=noisy, sigma=sigma)
        self.sigma = self._noise.sigma
        # Huge patience: the parts only measure; this judge decides when to stop.
        self._wmv = WMVJudge(window=WMV_WINDOW, patience=10**9, stride=every, source="ema")
        self._biqan = BiqanJudge(model, start_index=0, every=every, model_path=model_path, tiles=tiles)
        self._iterations: list[int] = []
        self._predictions: list[float] = []
        self._best: int | None = None  # index of the best prediction
        self._since_best = 0

    def _features_now(self) -> np.ndarray:
        residuals = dict(self._noise.residuals)
        variances = dict(self._wmv.variances)
        means = {i: m for i, m, _ in self._biqan.mean_scores}
        its = self._iterations
        table = feature_table(
            np.array([residuals[i] for i in its]),
            self.sigma,
            np.array([variances.get(i, math.nan) for i in its]),
            np.array([means.get(i, math.nan) for i in its]),
        )
        return table[-1]

    def update(self, iteration: int, image: np.ndarray | torch.Tensor) -> bool:
        if iteration % self.every:
            return False
        for part in (self._noise, self._wmv, self._biqan):
            part.update(iteration, image)
        self._iterations.append(int(iteration))
        features = self._features_now()
        prediction = float(np.dot(self.model_weights["weights"], features) + self.model_weights["bias"])
        self._predictions.append(prediction)
        if self._best is None or prediction > self._predictions[self._best]:
            self._best, self._since_best = len(self._predictions) - 1, 0
        else:
            self._since_best += 1
        return self.patience is not None and self._since_best >= self.patience

    @property
    def scores(self) -> list[tuple[int, float]]:
        """(iteration, predicted dB below the best) per looked-at snapshot: the figure the judge decides by."""
        return list(zip(self._iterations, self._predictions, strict=True))

    @property
    def latest_choice(self) -> int | None:
        return None if self._best is None else self._iterations[self._best]

    def choice(self) -> int:
        if self._best is None:
            raise BdnError("judge learned: no snapshot seen yet, nothing to choose")
        return self._iterations[self._best]

    def chosen_image(self) -> None:
        """None: the judge keeps figures, not images (the run's snapshot at its choice is the image)."""
        return None

    def state(self) -> dict:
        return {
            "judge": self.name,
            "noise": self._noise.state(),
            "wmv": self._wmv.state(),
            "biqan": self._biqan.state(),
            "iterations": list(self._iterations),
            "predictions": list(self._predictions),
            "best": self._best,
            "since_best": self._since_best,
        }

    def load_state(self, state: dict, device: torch.device) -> None:
        try:
            if state.get("judge") != self.name:
                raise ValueError("it is another judge's")
            self._noise.load_state(state["noise"], device)
            self._wmv.load_state(state["wmv"], device)
            self._biqan.load_state(state["biqan"], device)
            self._iterations = [int(i) for i in state["iterations"]]
            self._predictions = [float(p) for p in state["predictions"]]
            self._best = None if state["best"] is None else int(state["best"])
            self._since_best = int(state["since_best"])
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise BdnError(f"judge learned: the saved state is damaged ({error})") from None
