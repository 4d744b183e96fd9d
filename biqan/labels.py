"""Score labels for DIP iterates (SPEC.md item 2): run_BDN's logs -> a 10-bin score distribution per snapshot.

    python generator_dataset.py --run_path results/PolyU --output_path results/PolyU/scores.txt
    from biqan.labels import read_run, label_iterates, write_scores, read_scores

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

import argparse
import csv
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from bdn.cmdline import OneLineParser, boolean
from bdn.errors import BdnError
from bdn.io import atomic_write_text

__all__ = [
    "Iterate",
    "build_parser",
    "label_iterates",
    "main",
    "mean_scores",
    "read_run",
    "read_scores",
    "score_distribution",
    "write_scores",
]

BINS = 10
LO_DB, HI_DB = 8.0, 45.0
START_POSITION = 8
_SNAPSHOT_NAME = re.compile(r"^(\d{5,})\.png$")  # run_BDN's <iter:05d>.png
_SUM_TOLERANCE = 1e-3  # on reading: files written by other tools may round more coarsely than ours


@dataclass(frozen=True)
class Iterate:
    """One saved DIP iterate: its image's name, iteration, snapshot file and PSNR against the clean image (None
    where the run had no clean image)."""

    image: str
    iteration: int
    path: Path
    psnr: float | None


# --- the distribution -----------------------------------------------------------------------------------------


def score_distribution(psnr, lo: float = LO_DB, hi: float = HI_DB, use_exp: bool = False) -> np.ndarray:
    """The exact 10-bin label of SPEC item 2 for a PSNR (dB) or an array of them: shape psnr.shape + (10,), float64.

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


# --- reading a run --------------------------------------------------------------------------------------------


