"""Picking DIP iterates with BIQAN: score every snapshot of a run, choose one per image, measure.

    python test_BIQAN.py --run_path results/CC --output_path results/CC_biqan [--model_path biqan.safetensors]
    from biqan.select import score_run, choose, gaps

`score_run` scores every snapshot of every image of a run_BDN output folder (read with `bdn.dip.runfolder.read_run`,
so its PSNR is the 8-bit snapshot's from `<run>/<image>.txt`, else log.csv's) with the network: the mean and the
standard deviation of the predicted 10-bin distribution over scores 1..10. `choose` picks per image the iterate
with the highest mean score, the seed's way: optionally low-pass filtered first (s_0 = x_0,
s_t = smooth s_(t-1) + (1 - smooth) x_t, the seed's smooth = 0.8) over all of the image's iterates, then the
argmax over those after the first `start_index` (default 40, the seed's; a run with no more iterates than that
chooses among all and says so). Ties go to the earliest iterate. `gaps` sets the choice against the oracle (the
snapshot with the highest PSNR): oracle PSNR - chosen PSNR is the loss, in dB.

test_BIQAN.py writes under `--output_path`, per image `<id>`:
- `<id>_BIQAN.png`: the chosen snapshot (a byte copy);
- `<id>_Compare.png`: oracle best | chosen | noisy | clean (the last two where `--dataset_real_path` /
  `--dataset_mean_path` hold the image; see `partner_images`);
- `<id>_Curves.png`: mean score +- std (and the smoothed score) and PSNR against iteration;
and over the run `Denoised_PSNR.txt` (per image the oracle's and the chosen iteration and PSNR and the loss; then
the means and the worst loss), `Denoised_PSNR.csv` (the same table) and `scores.csv` (every iterate's scores).
With `--write` (`write=True`) it also replaces, in each image's run folder, `choice.json` (`{"judge": "biqan",
"iteration", "score" (the figure it chose by: the smoothed mean score, or the mean score without smoothing),
"judge_iteration", "file"}`) and `result.png` (a byte copy of the chosen snapshot), as run_BDN does for its own
judges (bdn/dip/runfolder.py); without it the fit's own record stays. Every file is written atomically; nothing
is written before every image has been scored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bdn.devices import pick_device
from bdn.dip.runfolder import fit_to, partner_images, read_run, snapshot_name, write_choice
from bdn.errors import BdnError
from bdn.io import atomic_write_bytes, atomic_write_text, read_image
from bdn.names import CLEAN_SUFFIX, NOISY_SUFFIX
from bdn.tensors import to_chw

__all__ = [
    "SCORE_COLUMNS",
    "SEED_SMOOTH",
    "START_INDEX",
    "Choices",
    "choose",
    "distribution_stats",
    "gap_summary",
    "gaps",
    "pick",
    "score_images",
    "score_run",
    "smooth_scores",
    "select_run",
]

SCORE_COLUMNS = ("image", "iteration", "path", "mean", "std", "psnr")
START_INDEX = 40  # the seed's --start_index
SEED_SMOOTH = 0.8  # the seed's low-pass factor


def spearman_by_image(table: pd.DataFrame, score: str = "mean") -> pd.Series:
    """Each image's rank correlation (Spearman) of `score` with PSNR over its snapshots; images where either is
    constant (no rank correlation) are left out."""
    import warnings

    with warnings.catch_warnings():  # a constant column has no rank correlation: NaN, dropped
        warnings.simplefilter("ignore")
        per_image = table.groupby("image")[[score, "psnr"]].apply(lambda g: g[score].corr(g["psnr"], method="spearman"))
    return per_image.dropna()


# What the seed's paper reports for its own BIQAN on its own full-size CC runs: the figures bdn's tables stand beside.
SEED_REPORTED = (
    "seed (reported, its own full-size CC runs): oracle 37.83 dB, chosen 37.47 dB, mean gap 0.36 dB, "
    "worst 1.59 dB (d800_iso3200_2)"
)
BINS = 10

Transform = Callable[[np.ndarray], object]


# --- scoring --------------------------------------------------------------------------------------------------


def distribution_stats(p: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) over scores 1..10 of each distribution [N, 10], in float64 on the host.

    BdnError if the model's output is not [N, 10] probabilities (a model that ends in logits, not a softmax).
    """
    if not isinstance(p, torch.Tensor) or p.ndim != 2 or p.shape[1] != BINS:
        shape = list(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
        raise BdnError(f"the quality network must return probabilities [N, {BINS}], got {shape}")
    q = p.detach().to("cpu", torch.float64).numpy()
    sums = q.sum(axis=1)
    if not np.all(np.abs(sums - 1.0) < 1e-3) or (q < -1e-6).any():
        raise BdnError(f"the quality network's outputs must be probabilities summing to 1 (sums {sums.min():.4g}..)")
    k = np.arange(1, BINS + 1, dtype=np.float64)
    mean = q @ k
    std = np.sqrt(np.maximum((q * (k[None, :] - mean[:, None]) ** 2).sum(axis=1), 0.0))
    return mean, std


def _as_input(prepared: object) -> torch.Tensor:
    """A transform's output as float32 [3, h, w]: numpy in bdn's layout (H, W) / (H, W, 3), torch (C, H, W)."""
    if not isinstance(prepared, (np.ndarray, torch.Tensor)):
        raise BdnError(f"the input transform must give an array or a tensor, got {type(prepared).__name__}")
    try:
        x = to_chw(prepared, torch.float32)
    except BdnError:
        x = None
    if x is None or x.shape[0] not in (1, 3):
        shape = list(prepared.shape if x is None else x.shape)
        raise BdnError(f"the input transform must give an image (C, H, W) with C 1 or 3, got {shape}")
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x


def default_transform(protocol: str, crop: int, tiles: int = 1) -> Transform:
    """BIQAN's scoring transform (`biqan.model.prepare`, centre crop, no flips) for a protocol and crop size; with
    `tiles` > 1 a grid of tiles x tiles crops (`biqan.model.prepare_tiles`) whose scores are averaged."""
    from biqan.model import prepare, prepare_tiles

    if tiles == 1:

        def transform(image: np.ndarray) -> object:
            return prepare(image, protocol, crop)

    else:
        prepare_tiles(np.zeros((crop, crop, 3), np.float32), protocol, crop, tiles)  # bad options fail here

        def transform(image: np.ndarray) -> object:
            return prepare_tiles(image, protocol, crop, tiles)

    return transform


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def score_images(model: torch.nn.Module, images: Sequence[object], transform: Transform) -> torch.Tensor:
    """The model's distributions [N, 10] for images (bdn layout or tensors), on the model's device, no gradients.

    Inputs of one shape go through as one batch; inputs of several shapes (the native protocol keeps an image
    smaller than the crop whole) go through one batch per shape, and the rows come back in the given order.
    """
    device = _model_device(model)
    # A transform may give several crops of one image as [n, C, H, W]: each is scored, their distributions averaged.
    prepared = [transform(image) for image in images]
    owners, inputs = [], []
    for owner, x in enumerate(prepared):
        crops = list(x.unbind(0)) if isinstance(x, torch.Tensor) and x.ndim == 4 else [x]
        if not crops:
            raise BdnError("the input transform gave no crop")
        owners += [owner] * len(crops)
        inputs += [_as_input(c) for c in crops]
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape), []).append(index)
    out: list[torch.Tensor | None] = [None] * len(inputs)
    with torch.inference_mode():
        for indices in groups.values():
            batch = torch.stack([inputs[i] for i in indices]).to(device)
            p = model(batch)
            if not isinstance(p, torch.Tensor) or p.ndim != 2 or p.shape[0] != len(indices):
                shape = list(p.shape) if isinstance(p, torch.Tensor) else type(p).__name__
                raise BdnError(f"the quality network must return probabilities [N, {BINS}], got {shape}")
            for row, i in enumerate(indices):
                out[i] = p[row]
    if not out:
        return torch.zeros((0, BINS))
    rows = torch.stack(out)
    if len(inputs) == len(prepared):
        return rows
    index = torch.tensor(owners, device=rows.device)
    summed = torch.zeros((len(prepared), rows.shape[1]), dtype=rows.dtype, device=rows.device)
    summed.index_add_(0, index, rows)
    return summed / torch.bincount(index, minlength=len(prepared)).to(rows.dtype)[:, None]


