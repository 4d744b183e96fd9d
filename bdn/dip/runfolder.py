"""The run folder: what `bdn run` (run_BDN.py) writes and every later step reads. This module is the format's
specification and its only reader and writer; `bdn label`, `bdn select`, `bdn judge` and the benchmarks read a run
through it.

Per image `<id>` (the pair's name: `5dmark3_iso3200_1` for `5dmark3_iso3200_1_real.png` / `..._mean.png`; for a
clean-only folder, the clean file's stem without `_mean`), under the run folder RUN:
- `<id>/<iter:05d>.png`: the EMA output every `save_iter` iterations, 8-bit PNG (`snapshot_name`). The judges and
  the oracle choose among these files.
- `<id>/log.csv`: `iteration,file,loss,psnr,ssim,psnr_raw` (`LOG_COLUMNS`), one row per iteration, from the fit's
  history (torch float32 figures): `file` is the snapshot's file name where one was written; `psnr` / `psnr_raw`
  are the EMA and the raw output against the clean image, `ssim` the EMA's at snapshots only; empty where there is
  no clean image. It is written when the image's fit has ended: an image folder without it is unfinished.
- `<id>.txt`: the seed's format, one line per snapshot, space-separated: the snapshot's path relative to RUN (the
  folder holding the .txt; the seed wrote the path as given on its command line), the PSNR and the SSIM of the
  saved 8-bit snapshot against the clean image (float64 torch, bdn's definitions: scikit-image's defaults, equal
  to bdn.metrics to about 1e-9), or `0 0` where there is no clean image.
- `<id>/result.png` + `<id>/choice.json` `{"judge", "iteration", "score", "judge_iteration", "file"}`
  (`write_choice`): the choice of the fit's online judge; without one, where a clean image exists, the oracle's
  (judge "oracle", score = the snapshot's 8-bit PSNR, the first of equal ones); an offline judge (`bdn judge
  --write`, `bdn select`) may replace them. Judges and the oracle choose among the snapshots, so their gaps are
  comparable: result.png is a byte copy of the snapshot at or before the judge's iteration
  (`snapshot_at_or_before`: the first snapshot if the judge chose earlier; the final EMA output, `file` null, if
  the fit ended before any snapshot). `iteration` is that snapshot's, `judge_iteration` the judge's own; a judge's
  score is its figure at its choice: the window's or moving variance (wmv, emv), the residual variance
  mean((EMA - noisy)^2) on [0, 1] values (noise), the mean quality score (biqan). With neither a judge nor a clean
  image, neither file is written.
- `<id>/curves.png`: PSNR of the EMA and the raw output against iteration (with a clean image) and the loss.
- `<id>/done.json`: written last; an image is finished when and only when it exists. It holds the summary row,
  the seed and thread count, the input files (`input_paths`, `input_sha256`) and result.png's `result_sha256`.
- `<id>/fitting.lock` while a process fits the image (`take_lock`): its host name and process id, its time
  touched at least once a minute while the fit runs (`heartbeat`). Other `bdn run` processes over the same folder
  pass the image by, so that several can share one folder's images without torchrun; a lock whose process is gone
  (same host) or that nobody touched for `LOCK_STALE_SECONDS` (a killed run on another host or machine) is taken over.
- `<id>/checkpoint.pt` while the image is unfinished (`torch.save` of plain tensors and numbers, read with
  `torch.load(weights_only=True)`; deleted when done): see `read_checkpoint`.
- `summary.csv` / `summary.md` over the folder (`SUMMARY_COLUMNS`): image, noisy PSNR, best (peak) PSNR of the
  EMA over every iteration and its iteration (the seed's max_psnr / max_index), judge, chosen iteration and PSNR,
  iterations run, seconds (the fit loop including snapshot and checkpoint writes, summed over resumed sessions),
  seconds per iteration.
Every file is written atomically (bdn.io).

Beside a run, its noisy and clean images are found by name (`partner_images`) and cut to the snapshots' window as
run_BDN cut them (`fit_to`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bdn.errors import BdnError
from bdn.io import atomic_write_bytes, atomic_write_text, list_images, write_image

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "LOG_COLUMNS",
    "SUMMARY_COLUMNS",
    "Iterate",
    "fit_to",
    "log_csv",
    "partner_images",
    "read_checkpoint",
    "read_choice",
    "read_done",
    "read_log",
    "read_run",
    "read_seed_txt",
    "seed_txt",
    "snapshot_at_or_before",
    "snapshot_files",
    "snapshot_name",
    "write_choice",
    "write_done",
    "write_summary",
]

LOG_COLUMNS = ("iteration", "file", "loss", "psnr", "ssim", "psnr_raw")
SUMMARY_COLUMNS = (
    "image",
    "noisy_psnr",
    "best_psnr",
    "best_iteration",
    "judge",
    "chosen_iteration",
    "chosen_psnr",
    "iterations",
    "seconds",
    "s_per_iter",
)
CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = "fitting.lock"
LOCK_BEAT_SECONDS = 60.0  # how often a fitting process touches its lock
LOCK_STALE_SECONDS = 600.0  # untouched this long: its process is gone, wherever it ran
CHECKPOINT_FORMAT = 2  # 2: judges save their whole state (1: WMV without its window)
_SNAPSHOT = re.compile(r"^(\d{5,})\.png$")


# --- snapshots ----------------------------------------------------------------------------------------------


def snapshot_name(iteration: int) -> str:
    """The file name of the snapshot at `iteration`: `<iter:05d>.png`."""
    return f"{iteration:05d}.png"


def snapshot_files(folder: Path) -> dict[int, Path]:
    """iteration -> snapshot file of an image folder (none for a folder that does not exist)."""
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _SNAPSHOT.match(path.name)
            if match:
                found[int(match.group(1))] = path
    return found


def snapshot_at_or_before(iterations: Iterable[int], judged: int) -> int | None:
    """The snapshot a judge's iteration stands for: the last one at or before it, else the first (None: none)."""
    iterations = list(iterations)
    before = [i for i in iterations if i <= judged]
    if before:
        return max(before)
    return min(iterations) if iterations else None


