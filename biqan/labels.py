"""Score labels for DIP iterates: a run folder's PSNRs -> a 10-bin score distribution per snapshot.

    bdn label --run-path results/PolyU --output-path results/PolyU/scores.txt     (generator_dataset.py)
    from biqan.labels import label_iterates, write_scores, read_scores

The seed's recipe, with the bins computed exactly instead of from 10,000 random draws. Per iterate, v = its PSNR
(or exp(PSNR) with `use_exp`); m = (v - lo) / (hi - lo) * 5 + 2.5 with lo, hi = 8, 45 dB (`fix_minmax`, default) or
the image's own lowest and highest PSNR over its labelled iterates; negative m is set to 0. The label is the law of
X ~ N(m, 1) rounded to the nearest integer and clipped to 1..10:
    P(1) = Phi(1.5 - m), P(k) = Phi(k + 0.5 - m) - Phi(k - 0.5 - m) for k = 2..9, P(10) = 1 - Phi(9.5 - m).
The first `start_position` iterates of each image (default 8) are skipped.

Which PSNR: an iterate is the 8-bit snapshot run_BDN saved, and its PSNR is the one `<run>/<image>.txt` gives for
that very file (the figure run_BDN's oracle chooses by); where the .txt does not list it, log.csv's PSNR of the
float EMA output at that iteration (they differ by the 8-bit rounding, about 0.05 dB at 40 dB).

The score file: one line per iterate, `<snapshot path> p1 ... p10`, space separated; the path relative to the score
file's folder (absolute where no relative path exists), written with forward slashes; probabilities with 6 decimals
that sum to exactly 1 as written (the rounding residue goes to the largest one). Paths may contain spaces: a line is
split at its last ten spaces.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from bdn.dip.runfolder import Iterate
from bdn.errors import BdnError
from bdn.io import atomic_write_text

__all__ = [
    "label_iterates",
    "mean_scores",
    "read_scores",
    "score_distribution",
    "write_scores",
]

BINS = 10
LO_DB, HI_DB = 8.0, 45.0
START_POSITION = 8
_SUM_TOLERANCE = 1e-3  # on reading: files written by other tools may round more coarsely than ours


# --- the distribution -----------------------------------------------------------------------------------------


def score_distribution(psnr, lo: float = LO_DB, hi: float = HI_DB, use_exp: bool = False) -> np.ndarray:
    """The exact 10-bin label (the module docstring's recipe) for a PSNR (dB) or an array of them: shape
    psnr.shape + (10,), float64.

    m = (v - lo) / (hi - lo) * 5 + 2.5, clipped below at 0, with v = psnr; with `use_exp`, v = exp(psnr) and the
    bounds transformed the same way, (exp(psnr) - exp(lo)) / (exp(hi) - exp(lo)), computed as
    (exp(psnr - hi) - exp(lo - hi)) / (1 - exp(lo - hi)) (the same number, without overflow: exp(45) ~ 3.5e19, and
    a PSNR past 709 dB would overflow). Bins k = 1..10 hold N(m, 1) rounded to the nearest integer and clipped.
    `hi == lo` (an image whose labelled iterates all have one PSNR) puts every iterate in the middle: m = 5.
    """
    values = np.asarray(psnr, dtype=np.float64)
    if np.isnan(values).any():
        raise BdnError("score_distribution: a PSNR is NaN")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise BdnError(f"score bounds lo {lo:g}, hi {hi:g}: need finite lo <= hi")
    if hi == lo:
        fraction = np.full_like(values, 0.5)
    elif use_exp:
        with np.errstate(over="ignore"):  # exp(psnr - hi) = inf for an infinite PSNR: fraction inf, label 10
            fraction = (np.exp(values - hi) - math.exp(lo - hi)) / -math.expm1(lo - hi)
    else:
        fraction = (values - lo) / (hi - lo)
    m = np.maximum(fraction * 5.0 + 2.5, 0.0)
    edges = np.arange(1, BINS, dtype=np.float64) + 0.5  # 1.5 .. 9.5
    cdf = ndtr(edges - m[..., None])  # Phi(k + 0.5 - m), k = 1..9
    zeros = np.zeros(m.shape + (1,))
    return np.diff(np.concatenate([zeros, cdf, zeros + 1.0], axis=-1), axis=-1)


def mean_scores(p: np.ndarray) -> np.ndarray:
    """sum_k k p_k over the last axis (k = 1..10)."""
    return np.asarray(p, dtype=np.float64) @ np.arange(1, BINS + 1, dtype=np.float64)


# --- labels ---------------------------------------------------------------------------------------------------


def label_iterates(
    iterates: Iterable[Iterate],
    *,
    start_position: int = START_POSITION,
    fix_minmax: bool = True,
    use_exp: bool = False,
    lo: float = LO_DB,
    hi: float = HI_DB,
) -> list[tuple[Iterate, np.ndarray]]:
    """(iterate, its 10-bin label) for every iterate past the first `start_position` of its image.

    Images are told apart by their folder (two runs may hold the same image name). With `fix_minmax` the bounds
    are lo, hi; without, each image's lowest and highest PSNR over its labelled iterates (after the skip). An
    image with no iterate left after the skip gives no label; BdnError when no image gives one, or when an
    image to label has no PSNR (its run had no clean image).
    """
    if isinstance(start_position, bool) or not isinstance(start_position, int) or start_position < 0:
        raise BdnError(f"--start_position must be a whole number >= 0, got {start_position!r}")
    if fix_minmax and not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise BdnError(f"--lo {lo:g} and --hi {hi:g}: need finite bounds with lo < hi")
    groups: dict[Path, list[Iterate]] = {}
    for iterate in iterates:
        groups.setdefault(iterate.path.parent, []).append(iterate)
    if not groups:
        raise BdnError("no iterates to label")
    labelled = []
    for folder, members in groups.items():
        kept = sorted(members, key=lambda it: it.iteration)[start_position:]
        if not kept:
            continue
        if any(it.psnr is None for it in kept):
            raise BdnError(f"{folder / 'log.csv'} has no PSNR (no clean image): cannot label its iterates")
        psnrs = np.array([it.psnr for it in kept], dtype=np.float64)
        bounds = (lo, hi) if fix_minmax else (float(psnrs.min()), float(psnrs.max()))
        labelled.extend(zip(kept, score_distribution(psnrs, *bounds, use_exp=use_exp), strict=True))
    if not labelled:
        most = max(len(members) for members in groups.values())
        raise BdnError(f"--start_position {start_position} skips every iterate (the most any image has is {most})")
    return labelled


# --- the score file -------------------------------------------------------------------------------------------


def _path_text(path: Path, folder: Path) -> str:
    # Lexical (abspath, not resolve): read_scores joins and normalises the same way, symlinked folders included.
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return Path(os.path.abspath(path)).as_posix()


def _probability_text(p: np.ndarray) -> str:
    """Six decimals summing to exactly 1 as written: the rounding residue (at most 5e-6) goes to the largest."""
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (BINS,) or not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1) > 1e-6:
        raise BdnError(f"a score distribution must be {BINS} non-negative numbers summing to 1, got {p.tolist()}")
    micro = np.rint(p * 1e6).astype(np.int64)
    micro[int(np.argmax(micro))] += 1_000_000 - int(micro.sum())
    return " ".join(f"{value // 1_000_000}.{value % 1_000_000:06d}" for value in micro)


def write_scores(path: str | Path, rows: Iterable[tuple[str | Path, np.ndarray]]) -> Path:
    """Write a score file (format in the module docstring) atomically; rows are (snapshot path, 10 probabilities)."""
    path = Path(path)
    if path.is_dir():
        raise BdnError(f"{path}: is a folder; give a score file name")
    lines = [f"{_path_text(Path(image), path.parent)} {_probability_text(p)}" for image, p in rows]
    if not lines:
        raise BdnError(f"{path}: no rows to write")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_scores(path: str | Path, check_exists: bool = True) -> list[tuple[Path, np.ndarray]]:
    """(snapshot path, 10 probabilities, float64 renormalised to sum 1) per line of a score file.

    Relative paths are taken from the score file's folder (joined, then normalised: `a/../b` -> `b`). BdnError
    naming the line for a malformed one (not a path and ten numbers, negative or non-finite numbers, a sum off 1
    by more than 1e-3), naming the image for one that does not exist (with `check_exists`), and for a missing or
    empty file.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise BdnError(f"{path}: no such score file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BdnError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=BINS)
        try:
            if len(parts) != BINS + 1:
                raise ValueError
            p = np.array([float(x) for x in parts[1:]], dtype=np.float64)
        except ValueError:
            raise BdnError(f"{path}, line {number}: expected '<image path> p1 ... p10', got {line.strip()!r}") from None
        if not np.isfinite(p).all() or (p < 0).any() or abs(p.sum() - 1) > _SUM_TOLERANCE:
            raise BdnError(
                f"{path}, line {number}: the ten probabilities must be >= 0 and sum to 1 (sum {p.sum():.6g})"
            )
        image = Path(parts[0])
        image = Path(os.path.normpath(image if image.is_absolute() else path.parent / image))
        if check_exists and not image.is_file():
            raise BdnError(f"{path}, line {number}: image {image} does not exist")
        rows.append((image, p / p.sum()))
    if not rows:
        raise BdnError(f"{path}: empty score file")
    return rows