def _check_int(name: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise BdnError(f"{name} must be a whole number >= {least}, got {value!r}")
    return int(value)


def score_run(
    model: torch.nn.Module,
    run_dir: str | Path,
    protocol: str = "native",
    crop: int = 224,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    *,
    transform: Transform | None = None,
    tiles: int = 1,
    progress: bool = False,
    until: int | None = None,
) -> pd.DataFrame:
    """Score every snapshot of every image of a run folder: DataFrame(image, iteration, path, mean, std, psnr).

    The run folder is what `bdn run` / `bdn.dip.run.run_folder` writes (bdn/dip/runfolder.py); it is read with
    `bdn.dip.runfolder.read_run` (finished images only).

    Parameters
    ----------
    model : torch.nn.Module
        The quality network (see `biqan.model.load_biqan`): float [N, 3, H, W] in [0, 1] -> probabilities [N, 10].
        It is put in eval mode on `device`.
    run_dir : str or pathlib.Path
        The run folder.
    protocol : {'native', 'resize'}, default 'native'
        The scoring transform's protocol (`biqan.model.prepare`); give the checkpoint's (its metadata).
    crop : int, default 224
        The crop side in pixels (at least 32); give the checkpoint's.
    batch_size : int, default 32
        Snapshots read and scored at a time.
    device : str or torch.device, default 'cpu'
        Where to score ('auto': cuda, else mps, else cpu).
    transform : callable, optional
        Turns an image read from its PNG (bdn layout, float32 in [0, 1]) into the network's input; default
        `biqan.model.prepare` with `protocol` and `crop`, or a grid of `tiles` x `tiles` crops whose scores are
        averaged.
    tiles : int, default 1
        See `transform`.
    progress : bool, default False
        Show a progress bar.
    until : int, optional
        Only the snapshots at or before this iteration (the run as if its fits had stopped there).

    Returns
    -------
    pandas.DataFrame
        One row per snapshot, sorted by image, then iteration: image (its folder's name), iteration, path (the
        PNG), mean and std (of the predicted 10-bin distribution over scores 1..10) and psnr, the snapshot's PSNR
        against the clean image (the 8-bit snapshot's from `<run>/<image>.txt`, else log.csv's; NaN where the run
        had none).

    Raises
    ------
    BdnError
        For a missing or empty run folder, an image folder with no snapshot, an unreadable snapshot, a damaged
        log, and options out of range.

    Examples
    --------
    A run of 10 DIP iterations on one 64x64 image (noise synthesised from the clean image), scored:

    >>> import numpy as np
    >>> import bdn
    >>> from bdn.dip import DipConfig
    >>> from bdn.dip.run import run_folder
    >>> from biqan.model import load_biqan, shipped_biqan
    >>> from biqan.select import score_run
    >>> _ = bdn.write_image("clean/0001_mean.png", np.random.default_rng(0).random((64, 64, 3)))
    >>> config = DipConfig(net_type="skip64", num_iter=10, save_iter=5)
    >>> _ = run_folder(None, "clean", "run", config, progress=False, echo=None)
    >>> model, metadata = load_biqan(shipped_biqan())
    >>> scores = score_run(model, "run", metadata["protocol"], crop=64)
    >>> list(scores.columns)
    ['image', 'iteration', 'path', 'mean', 'std', 'psnr']
    >>> scores[["image", "iteration"]].values.tolist()
    [['0001', 5], ['0001', 10]]
    >>> bool(scores["mean"].between(1, 10).all())
    True
    """
    batch_size = _check_int("batch_size", batch_size, 1)
    iterates = read_run(run_dir, require_snapshots=True, until=until)
    model.to(pick_device(device, what="--device")).eval()
    transform = default_transform(protocol, crop, tiles) if transform is None else transform
    rows = []
    from tqdm import tqdm

    with tqdm(total=len(iterates), desc="BIQAN scores", unit="iterate", disable=not progress) as bar:
        for start in range(0, len(iterates), batch_size):
            chunk = iterates[start : start + batch_size]
            images = [read_image(it.path)[0] for it in chunk]
            mean, std = distribution_stats(score_images(model, images, transform))
            for it, m, s in zip(chunk, mean, std, strict=True):
                psnr = math.nan if it.psnr is None else float(it.psnr)
                rows.append((it.path.parent.name, it.iteration, it.path, float(m), float(s), psnr))
            bar.update(len(chunk))
    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    return frame.sort_values(["image", "iteration"], kind="stable").reset_index(drop=True)


# --- choosing -------------------------------------------------------------------------------------------------


def check_smooth(smooth: float | None) -> float | None:
    if smooth is None:
        return None
    if isinstance(smooth, bool) or not isinstance(smooth, (int, float, np.floating)) or not 0 <= smooth < 1:
        raise BdnError(f"smoothing factor must be a number in [0, 1) or None, got {smooth!r}")
    return float(smooth)


def smooth_scores(values: Sequence[float] | np.ndarray, smooth: float | None) -> np.ndarray:
    """The seed's low-pass filter: s_0 = x_0, s_t = smooth s_(t-1) + (1 - smooth) x_t (a copy when smooth is None)."""
    smooth = check_smooth(smooth)
    x = np.asarray(values, dtype=np.float64)
    if smooth is None or x.size == 0:
        return x.copy()
    s = np.empty_like(x)
    s[0] = x[0]
    for t in range(1, x.size):
        s[t] = smooth * s[t - 1] + (1.0 - smooth) * x[t]
    return s


def pick(figures: Sequence[float] | np.ndarray, start_index: int) -> tuple[int, str | None]:
    """(index of the highest figure after the first `start_index`, note): the first of equal maxima; NaN never wins
    over a number. With no more figures than `start_index`, among all of them, and the note says so."""
    start_index = _check_int("start_index", start_index, 0)
    values = np.asarray(figures, dtype=np.float64)
    if values.size == 0:
        raise BdnError("no iterates to choose from")
    note = None
    lo = start_index
    if values.size <= start_index:
        lo = 0
        note = f"only {values.size} iterates, not more than start_index {start_index}: chose among all of them"
    window = np.where(np.isnan(values[lo:]), -np.inf, values[lo:])
    return lo + int(np.argmax(window)), note


class Choices(dict):
    """image -> chosen iteration, with what the choice was made from.

    `notes`: image -> a line where the choice departs from the rule (too few iterates for start_index);
    `figures`: image -> the figure at the choice (the smoothed mean score, or the mean score without smoothing);
    `curves`: image -> (iterations, figures) over all of the image's iterates, in iteration order;
    `start_index`, `smooth`: the options used.
    """

    def __init__(self, start_index: int, smooth: float | None) -> None:
        super().__init__()
        self.start_index, self.smooth = start_index, smooth
        self.notes: dict[str, str] = {}
        self.figures: dict[str, float] = {}
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _need_columns(scores: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in scores.columns]
    if missing:
        raise BdnError(f"scores table has no column {', '.join(missing)} (expected those of score_run)")


def choose(scores: pd.DataFrame, start_index: int = START_INDEX, smooth: float | None = None) -> Choices:
    """image -> chosen iteration: the highest (smoothed) mean score after the first `start_index` iterates.

    `scores` is score_run's table (image, iteration, mean at least). Smoothing (`smooth`, e.g. the seed's 0.8)
    runs over each image's iterates in iteration order from the first one; the skip applies after it. An image
    with no more than `start_index` iterates chooses among all of them, with a line in `Choices.notes`.
    """
    start_index = _check_int("start_index", start_index, 0)
    smooth = check_smooth(smooth)
    _need_columns(scores, ("image", "iteration", "mean"))
    if scores.empty:
        raise BdnError("no scored iterates to choose from")
    choices = Choices(start_index, smooth)
    for image, group in scores.groupby("image", sort=True):
        group = group.sort_values("iteration", kind="stable")
        iterations = group["iteration"].to_numpy(dtype=np.int64)
        figures = smooth_scores(group["mean"].to_numpy(dtype=np.float64), smooth)
        index, note = pick(figures, start_index)
        choices[image] = int(iterations[index])
        choices.figures[image] = float(figures[index])
        choices.curves[image] = (iterations, figures)
        if note is not None:
            choices.notes[image] = note
    return choices


GAP_COLUMNS = ("image", "oracle_iteration", "oracle_psnr", "chosen_iteration", "chosen_psnr", "loss")


def gaps(scores: pd.DataFrame, choices: dict[str, int]) -> pd.DataFrame:
    """Per image (sorted): the oracle's iteration and PSNR (the snapshot with the highest PSNR, the first of equal
    ones), the chosen iteration and its PSNR, and the loss = oracle PSNR - chosen PSNR (dB). PSNRs are NaN and the
    oracle's iteration missing (<NA>) for an image without PSNR (no clean image)."""
    _need_columns(scores, ("image", "iteration", "psnr"))
    rows = []
    for image in sorted(choices):
        group = scores[scores["image"] == image].sort_values("iteration", kind="stable")
        if group.empty:
            raise BdnError(f"image {image!r} has a choice but no scored iterates")
        iterations = group["iteration"].to_numpy(dtype=np.int64)
        psnrs = group["psnr"].to_numpy(dtype=np.float64)
        chosen = int(choices[image])
        at = np.flatnonzero(iterations == chosen)
        if at.size == 0:
            raise BdnError(f"image {image!r}: the chosen iteration {chosen} is not one of its snapshots")
        chosen_psnr = float(psnrs[at[0]])
        if np.isnan(psnrs).all():
            oracle_iteration, oracle_psnr = pd.NA, math.nan
        else:
            best = int(np.nanargmax(psnrs))
            oracle_iteration, oracle_psnr = int(iterations[best]), float(psnrs[best])
        rows.append((image, oracle_iteration, oracle_psnr, chosen, chosen_psnr, oracle_psnr - chosen_psnr))
    table = pd.DataFrame(rows, columns=list(GAP_COLUMNS))
    table["oracle_iteration"] = table["oracle_iteration"].astype("Int64")
    return table


def gap_summary(table: pd.DataFrame) -> dict:
    """Means over the images with a PSNR, and the worst loss: images, measured, oracle_psnr, chosen_psnr, loss,
    worst_loss, worst_image (NaN / None when no image has a PSNR)."""
    measured = table[table["loss"].notna()]
    summary = {"images": len(table), "measured": len(measured)}
    if measured.empty:
        return {
            **summary,
            "oracle_psnr": math.nan,
            "chosen_psnr": math.nan,
            "loss": math.nan,
            "worst_loss": math.nan,
            "worst_image": None,
        }
    worst = measured.loc[measured["loss"].idxmax()]
    return {
        **summary,
        "oracle_psnr": float(measured["oracle_psnr"].mean()),
        "chosen_psnr": float(measured["chosen_psnr"].mean()),
        "loss": float(measured["loss"].mean()),
        "worst_loss": float(worst["loss"]),
        "worst_image": str(worst["image"]),
    }


def _cell(value: object, digits: int = 4) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def denoised_psnr_text(table: pd.DataFrame, summary: dict, header: Sequence[str] = ()) -> str:
    """Denoised_PSNR.txt: '#' header lines, then one line per image (whitespace-separated: image, oracle iteration,
    oracle PSNR, chosen iteration, chosen PSNR, loss; '-' where there is no PSNR), then the means and the worst."""
    lines = [f"# {line}" for line in header]
    lines.append("# PSNR in dB against the clean image; loss = oracle PSNR - chosen PSNR")
    cells = [list(GAP_COLUMNS)] + [[_cell(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(GAP_COLUMNS))]
    for row in cells:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(padded))
    if summary["measured"]:
        of = "" if summary["measured"] == summary["images"] else f" (the {summary['measured']} with a PSNR)"
        lines.append(
            f"mean{of}: oracle {summary['oracle_psnr']:.4f}  chosen {summary['chosen_psnr']:.4f}  "
            f"loss {summary['loss']:.4f}"
        )
        lines.append(f"worst: loss {summary['worst_loss']:.4f} ({summary['worst_image']})")
    else:
        lines.append("mean: - (no image has a PSNR: the run had no clean images, so no loss can be measured)")
    return "\n".join(lines) + "\n"


# --- figures --------------------------------------------------------------------------------------------------


def _curves_figure(image: str, group: pd.DataFrame, choices: Choices, oracle: int | None, path: Path) -> None:
    from bdn.report import new_figure, save_figure

    iterations = group["iteration"].to_numpy()
    mean, std = group["mean"].to_numpy(), group["std"].to_numpy()
    figure, axis = new_figure(figsize=(7.5, 4.0))
    axis.fill_between(iterations, mean - std, mean + std, color="tab:blue", alpha=0.15, lw=0, label="mean +- std")
    axis.plot(iterations, mean, color="tab:blue", lw=1.0, label="mean score")
    if choices.smooth is not None:
        axis.plot(*choices.curves[image], color="navy", lw=1.4, label=f"smoothed ({choices.smooth:g})")
    if choices.start_index and len(iterations) > choices.start_index:
        axis.axvspan(
            iterations[0],
            iterations[choices.start_index - 1],
            color="grey",
            alpha=0.12,
            lw=0,
            label=f"skipped ({choices.start_index} iterates)",
        )
    axis.axvline(choices[image], color="red", ls=":", lw=1.0, label=f"chosen ({choices[image]})")
    axis.set_xlabel("iteration")
    axis.set_ylabel("BIQAN score (1..10)")
    axis.grid(alpha=0.3)
    handles, labels = axis.get_legend_handles_labels()
    psnr = group["psnr"].to_numpy(dtype=np.float64)
    if not np.isnan(psnr).all():
        right = axis.twinx()
        right.plot(iterations, psnr, color="tab:green", lw=1.0, label="PSNR")
        if oracle is not None:
            right.axvline(oracle, color="tab:green", ls="--", lw=0.8, label=f"oracle ({oracle})")
        right.set_ylabel("PSNR against clean (dB)")
        more_handles, more_labels = right.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    axis.legend(handles, labels, fontsize=7, loc="lower right")
    axis.set_title(image)
    figure.tight_layout()
    save_figure(figure, path)


def _compare_figure(
    image: str,
    row: pd.Series,
    choices: Choices,
    noisy: np.ndarray | None,
    clean: np.ndarray | None,
    path: Path,
    snapshot: Callable[[int], Path],
) -> None:
    from bdn.metrics import psnr
    from bdn.report import comparison_figure

    chosen_image = read_image(snapshot(choices[image]))[0]
    panels = []
    if row["oracle_iteration"] is not pd.NA:
        oracle = int(row["oracle_iteration"])
        panels.append((f"oracle best: iter {oracle}\n{row['oracle_psnr']:.2f} dB", read_image(snapshot(oracle))[0]))
    chosen_psnr = "" if math.isnan(row["chosen_psnr"]) else f"{row['chosen_psnr']:.2f} dB, "
    title = f"BIQAN: iter {choices[image]}\n{chosen_psnr}score {choices.figures[image]:.3f}"
    panels.append((title, chosen_image))
    if noisy is not None:
        noisy = fit_to(noisy, chosen_image.shape, chosen_image)
    if clean is not None:
        clean = fit_to(clean, chosen_image.shape, chosen_image)
    if noisy is not None:
        panels.append(("noisy" + ("" if clean is None else f"\n{psnr(clean, noisy):.2f} dB"), noisy))
    if clean is not None:
        panels.append(("clean", clean))
    comparison_figure([panels], path)


# --- test_BIQAN -----------------------------------------------------------------------------------------------


def _choice_record(image: str, choices: Choices) -> dict:
    iteration = choices[image]
    figure = choices.figures[image]
    return {
        "judge": "biqan",
        "iteration": iteration,
        "score": figure if math.isfinite(figure) else None,
        "judge_iteration": iteration,
        "file": snapshot_name(iteration),
    }


def select_run(
    run_path: str | Path,
    output_path: str | Path,
    model: torch.nn.Module,
    *,
    protocol: str = "native",
    crop: int = 224,
    start_index: int = START_INDEX,
    smooth: float | None = None,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    noisy_path: str | Path | None = None,
    clean_path: str | Path | None = None,
    transform: Transform | None = None,
    tiles: int = 1,
    header: Sequence[str] = (),
    progress: bool = False,
    write: bool = False,
) -> tuple[pd.DataFrame, dict, Choices]:
    """Score, choose and write every file of the module docstring; returns (gaps table, summary, choices).

    What `bdn select` (test_BIQAN.py) runs: `score_run`, then `choose` (per image the iterate with the highest,
    optionally smoothed, mean score after the first `start_index`), then `gaps` against the oracle. Bad input
    fails before the scoring, and nothing is written before every image has been scored; every file is written
    atomically.

    Parameters
    ----------
    run_path : str or pathlib.Path
        A run folder written by `bdn run` / `bdn.dip.run.run_folder`.
    output_path : str or pathlib.Path
        The folder (created) that receives, per image `<id>`, `<id>_BIQAN.png` (the chosen snapshot, a byte copy),
        `<id>_Compare.png` and `<id>_Curves.png`, and `Denoised_PSNR.txt`, `Denoised_PSNR.csv` and `scores.csv`.
        With `write`, each image's run folder also gets `choice.json` (judge 'biqan') and `result.png`.
    model : torch.nn.Module
        The quality network (see `biqan.model.load_biqan`).
    protocol, crop, batch_size, device, transform, tiles, progress
        As in `score_run`.
    write : bool
        Replace each image's `choice.json` and `result.png` in the run folder (default False: the fit's own stay).
    start_index : int, default 40
        The seed's: choose after the first `start_index` iterates (among all of them where there are no more).
    smooth : float, optional
        Low-pass factor over each image's mean scores (the seed's 0.8); None: no smoothing.
    noisy_path, clean_path : str or pathlib.Path, optional
        Folders holding the noisy (`<id>_real.<ext>` or `<id>.<ext>`) and clean (`<id>_mean.<ext>`) images, shown
        in the comparison figures where they hold the image.
    header : sequence of str, default ()
        Lines put first in Denoised_PSNR.txt (the options, say).

    Returns
    -------
    table : pandas.DataFrame
        Per image (sorted): oracle_iteration and oracle_psnr (the snapshot with the highest PSNR), chosen_iteration
        and chosen_psnr, and loss = oracle PSNR - chosen PSNR in dB (NaN without a clean image).
    summary : dict
        Means over the images with a PSNR and the worst loss: images, measured, oracle_psnr, chosen_psnr, loss,
        worst_loss, worst_image.
    choices : Choices
        image -> chosen iteration, with the figures, curves and notes it was chosen from.

    Raises
    ------
    BdnError
        For an output path that is a file, a bad `start_index` or `smooth`, noisy or clean folders with no images
        or two files for one name, and whatever `score_run` refuses.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> import bdn
    >>> from bdn.dip import DipConfig
    >>> from bdn.dip.run import run_folder
    >>> from biqan.model import load_biqan, shipped_biqan
    >>> from biqan.select import select_run
    >>> _ = bdn.write_image("clean/0001_mean.png", np.random.default_rng(0).random((64, 64, 3)))
    >>> config = DipConfig(net_type="skip64", num_iter=10, save_iter=5)
    >>> _ = run_folder(None, "clean", "run", config, progress=False, echo=None)
    >>> model, metadata = load_biqan(shipped_biqan())
    >>> table, summary, choices = select_run("run", "selected", model, crop=64, start_index=0)
    >>> choices["0001"] in (5, 10), summary["images"]
    (True, 1)
    >>> sorted(path.name for path in Path("selected").iterdir())  # doctest: +NORMALIZE_WHITESPACE
    ['0001_BIQAN.png', '0001_Compare.png', '0001_Curves.png', 'Denoised_PSNR.csv', 'Denoised_PSNR.txt',
     'scores.csv']
    """
    start_index = _check_int("start_index", start_index, 0)
    smooth = check_smooth(smooth)
    run, out = Path(run_path), Path(output_path)
    if out.exists() and not out.is_dir():
        raise BdnError(f"--output_path {out}: exists and is not a folder")
    # Bad input fails before the long part (scoring).
    names = sorted({it.path.parent.name for it in read_run(run, require_snapshots=True)})
    noisy_files = {} if noisy_path is None else partner_images(noisy_path, names, NOISY_SUFFIX)
    clean_files = {} if clean_path is None else partner_images(clean_path, names, CLEAN_SUFFIX)
    scores = score_run(
        model, run, protocol, crop, batch_size, device, transform=transform, tiles=tiles, progress=progress
    )
    choices = choose(scores, start_index, smooth)
    table = gaps(scores, choices)
    summary = gap_summary(table)

    out.mkdir(parents=True, exist_ok=True)
    smoothed = np.concatenate([choices.curves[name][1] for name in names])
    listed = scores.assign(path=scores["path"].map(str), smoothed=smoothed)
    atomic_write_text(out / "scores.csv", listed.to_csv(index=False))
    for row in table.itertuples(index=False):
        image = row.image
        folder = scores.loc[scores["image"] == image, "path"].iloc[0].parent

        def snapshot(iteration: int, folder: Path = folder) -> Path:
            return folder / snapshot_name(iteration)

        chosen = snapshot(choices[image]).read_bytes()
        atomic_write_bytes(out / f"{image}_BIQAN.png", chosen)
        noisy = read_image(noisy_files[image])[0] if image in noisy_files else None
        clean = read_image(clean_files[image])[0] if image in clean_files else None
        series = pd.Series(row._asdict())
        _compare_figure(image, series, choices, noisy, clean, out / f"{image}_Compare.png", snapshot)
        oracle = None if row.oracle_iteration is pd.NA else int(row.oracle_iteration)
        _curves_figure(image, scores[scores["image"] == image], choices, oracle, out / f"{image}_Curves.png")
        if write:  # the fit's own choice.json stays unless asked
            write_choice(folder, _choice_record(image, choices), chosen)
    smoothing = "none" if smooth is None else f"{smooth:g}"
    header = [*header, f"start_index {start_index}; smoothing {smoothing}"]
    header += [f"{image}: {note}" for image, note in sorted(choices.notes.items())]
    atomic_write_text(out / "Denoised_PSNR.csv", table.to_csv(index=False))
    atomic_write_text(out / "Denoised_PSNR.txt", denoised_psnr_text(table, summary, header))
    return table, summary, choices