def _float_or_none(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    value = float(text)  # ValueError for the caller to name the line
    return None if math.isnan(value) else value


def _read_log(log: Path) -> list[tuple[int, str, float | None]]:
    """(iteration, snapshot file name, psnr) for the rows of a log.csv that name a snapshot."""
    try:
        text = log.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BdnError(f"{log}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    missing = [name for name in ("iteration", "file", "psnr") if header is None or name not in header]
    if missing:
        raise BdnError(f"{log}: not a run_BDN log (no column {', '.join(missing)} in its header)")
    at = {name: header.index(name) for name in ("iteration", "file", "psnr")}
    rows = []
    for number, cells in enumerate(reader, start=2):
        if not cells:
            continue
        try:
            iteration = int(cells[at["iteration"]])
            name = cells[at["file"]].strip()
            psnr = _float_or_none(cells[at["psnr"]])
        except (IndexError, ValueError):
            raise BdnError(f"{log}, line {number}: malformed row {','.join(cells)!r}") from None
        if name:
            if Path(name).name != name:
                raise BdnError(f"{log}, line {number}: snapshot file {name!r} is not a plain file name")
            rows.append((iteration, name, psnr))
    return rows


def _read_seed_txt(path: Path) -> dict[str, float]:
    """snapshot file name -> PSNR from run_BDN's `<image>.txt` (`0 0` means no clean image: left out)."""
    if not path.is_file():
        return {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BdnError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    found = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=2)
        try:
            psnr, ssim = float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise BdnError(f"{path}, line {number}: expected '<snapshot> <psnr> <ssim>', got {line!r}") from None
        if not (psnr == 0 and ssim == 0) and not math.isnan(psnr):
            found[Path(parts[0]).name] = psnr
    return found


def _image_folders(run: Path) -> list[Path]:
    if not run.is_dir():
        raise BdnError(f"{run}: no such folder (expected a run_BDN output folder)")
    try:
        folders = sorted(p for p in run.iterdir() if p.is_dir())
    except OSError as error:
        raise BdnError(f"{run}: cannot list ({error.strerror or error})") from None
    logged = [folder for folder in folders if (folder / "log.csv").is_file()]
    if not logged:
        unfinished = [f for f in folders if any(_SNAPSHOT_NAME.match(p.name) for p in f.iterdir())]
        extra = f" ({len(unfinished)} unfinished, without log.csv)" if unfinished else ""
        raise BdnError(f"no run_BDN image folders in {run}: none holds a <image>/log.csv{extra}")
    return logged


def read_run(run_dir: str | Path) -> list[Iterate]:
    """Every snapshot of every finished image of a run_BDN output folder, sorted by (image, iteration).

    An image folder is a sub-folder holding a log.csv (run_BDN writes it when the image is finished; an
    unfinished image is left out). The snapshots are log.csv's rows that name a file; each must exist.
    BdnError for a missing or empty run folder, a damaged log, or a listed snapshot that is not there.
    """
    run = Path(run_dir)
    iterates = []
    for folder in _image_folders(run):
        log = folder / "log.csv"
        eight_bit = _read_seed_txt(run / f"{folder.name}.txt")
        for iteration, name, psnr in _read_log(log):
            path = folder / name
            if not path.is_file():
                raise BdnError(f"{path}: snapshot listed in {log} is missing")
            iterates.append(Iterate(folder.name, iteration, path, eight_bit.get(name, psnr)))
    return sorted(iterates, key=lambda it: (it.image, it.iteration, str(it.path)))


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


# --- generator_dataset.py -------------------------------------------------------------------------------------


def build_parser(prog: str = "generator_dataset.py") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Score labels for DIP iterates: reads run_BDN output folders, maps each snapshot's PSNR to a "
        "10-bin score distribution (SPEC.md item 2) and writes the score file and a plot of PSNR against mean score.",
    )
    add = parser.add_argument
    add(
        "--run_path",
        "--dataset_path",
        dest="run_path",
        nargs="+",
        action="extend",
        required=True,
        metavar="RUN",
        help="run_BDN output folder(s) (--dataset_path: the seed's name)",
    )
    add("--output_path", default=None, help="score file (default: <RUN>/scores.txt for a single run)")
    add("--start_position", type=int, default=START_POSITION, help="skip each image's first N iterates")
    for name, default, text in (
        ("is_use_fix_minmax", True, "fixed bounds --lo/--hi (true) or each image's own PSNR range (false)"),
        ("is_use_exp", False, "map exp(PSNR) instead of PSNR"),
    ):
        add(f"--{name}", type=boolean, nargs="?", const=True, default=default, metavar="BOOL", help=text)
        add(f"--no-{name}", dest=name, action="store_false", help=f"--{name} false")
    add("--lo", type=float, default=LO_DB, help="PSNR (dB) mapped to mean score 2.5 with fixed bounds")
    add("--hi", type=float, default=HI_DB, help="PSNR (dB) mapped to mean score 7.5 with fixed bounds")
    return parser


def _plot_bytes(psnrs: np.ndarray, means: np.ndarray, args: argparse.Namespace) -> bytes:
    import io

    from bdn.report import plt

    figure, axis = plt.subplots(figsize=(6, 4.2))
    axis.scatter(psnrs, means, s=14, alpha=0.6, lw=0, zorder=3, label="iterates")
    if args.is_use_fix_minmax:
        finite = np.concatenate([psnrs[np.isfinite(psnrs)], [args.lo, args.hi]])
        grid = np.linspace(finite.min() - 1, finite.max() + 1, 400)
        curve = mean_scores(score_distribution(grid, args.lo, args.hi, args.is_use_exp))
        axis.plot(grid, curve, color="black", lw=0.8, label=f"label mean, bounds {args.lo:g}..{args.hi:g} dB")
    axis.set_xlabel("PSNR against clean (dB)")
    axis.set_ylabel("mean score of the label (1..10)")
    axis.set_ylim(0.8, 10.2)
    bounds = f"fixed {args.lo:g}..{args.hi:g} dB" if args.is_use_fix_minmax else "per-image min..max"
    axis.set_title(f"{len(psnrs)} iterates; {bounds}{', exp' if args.is_use_exp else ''}", fontsize=10)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _summary(runs: Sequence[Path], labelled: list[tuple[Iterate, np.ndarray]]) -> str:
    import pandas as pd

    from bdn.report import markdown_table

    records = []
    groups = [(str(run), [(it, p) for it, p in labelled if it.path.parent.parent == run]) for run in runs]
    if len(runs) > 1:
        groups.append(("all", labelled))
    for name, rows in groups:
        if not rows:
            records.append({"run": name, "images": 0, "iterates": 0})
            continue
        psnrs = np.array([it.psnr for it, _ in rows])
        means = mean_scores(np.stack([p for _, p in rows]))
        records.append(
            {
                "run": name,
                "images": len({it.path.parent for it, _ in rows}),
                "iterates": len(rows),
                "psnr_min": psnrs.min(),
                "psnr_max": psnrs.max(),
                "score_min": means.min(),
                "score_max": means.max(),
            }
        )
    frame = pd.DataFrame(records)
    return markdown_table(frame.astype(object).where(frame.notna(), ""), floatfmt=".2f")


def main(argv: Sequence[str] | None = None, prog: str = "generator_dataset.py") -> int:
    """The command line; returns the exit status (0 written, 1 bad input). Nothing is written on bad input."""
    from bdn.io import atomic_write_bytes

    try:
        args = build_parser(prog).parse_args(argv)
        runs = [Path(run) for run in dict.fromkeys(args.run_path)]
        if args.output_path is None and len(runs) > 1:
            raise BdnError("give --output_path when reading several runs")
        output = Path(args.output_path) if args.output_path is not None else runs[0] / "scores.txt"
        if output.is_dir():
            raise BdnError(f"--output_path {output}: is a folder; give a score file name")
        iterates = [iterate for run in runs for iterate in read_run(run)]
        labelled = label_iterates(
            iterates,
            start_position=args.start_position,
            fix_minmax=args.is_use_fix_minmax,
            use_exp=args.is_use_exp,
            lo=args.lo,
            hi=args.hi,
        )
        psnrs = np.array([it.psnr for it, _ in labelled], dtype=np.float64)
        means = mean_scores(np.stack([p for _, p in labelled]))
        plot = _plot_bytes(psnrs, means, args)
        plot_path = output.with_name(f"{output.stem}_psnr_vs_score.png")
        write_scores(output, [(it.path, p) for it, p in labelled])
        atomic_write_bytes(plot_path, plot)
        table = _summary(runs, labelled)
    except BdnError as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(table)
    print(f"wrote {output} ({len(labelled)} iterates) and {plot_path}")
    return 0