# --- log.csv and the seed's <id>.txt ----------------------------------------------------------------------------


def _number(value: float | None, digits: str = ".8g") -> str:
    return "" if value is None else format(value, digits)


def log_csv(history: Sequence[dict]) -> str:
    """log.csv's text from a fit's history (rows with iteration, snapshot, loss, psnr, ssim, psnr_raw)."""
    lines = [",".join(LOG_COLUMNS)]
    for row in history:
        name = snapshot_name(row["iteration"]) if row["snapshot"] else ""
        cells = [str(row["iteration"]), name] + [_number(row[key]) for key in ("loss", "psnr", "ssim", "psnr_raw")]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def seed_txt(name: str, snapshots: dict[int, tuple[float, float]]) -> str:
    """`<id>.txt`'s text from iteration -> (8-bit PSNR, SSIM) of each snapshot (NaN: no clean image, `0 0`)."""
    lines = []
    for iteration, (psnr, ssim) in sorted(snapshots.items()):
        figures = "0 0" if math.isnan(psnr) else f"{psnr:.6f} {ssim:.6f}"
        lines.append(f"{name}/{snapshot_name(iteration)} {figures}")
    return "\n".join(lines) + ("\n" if lines else "")


def _float_or_none(text: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    value = float(text)  # ValueError for the caller to name the line
    return None if math.isnan(value) else value


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BdnError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None


def read_log(log: Path) -> list[tuple[int, str, float | None]]:
    """(iteration, snapshot file name, psnr) for the rows of a log.csv that name a snapshot."""
    reader = csv.reader(_read_text(log).splitlines())
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


def read_seed_txt(path: Path) -> dict[str, float]:
    """snapshot file name -> PSNR from run_BDN's `<image>.txt` (`0 0` means no clean image: left out)."""
    if not path.is_file():
        return {}
    found = {}
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
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


# --- reading a run ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Iterate:
    """One saved DIP iterate: its image's name, iteration, snapshot file and PSNR against the clean image (None
    where the run had no clean image)."""

    image: str
    iteration: int
    path: Path
    psnr: float | None


def _image_folders(run: Path) -> list[Path]:
    if not run.is_dir():
        raise BdnError(f"{run}: no such folder (expected a run_BDN output folder)")
    try:
        folders = sorted(p for p in run.iterdir() if p.is_dir())
    except OSError as error:
        raise BdnError(f"{run}: cannot list ({error.strerror or error})") from None
    logged = [folder for folder in folders if (folder / "log.csv").is_file()]
    if not logged:
        unfinished = [f for f in folders if snapshot_files(f)]
        extra = f" ({len(unfinished)} unfinished, without log.csv)" if unfinished else ""
        raise BdnError(f"no run_BDN image folders in {run}: none holds a <image>/log.csv{extra}")
    return logged


def read_run(run_dir: str | Path, *, require_snapshots: bool = False, until: int | None = None) -> list[Iterate]:
    """Every snapshot of every finished image of a run folder, sorted by (image, iteration).

    An image folder is a sub-folder holding a log.csv (an unfinished image is left out). The snapshots are
    log.csv's rows that name a file; each must exist. Its PSNR is the 8-bit snapshot's from `<run>/<image>.txt`
    (the figure the oracle chooses by), else log.csv's PSNR of the float EMA output at that iteration (they differ
    by the 8-bit rounding, about 0.05 dB at 40 dB). `until`: only the snapshots at or before that iteration, the
    run as if its fits had stopped there (judges replayed at a shorter cap from one long fit). BdnError for a
    missing or empty run folder, a damaged log, a listed snapshot that is not there, an `until` under 1, and (with
    `require_snapshots`) a finished image with no snapshot at all (at or before `until`).
    """
    if until is not None and (isinstance(until, bool) or not isinstance(until, int) or until < 1):
        raise BdnError(f"until: an iteration >= 1, got {until!r}")
    run = Path(run_dir)
    iterates = []
    folders = _image_folders(run)
    for folder in folders:
        log = folder / "log.csv"
        eight_bit = read_seed_txt(run / f"{folder.name}.txt")
        for iteration, name, psnr in read_log(log):
            if until is not None and iteration > until:
                continue
            path = folder / name
            if not path.is_file():
                raise BdnError(f"{path}: snapshot listed in {log} is missing")
            iterates.append(Iterate(folder.name, iteration, path, eight_bit.get(name, psnr)))
    if require_snapshots:
        found = {it.image for it in iterates}
        empty = [folder for folder in folders if folder.name not in found]
        if empty:
            more = f" (and {len(empty) - 1} more)" if len(empty) > 1 else ""
            raise BdnError(f"{empty[0]}: no snapshots (<iter:05d>.png) to choose from{more}")
    return sorted(iterates, key=lambda it: (it.image, it.iteration, str(it.path)))


def read_done(folder: Path) -> dict | None:
    """An image's done.json record (None: unfinished, or a record that cannot be read)."""
    try:
        return json.loads((folder / "done.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_choice(folder: Path) -> dict | None:
    """An image's choice.json (None where there is none or it cannot be read)."""
    try:
        return json.loads((folder / "choice.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_checkpoint(path: Path) -> dict:
    """A run's checkpoint, read without pickle (bdn.tensorfile.read_checkpoint) and its parts checked; BdnError when
    it is damaged or was made by another version of run_BDN. Parts: format, settings (what fixes the fit, as text),
    fit (`fit_dip`'s state), snapshots (a float64 table of iteration, PSNR, SSIM), judge (the online judge's
    state)."""
    import torch

    from bdn.tensorfile import read_checkpoint as read_any

    remedy = "delete it to start the image again"
    checkpoint = read_any(path, None, "run_BDN", remedy)
    parts = {"settings": dict, "fit": dict, "snapshots": torch.Tensor, "judge": dict}
    problem = None if isinstance(checkpoint.get("format"), int) else "not a run_BDN checkpoint"
    for key, kind in parts.items():
        if problem is None and not isinstance(checkpoint.get(key), kind):
            problem = f"its {key!r} is missing or damaged"
    if problem is None and not isinstance(checkpoint["fit"].get("iteration"), int):
        problem = "it names no iteration"
    if problem is not None:
        raise BdnError(f"{path} is damaged ({problem}); {remedy}")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise BdnError(
            f"checkpoint {path} was made by another version of run_BDN (format {checkpoint['format']}, this one "
            f"reads {CHECKPOINT_FORMAT}); {remedy}"
        )
    return checkpoint


# --- writing ------------------------------------------------------------------------------------------------


def write_choice(folder: Path, record: dict, image: bytes | np.ndarray) -> None:
    """An image's result.png (a snapshot's bytes, or an image written as 8-bit PNG) then its choice.json."""
    if isinstance(image, bytes):
        atomic_write_bytes(folder / "result.png", image)
    else:
        write_image(folder / "result.png", image)
    atomic_write_text(folder / "choice.json", json.dumps(record, indent=2) + "\n")


def _lock_owner(lock: Path) -> tuple[str, int] | None:
    """(host, pid) written in a lock file; None where it cannot be read (being written, or damaged)."""
    try:
        host, pid = lock.read_text(encoding="utf-8").split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def take_lock(folder: Path) -> Path | None:
    """Claim an image folder for this process: its lock file, or None where another live process holds it.

    The lock is created atomically (O_EXCL). One left by a process that no longer runs on this host is taken over,
    and so is one nobody touched for LOCK_STALE_SECONDS (its process, here or on another host, was killed: a fit
    touches its lock every LOCK_BEAT_SECONDS, see `heartbeat`; process ids do not survive a restart).
    """
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    me = f"{socket.gethostname()} {os.getpid()}\n"
    for _ in range(2):
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(lock)
            try:
                silent = time.time() - lock.stat().st_mtime
            except OSError:  # released meanwhile: try again
                continue
            dead = owner is not None and owner[0] == socket.gethostname() and not _alive(owner[1])
            if not dead and silent < LOCK_STALE_SECONDS:
                return None
            lock.unlink(missing_ok=True)  # its process is gone: take it over
            continue
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(me)
        return lock
    return None


def _mine(lock: Path) -> bool:
    return _lock_owner(lock) == (socket.gethostname(), os.getpid())


def heartbeat(lock: Path) -> None:
    """Touch a held lock (its time says the fit still runs; see `take_lock`). BdnError where another process took
    it over meanwhile (this one stood still, stopped or suspended, for LOCK_STALE_SECONDS): that fit stops here."""
    if not _mine(lock):
        raise BdnError(f"{lock}: another process took this image over while this one stood still; it stops fitting it")
    with contextlib.suppress(OSError):
        os.utime(lock)


def release_lock(lock: Path | None) -> None:
    """Remove a lock of `take_lock` (unless another process took it over), and its image folder where that holds
    nothing else (an image that failed before its first file leaves no trace)."""
    if lock is not None and _mine(lock):
        lock.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: the image's files
            lock.parent.rmdir()


def write_done(folder: Path, record: dict) -> None:
    """done.json, the image's summary row: written last, it marks the image finished."""
    atomic_write_text(folder / "done.json", json.dumps(record, indent=2) + "\n")


def write_summary(out: Path, names: Sequence[str]) -> tuple[list[dict], Path | None, str]:
    """summary.csv / summary.md over the finished images among `names`; (rows, csv path or None, Markdown)."""
    rows = [record for record in (read_done(out / name) for name in names) if record is not None]
    if not rows:
        return rows, None, ""
    import pandas as pd

    from bdn.report import markdown_table

    frame = pd.DataFrame([{key: row.get(key) for key in SUMMARY_COLUMNS} for row in rows], columns=SUMMARY_COLUMNS)
    table = markdown_table(frame.astype(object).where(frame.notna(), ""), floatfmt=".3f")
    csv_path = atomic_write_text(out / "summary.csv", frame.to_csv(index=False))
    atomic_write_text(out / "summary.md", table + "\n")
    return rows, csv_path, table


# --- the images beside a run --------------------------------------------------------------------------------


def partner_images(folder: str | Path, names: Sequence[str], suffix: str) -> dict[str, Path]:
    """name -> image file in `folder` for the run's image names, matched as bdn.data does: `<name><suffix>.<ext>`
    (suffix '_real' for noisy, '_mean' for clean) or `<name>.<ext>`. Names without a file are left out; BdnError
    for a folder with no images, or two files for one name."""
    paths, problems = list_images([folder])
    if problems:
        raise BdnError(problems[0])
    wanted, found = set(names), {}
    for path in paths:
        stem = path.stem
        key = stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else stem
        if key in wanted:
            if key in found:
                raise BdnError(f"{path}: same image name {key!r} as {found[key].name}; keep only one of them")
            found[key] = path
    return found


def fit_to(image: np.ndarray, shape: tuple[int, ...], reference: np.ndarray | None = None) -> np.ndarray | None:
    """`image` brought to a snapshot's shape, or None where it cannot be.

    run_BDN fits a crop of the image when the sides are not multiples of its net's (the top-left part,
    bdn.data.crop_to_multiple) or with `--crop` (a centre crop first): a larger image is cut to the top-left or
    the centre window, whichever is nearer `reference` (a snapshot of the run) in mean squared difference.
    """
    if image.shape == tuple(shape):
        return image
    if image.ndim != len(shape) or image.shape[2:] != tuple(shape[2:]):
        return None
    (height, width), (h, w) = image.shape[:2], shape[:2]
    if height < h or width < w:
        return None
    top, left = (height - h) // 2, (width - w) // 2
    candidates = [image[:h, :w], image[top : top + h, left : left + w]]
    if reference is None:
        return candidates[0]
    return min(candidates, key=lambda c: float(np.mean((c.astype(np.float64) - reference) ** 2)))
