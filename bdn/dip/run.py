"""run_BDN: Deep Image Prior over a folder of images, writing the files every later step reads (SPEC.md item 1).

    python run_BDN.py --dataset_real_path real/ --dataset_mean_path mean/ --output_path OUT --num_iter 3000
    from bdn.dip.run import run_folder; run_folder("real/", "mean/", "OUT", DipConfig(...))

Options beyond the seed's: `--stop wmv|emv|noise` ends each fit by an online judge (bdn.dip.judges; the noise
judge, the discrepancy principle, compares the EMA output with the image being fitted, at `--noise_sigma`
(default: estimated from that image) times `--noise_factor`; `--stop biqan --biqan_model FILE` scores each
snapshot with a quality network from train_BIQAN.py); `--init NAME_OR_PATH` starts every fit from a
learned initialisation (bdn.dip.init), whose net, input and mask ratio then replace `--net_type`, `--input_base`,
`--input_depth` and `--mask_ratio` (a file that is not an initialisation, or whose weights do not fit the net it
names, fails before any image; an image whose colour channels it was not learned for fails alone);
`--mask_ratio` hides that share of the input's pixels each iteration (a blind-spot fit, DipConfig.mask_ratio).

Per image `<id>` (the pair's name: `5dmark3_iso3200_1` for `5dmark3_iso3200_1_real.png` / `..._mean.png`; for a
clean-only folder, the clean file's stem without `_mean`), under OUT:
- `<id>/<iter:05d>.png`: the EMA output every `save_iter` iterations, 8-bit PNG. The judges and the oracle choose
  among these files.
- `<id>/log.csv`: `iteration,file,loss,psnr,ssim,psnr_raw`, one row per iteration, from the fit's history (torch
  float32 figures): `file` is the snapshot's file name where one was written; `psnr` / `psnr_raw` are the EMA and
  the raw output against the clean image, `ssim` the EMA's at snapshots only; empty where there is no clean image.
- `<id>.txt`: the seed's format, one line per snapshot, space-separated: the snapshot's path relative to OUT (the
  folder holding the .txt; the seed wrote the path as given on its command line), the PSNR and the SSIM of the
  saved 8-bit snapshot against the clean image (float64 torch, bdn's definitions: scikit-image's defaults, equal
  to bdn.metrics to about 1e-9), or `0 0` where there is no clean image.
- `<id>/result.png` + `<id>/choice.json` `{"judge", "iteration", "score", "judge_iteration", "file"}`:
  with `--stop wmv|emv|noise`, the judge's choice; otherwise, where a clean image exists, the oracle's (judge
  "oracle", score = the snapshot's 8-bit PSNR, the first of equal ones). Judges and the oracle choose among
  the snapshots, so their gaps are comparable: result.png is a byte copy of the snapshot at or before the
  judge's iteration (the first snapshot if the judge chose earlier; the final EMA output, `file` null, if the
  fit ended before any snapshot). `iteration` is that snapshot's, `judge_iteration` the judge's own; a judge's
  score is its figure at its choice: the window's or moving variance (wmv, emv), the residual variance
  mean((EMA - noisy)^2) on [0, 1] values (noise). With neither a judge nor a clean image, neither file is written.
- `<id>/curves.png`: PSNR of the EMA and the raw output against iteration (with a clean image) and the loss.
- `<id>/done.json`: written last; an image is finished when and only when it exists. It holds the summary row.
- `<id>/checkpoint.pt` while the image is unfinished (every `checkpoint_iter` iterations; deleted when done).
- `summary.csv` / `summary.md` over the folder: image, noisy PSNR, best (peak) PSNR of the EMA over every iteration
  and its iteration (the seed's max_psnr / max_index), judge, chosen iteration and PSNR, iterations run, seconds
  (the fit loop including snapshot and checkpoint writes, summed over resumed sessions), seconds per iteration.
Every file is written atomically (bdn.io).

Resume: running the same command again skips images whose done.json exists. An unfinished image continues from
its checkpoint: `torch.save` of plain tensors and numbers (`fit_dip`'s `frame.state()`: weights, Adam moments,
EMA, fall-back weights, noise generator, history; plus the snapshot table and the judge's `state()`), read back
with `torch.load(weights_only=True)`. On the CPU the resumed fit is exactly the uninterrupted one (tested through
a SIGKILL); on CUDA it continues from the same state, but CUDA fits are not bit-reproducible anyway. The online
judge resumes exactly too (`load_state`): it chooses and stops where it would have without the interruption.
That costs space: WMV's state holds its window of iterates, so each checkpoint carries `--wmv_window` float32
images (100 colour 512x512 images: 315 MB) besides the net. Snapshot files past the checkpoint are deleted when
the image restarts. A corrupt checkpoint is refused ("... is corrupt; delete it to start the image again"), never
silently discarded; so is one made with other settings (all of DipConfig but num_iter, show_iter and the speed
switches; the judge and its options; the noise; the crop; the image; the learned initialisation, by content) or
by another version of run_BDN (an older checkpoint format).
Snapshots and checkpoints are written by one background thread, in order (see `_Writer`).

Many processes: under torchrun (WORLD_SIZE/RANK set) rank r takes images `sorted_list[r::world_size]` and uses
cuda:LOCAL_RANK when on CUDA; a gloo process group (on CPU and GPU alike: it only carries the final barrier, and
gloo waits on the CPU with a long timeout, where an NCCL barrier would need a device and its watchdog would abort
a wait of hours) lets rank 0 write the summary once every rank has finished. Should the group fail to start,
every rank writes the summary when it finishes (the last one lists every image, barring a near tie). The seed's
manual split (`--is_split_dataset --dataset_part_id I --dataset_parts P`, or `--dataset_part_id I/P` as the seed
wrote it) takes part I (1-based) of P contiguous parts of the sorted list, sizes differing by at most one (the
seed's `len // P` parts dropped the remainder); it combines with torchrun.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import queue
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch

from bdn.cmdline import OneLineParser, torchrun_world
from bdn.data import CLEAN_SUFFIX, Pair, centre_crop, clean_images, crop_to_multiple, find_pairs, load_pair, synthesize
from bdn.dip.fit import DipConfig, DipResult, _check_config, fit_dip, pick_device, ssim_torch
from bdn.dip.judges import Judge, make_judge
from bdn.dip.nets import NET_TYPES, build_net, min_size, net_spec, smallest_side
from bdn.dip.precision import PRECISIONS
from bdn.errors import BdnError
from bdn.io import atomic_write_bytes, atomic_write_text, read_image, write_image
from bdn.tensorfile import write_checkpoint

__all__ = ["FolderReport", "Item", "build_parser", "find_items", "main", "run_folder", "select_items", "write_summary"]

STOPS = ("none", "wmv", "emv", "noise", "biqan")
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
CHECKPOINT_FORMAT = 2  # 2: judges save their whole state (1: WMV without its window)
_SNAPSHOT_NAME = re.compile(r"^(\d{5,})\.png$")
# Settings that do not change what a fit computes, so a checkpoint made under other values still fits.
_FREE_SETTINGS = ("num_iter", "show_iter", "channels_last", "cuda_graph")


@dataclass(frozen=True)
class Item:
    """One image to reconstruct: its name, its noisy file (None: synthesised from the clean one), its clean file."""

    name: str
    noisy: Path | None
    clean: Path | None


@dataclass
class FolderReport:
    """What `run_folder` did: summary rows (every finished image of the list), names, problems (one line each)."""

    rows: list[dict] = field(default_factory=list)
    done: list[str] = field(default_factory=list)  # fitted (or finished) in this run
    skipped: list[str] = field(default_factory=list)  # finished before this run
    resumed: dict[str, int] = field(default_factory=dict)  # name -> checkpoint iteration it continued from
    problems: list[str] = field(default_factory=list)
    summary: Path | None = None  # summary.csv, where this process wrote it
    table: str = ""  # the summary as Markdown


# --- which images ------------------------------------------------------------------------------------------


def find_items(noisy_dir: str | Path | None, clean_dir: str | Path | None) -> list[Item]:
    """The images of a run, sorted by name: noisy/clean pairs, noisy only, or clean only (noise synthesised)."""
    if noisy_dir is not None:
        return [Item(pair.name, pair.noisy, pair.clean) for pair in find_pairs(noisy_dir, clean_dir)]
    if clean_dir is None:
        raise BdnError("give --dataset_real_path (noisy images) or --dataset_mean_path (clean images) or both")
    named: dict[str, Path] = {}
    for path in clean_images(clean_dir):
        name = path.stem[: -len(CLEAN_SUFFIX)] if path.stem.endswith(CLEAN_SUFFIX) else path.stem
        if name in named:
            raise BdnError(f"{path}: same image name {name!r} as {named[name].name}; keep only one of them")
        named[name] = path
    return [Item(name, None, named[name]) for name in sorted(named)]


def split_part(items: Sequence[Item], part: int, parts: int) -> list[Item]:
    """Part `part` (1-based) of `parts` contiguous, near-equal parts of `items` (the seed's manual split)."""
    if parts < 1 or not 1 <= part <= parts:
        raise BdnError(f"--dataset_part_id {part} of --dataset_parts {parts}: need 1 <= part <= parts")
    bounds = np.linspace(0, len(items), parts + 1).round().astype(int)
    return list(items[bounds[part - 1] : bounds[part]])


def select_items(
    items: Sequence[Item], *, part: tuple[int, int] | None = None, rank: int = 0, world: int = 1
) -> list[Item]:
    """This process's share: the manual part (if any), then every `world`-th image from `rank` (torchrun)."""
    chosen = split_part(items, *part) if part is not None else list(items)
    return chosen[rank::world]


def _start_group(world: int) -> bool:
    """Start a gloo process group for the final barrier; False (and one line on stderr) if it cannot start."""
    if world < 2:
        return False
    import datetime

    import torch.distributed as dist

    try:
        # Ranks may finish hours apart: the barrier must not time out in between.
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=30))
    except (RuntimeError, ValueError, OSError) as error:
        detail = " ".join(str(error).split())[:200]
        print(
            f"run_BDN: torch.distributed (gloo) did not start ({detail}); every rank writes the summary when it "
            "finishes instead",
            file=sys.stderr,
        )
        return False
    return True


# --- loading one image -------------------------------------------------------------------------------------


def _load(item: Item, config: DipConfig, noise: tuple[str, float | None], crop: int | None) -> tuple:
    """(noisy, clean or None) as float32, centre-cropped (optional) and cropped to the net's multiple."""
    shown = item.noisy if item.noisy is not None else item.clean
    if item.noisy is not None:
        noisy, clean = load_pair(Pair(item.name, item.noisy, item.clean))
    else:
        clean, _ = read_image(item.clean)
        noisy = synthesize(clean, noise[0], noise[1], config.seed, name=item.name)
    if crop is not None:
        noisy = centre_crop(noisy, crop)
        clean = None if clean is None else centre_crop(clean, crop)
    height, width = noisy.shape[:2]
    least, multiple = smallest_side(config.net_type), min_size(config.net_type)
    if min(height, width) < least:
        name = config.net_type if isinstance(config.net_type, str) else "custom"
        after = f" after --crop {crop}" if crop is not None else ""
        raise BdnError(
            f"{shown}: image of {width}x{height} pixels{after} is too small for DIP net {name!r}: both sides must be "
            f"at least {least}"
        )
    noisy = np.ascontiguousarray(crop_to_multiple(noisy, multiple), dtype=np.float32)
    clean = None if clean is None else np.ascontiguousarray(crop_to_multiple(clean, multiple), dtype=np.float32)
    return noisy, clean


def _settings(
    config: DipConfig,
    stop: str,
    judge_options: dict,
    noise: str,
    crop: int | None,
    noisy: np.ndarray,
    init: str = "none",
) -> dict[str, str]:
    """Everything that fixes what a fit computes, as text: a checkpoint resumes only under the same settings.

    `init` names the learned initialisation by its content (see `_open_init`), not by its name or path.
    """
    settings = {f.name: repr(getattr(config, f.name)) for f in fields(config) if f.name not in _FREE_SETTINGS}
    settings["net_type"] = repr(net_spec(config.net_type))  # 'skip' and its NetSpec are the same net
    settings["stop"] = repr((stop, sorted(judge_options.items())))
    settings["noise"] = noise
    settings["crop"] = repr(crop)
    settings["image"] = f"{noisy.shape} sha256 {hashlib.sha256(noisy.tobytes()).hexdigest()[:16]}"
    settings["init"] = init
    return settings


# --- learned initialisation (--init) -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Init:
    """A learned initialisation, opened once for the whole folder."""

    given: str  # as the user named it (messages)
    state: dict  # the net's state_dict
    metadata: dict  # what it was learned for (bdn.dip.init)
    identity: str  # sha256 of its file, first 16 hex digits: what a checkpoint remembers


def _open_init(init: str, config: DipConfig) -> tuple[_Init, DipConfig]:
    """The initialisation and the config it fixes (net, input, mask ratio); BdnError for a bad or unfit file.

    Its weights are loaded into the net its metadata names here, once, so a file whose weights belong to another
    net fails before any image is touched (not at each image's fit).
    """
    from bdn.dip.init import config_for_init, find_init, load_init

    path = find_init(init)
    state, metadata = load_init(path)
    try:
        wanted = config_for_init(metadata, config)
        _check_config(wanted)
        channels = int(metadata["channels"])
        depth = wanted.input_depth if wanted.input_base == "noise" else channels
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left alone
            net = build_net(wanted.net_type, depth, channels)
        net.load_state_dict(state, strict=True)
    except BdnError as error:
        raise BdnError(f"--init {init}: {error}") from None
    except (KeyError, ValueError) as error:
        raise BdnError(f"--init {init}: its metadata is incomplete or damaged ({error!r})") from None
    except RuntimeError as error:
        detail = " ".join(str(error).split())[:200]
        raise BdnError(f"--init {init}: its weights do not fit the net it names ({detail})") from None
    try:
        identity = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as error:
        raise BdnError(f"--init {init}: cannot read {path} ({error.strerror or error})") from None
    return _Init(str(init), state, metadata, identity), wanted


# --- judges ------------------------------------------------------------------------------------------------


def _make_judge(stop: str, judge_options: dict, noisy: np.ndarray) -> Judge | None:
    """The online judge for one image (None for --stop none); the noise judge compares with the fitted image."""
    if stop == "none":
        return None
    if stop == "noise":
        return make_judge(stop, noisy=noisy, **judge_options)
    return make_judge(stop, **judge_options)


def _judge_score(judge: Judge, iteration: int) -> float | None:
    """The judge's own figure at `iteration`: a variance (wmv, emv), the residual variance (noise)."""
    return dict(getattr(judge, "scores", [])).get(iteration)


# --- one image ---------------------------------------------------------------------------------------------


def _snapshot_files(folder: Path) -> dict[int, Path]:
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _SNAPSHOT_NAME.match(path.name)
            if match:
                found[int(match.group(1))] = path
    return found


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint, read with weights_only=True and its parts checked; BdnError when it is damaged."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        parts = {"settings": dict, "fit": dict, "snapshots": torch.Tensor, "judge": dict}
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("format"), int):
            raise ValueError("not a run_BDN checkpoint")
        for key, kind in parts.items():
            if not isinstance(checkpoint.get(key), kind):
                raise ValueError(f"its {key!r} is missing or damaged")
        if not isinstance(checkpoint["fit"].get("iteration"), int):
            raise ValueError("it names no iteration")
    except Exception as error:  # torch.load raises many types for damaged files; all mean the same here
        detail = " ".join(str(error).split())[:120]
        raise BdnError(f"checkpoint {path} is corrupt ({detail}); delete it to start the image again") from None
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise BdnError(
            f"checkpoint {path} was made by another version of run_BDN (format {checkpoint['format']}, this one "
            f"reads {CHECKPOINT_FORMAT}); delete it to start the image again"
        )
    return checkpoint


def _check_resumable(path: Path, checkpoint: dict, settings: dict[str, str], num_iter: int) -> int:
    """The checkpoint's iteration, after checking it was made with these settings and fits num_iter."""
    saved = checkpoint["settings"]
    changed = sorted(key for key in settings.keys() | saved.keys() if settings.get(key) != saved.get(key))
    if changed:
        raise BdnError(
            f"checkpoint {path} was made with other settings ({', '.join(changed)}); run with the same options "
            "or delete it to start the image again"
        )
    iteration = int(checkpoint["fit"]["iteration"])
    if iteration > num_iter:
        raise BdnError(f"checkpoint {path} is at iteration {iteration}, past --num_iter {num_iter}; raise --num_iter")
    return iteration


def _tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    return t[None].to(device)


def _quantised(ema: torch.Tensor) -> torch.Tensor:
    """The 8-bit values write_image stores: rint(clip(x) * 255) in float32, as (1, C, H, W) uint8."""
    return torch.round(ema.detach().float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def _host_image(q: torch.Tensor) -> np.ndarray:
    x = q[0].cpu()
    x = x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)
    return x.numpy().astype(np.float32) / np.float32(255.0)


def _snapshot_metrics(q: torch.Tensor, clean_t: torch.Tensor | None) -> tuple[float, float]:
    """PSNR and SSIM of an 8-bit snapshot against the clean image in float64 (NaN, NaN without one)."""
    if clean_t is None:
        return math.nan, math.nan
    x = q.to(torch.float64) / 255.0
    psnr = float(-10.0 * torch.log10(torch.mean((x - clean_t) ** 2)))
    return psnr, float(ssim_torch(x, clean_t))


def _number(value: float | None, digits: str = ".8g") -> str:
    return "" if value is None else format(value, digits)


def _log_csv(history: list[dict]) -> str:
    lines = [",".join(LOG_COLUMNS)]
    for row in history:
        name = f"{row['iteration']:05d}.png" if row["snapshot"] else ""
        cells = [str(row["iteration"]), name] + [_number(row[key]) for key in ("loss", "psnr", "ssim", "psnr_raw")]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _seed_txt(name: str, snapshots: dict[int, tuple[float, float]]) -> str:
    lines = []
    for iteration, (psnr, ssim) in sorted(snapshots.items()):
        figures = "0 0" if math.isnan(psnr) else f"{psnr:.6f} {ssim:.6f}"
        lines.append(f"{name}/{iteration:05d}.png {figures}")
    return "\n".join(lines) + ("\n" if lines else "")


def _choose(
    result: DipResult, judge: Judge | None, snapshots: dict[int, tuple[float, float]], has_clean: bool
) -> dict | None:
    """choice.json's content (see the module docstring), or None when there is nothing to choose with."""
    if judge is not None:
        judged = result.judge_iteration if result.judge_iteration is not None else result.iterations
        before = [i for i in snapshots if i <= judged]
        iteration = max(before) if before else (min(snapshots) if snapshots else None)
        score = _judge_score(judge, judged)
        return {"judge": judge.name, "iteration": iteration, "score": score, "judge_iteration": judged}
    if not has_clean:
        return None
    if not snapshots:
        return {"judge": "oracle", "iteration": None, "score": None, "judge_iteration": None}
    best = max(sorted(snapshots), key=lambda i: snapshots[i][0])  # the first of equal PSNRs
    return {"judge": "oracle", "iteration": best, "score": snapshots[best][0], "judge_iteration": best}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class _Writer:
    """One background thread that writes snapshots and checkpoints in the order they were given.

    The fit need not wait for the disk: on an H100, writing and syncing a 'skip' checkpoint (35 MB) in the loop
    took 140 ms, +28 % on the fit's time with a checkpoint every 100 iterations, and a 256x256 snapshot 8 ms.
    One thread and one queue keep the order (a checkpoint lands after the snapshots it lists); the queue is
    short, so a slow disk holds the fit back instead of filling the memory. An error surfaces at the next
    `submit` or at `flush`.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="run_BDN writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job[0](*job[1])
            except BaseException as error:  # handed over to the fit's thread, which raises it
                self._error = error
            finally:
                self._jobs.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, function: Callable, *args: object) -> None:
        self._raise()
        self._jobs.put((function, args))

    def flush(self) -> None:
        """Wait until everything submitted is written; raise the first error."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Finish the pending writes (they are atomic: worth keeping after an interruption too) and stop."""
        self._jobs.put(None)
        self._thread.join()


def _run_image(
    item: Item,
    out: Path,
    config: DipConfig,
    *,
    stop: str,
    judge_options: dict,
    noise: tuple[str, float | None],
    noise_text: str,
    crop: int | None,
    checkpoint_iter: int,
    device: torch.device,
    progress: bool,
    label: str,
    rank: int = 0,
    init: _Init | None = None,
) -> tuple[dict, int | None]:
    """Fit one image and write its files; returns (its done.json record, the iteration it resumed from)."""
    folder = out / item.name
    noisy, clean = _load(item, config, noise, crop)
    if init is not None:
        from bdn.dip.init import check_init_fits

        check_init_fits(init.metadata, config, 1 if noisy.ndim == 2 else 3, what=f"--init {init.given}")
    noise_used = noise_text if item.noisy is None else "real"
    identity = "none" if init is None else init.identity
    settings = _settings(config, stop, judge_options, noise_used, crop, noisy, identity)
    checkpoint_path = folder / "checkpoint.pt"
    resume_state, judge_state, start = None, {}, 0
    snapshots: dict[int, tuple[float, float]] = {}
    if checkpoint_path.exists():
        checkpoint = _load_checkpoint(checkpoint_path)
        start = _check_resumable(checkpoint_path, checkpoint, settings, config.num_iter)
        resume_state, judge_state = checkpoint["fit"], checkpoint["judge"]
        snapshots = {int(i): (p, s) for i, p, s in checkpoint["snapshots"].tolist()}
    for iteration, path in _snapshot_files(folder).items():
        if iteration > start:  # written after the checkpoint by the interrupted run: done again below
            path.unlink()
    folder.mkdir(parents=True, exist_ok=True)

    judge = _make_judge(stop, judge_options, noisy)
    if judge is not None and resume_state is not None:
        try:
            judge.load_state(judge_state, device)
        except BdnError as error:
            raise BdnError(
                f"checkpoint {checkpoint_path} does not fit this image ({error}); delete it to start the image again"
            ) from None
    clean_t = _tensor(clean, device).to(torch.float64) if clean is not None else None

    writer = _Writer()

    def on_iteration(iteration: int, frame) -> bool:
        if frame.is_snapshot:
            q = _quantised(frame.ema_tensor)
            writer.submit(write_image, folder / f"{iteration:05d}.png", _host_image(q))
            snapshots[iteration] = _snapshot_metrics(q, clean_t)
        if checkpoint_iter and iteration % checkpoint_iter == 0 and iteration < config.num_iter:
            table = torch.tensor([(i, *snapshots[i]) for i in sorted(snapshots)], dtype=torch.float64).reshape(-1, 3)
            state = {
                "format": CHECKPOINT_FORMAT,
                "settings": settings,
                "fit": frame.state(),  # CPU copies: the writer may take its time
                "snapshots": table,
                "judge": judge.state() if judge is not None else {},  # plain numbers and CPU copies
            }
            writer.submit(write_checkpoint, checkpoint_path, state)
        return False

    try:
        result = fit_dip(
            noisy,
            clean,
            config,
            device=device,
            init_state=None if init is None else init.state,
            resume_state=resume_state,
            on_iteration=on_iteration,
            judge=judge,
            progress=progress,
            label=label,
        )
        writer.flush()
    except BdnError as error:
        if resume_state is not None and str(error).startswith("resume_state"):  # made by hand, or damaged
            raise BdnError(
                f"checkpoint {checkpoint_path} does not fit this image ({error}); delete it to start the image again"
            ) from None
        raise
    finally:
        writer.close()

    atomic_write_text(folder / "log.csv", _log_csv(result.history))
    atomic_write_text(out / f"{item.name}.txt", _seed_txt(item.name, snapshots))
    choice = _choose(result, judge, snapshots, clean is not None)
    chosen_psnr = None
    if choice is not None:
        iteration = choice["iteration"]
        if iteration is not None:
            choice["file"] = f"{iteration:05d}.png"
            atomic_write_bytes(folder / "result.png", (folder / choice["file"]).read_bytes())
            chosen_psnr = _finite(snapshots[iteration][0])
        else:  # the fit ended before its first snapshot: its final output is all there is
            choice.update(iteration=result.iterations, file=None)
            q = _quantised(_tensor(result.ema, device))
            write_image(folder / "result.png", _host_image(q))
            chosen_psnr = _finite(_snapshot_metrics(q, clean_t)[0])
            if choice["judge"] == "oracle":
                choice["score"] = chosen_psnr
        choice["score"] = _finite(choice["score"])
        atomic_write_text(folder / "choice.json", json.dumps(choice, indent=2) + "\n")
    from bdn.report import dip_curves_figure

    dip_curves_figure(
        result.history,
        folder / "curves.png",
        item.name,
        result.peak_iteration,
        None if choice is None else choice["iteration"],
    )
    from bdn.metrics import psnr

    record = {
        "image": item.name,
        "noisy_psnr": _finite(psnr(clean, noisy)) if clean is not None else None,
        "best_psnr": _finite(result.peak_psnr),
        "best_iteration": result.peak_iteration,
        "judge": None if choice is None else choice["judge"],
        "chosen_iteration": None if choice is None else choice["iteration"],
        "chosen_psnr": chosen_psnr,
        "iterations": result.iterations,
        "seconds": round(result.seconds, 3),
        "s_per_iter": round(result.seconds_per_iteration, 5),
        "stopped_early": result.stopped_early,
        "fallbacks": result.fallbacks,
        "resumed_from": start or None,
        "shape": list(noisy.shape),
        "device": str(device),
        "rank": rank,
    }
    atomic_write_text(folder / "done.json", json.dumps(record, indent=2) + "\n")
    checkpoint_path.unlink(missing_ok=True)
    return record, start or None


# --- the folder --------------------------------------------------------------------------------------------


def _read_done(out: Path, item: Item) -> dict | None:
    try:
        return json.loads((out / item.name / "done.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_summary(out: Path, items: Sequence[Item]) -> tuple[list[dict], Path | None, str]:
    """summary.csv / summary.md over the finished images of `items`; (rows, csv path or None, Markdown)."""
    rows = [record for record in (_read_done(out, item) for item in items) if record is not None]
    if not rows:
        return rows, None, ""
    import pandas as pd

    from bdn.report import markdown_table

    frame = pd.DataFrame([{key: row.get(key) for key in SUMMARY_COLUMNS} for row in rows], columns=SUMMARY_COLUMNS)
    table = markdown_table(frame.astype(object).where(frame.notna(), ""), floatfmt=".3f")
    csv_path = atomic_write_text(out / "summary.csv", frame.to_csv(index=False))
    atomic_write_text(out / "summary.md", table + "\n")
    return rows, csv_path, table


def _problem(item: Item, error: BaseException) -> str:
    text = " ".join(str(error).split())
    named = [str(p) for p in (item.noisy, item.clean) if p is not None]
    return text if any(text.startswith(p) for p in named) else f"{item.name}: {text}"


def run_folder(
    noisy_dir: str | Path | None,
    clean_dir: str | Path | None,
    out: str | Path,
    config: DipConfig | None = None,
    *,
    stop: str = "none",
    judge_options: dict | None = None,
    noise: str = "gaussian:25",
    crop: int | None = None,
    limit: int | None = None,
    part: tuple[int, int] | None = None,
    checkpoint_iter: int = 100,
    device: str = "auto",
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    init: str | None = None,
) -> FolderReport:
    """DIP over a folder (see the module docstring for the files); BdnError for bad input as a whole, while one
    bad image only adds a line to `problems` and the batch goes on.

    `init`: a learned initialisation (a shipped name or a safetensors file, bdn.dip.init); it fixes the net,
    the input and the mask ratio of `config` to those it was learned for, and every fit starts from its weights.
    """
    from bdn.noise import parse_noise

    config = DipConfig() if config is None else config
    _check_config(config)
    judge_options = dict(judge_options or {})
    if stop == "oracle":
        raise BdnError(
            "--stop oracle: the oracle needs the clean image, so it only chooses offline (it does when a "
            "clean image exists and --stop is none)"
        )
    if stop not in STOPS:
        raise BdnError(f"--stop {stop!r}: choose one of {', '.join(STOPS)}")
    if stop != "none":  # bad judge options fail now, not once per image
        probe = {"noisy": np.full((16, 16), 0.5, np.float32), "sigma": 1.0} if stop == "noise" else {}
        make_judge(stop, **{**probe, **judge_options})
    noise_model = parse_noise(noise)
    for name, value, least in (("--crop", crop, 1), ("--limit", limit, 1), ("--checkpoint_iter", checkpoint_iter, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise BdnError(f"{name} must be a whole number >= {least}, got {value!r}")
    opened, changed = None, []
    if init is not None:
        given = config
        opened, config = _open_init(init, config)
        changed = [
            f"{name} {getattr(config, name)!r}"
            for name in ("net_type", "input_base", "input_depth", "mask_ratio")
            if getattr(config, name) != getattr(given, name)
        ]
    items = find_items(noisy_dir, clean_dir)
    if limit is not None:
        items = items[:limit]
    rank, world, local_rank = torchrun_world()
    mine = select_items(items, part=part, rank=rank, world=world)
    dev = pick_device(device, world, local_rank)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BdnError(f"{out}: cannot create the output folder ({error.strerror or error})") from None
    say = echo or (lambda _text: None)
    if opened is not None and changed and rank == 0:
        say(f"--init {init}: fits with {', '.join(changed)} (what it was learned for)")
    grouped = _start_group(world)
    show = progress and rank == 0
    report = FolderReport()

    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine), desc="run_BDN", unit="image", disable=not show, dynamic_ncols=True)
    for index, item in enumerate(mine, 1):
        if (out / item.name / "done.json").exists():
            report.skipped.append(item.name)
            bar.update(1)
            continue
        try:
            record, resumed = _run_image(
                item,
                out,
                config,
                stop=stop,
                judge_options=judge_options,
                noise=noise_model,
                noise_text=noise,
                crop=crop,
                checkpoint_iter=checkpoint_iter,
                device=dev,
                progress=show,
                label=f"{item.name} ({index}/{len(mine)})",
                rank=rank,
                init=opened,
            )
        except BdnError as error:
            report.problems.append(_problem(item, error))
        except torch.cuda.OutOfMemoryError:
            report.problems.append(f"{item.name}: out of memory on {dev} (try --crop or a lighter --net_type)")
        else:
            report.done.append(item.name)
            if resumed:
                report.resumed[item.name] = resumed
            line = f"{item.name}: {record['iterations']} iterations in {record['seconds']:.1f} s"
            if resumed:
                line += f" (resumed at {resumed})"
            if record["best_psnr"] is not None:
                line += f", peak {record['best_psnr']:.2f} dB at {record['best_iteration']}"
            if record["chosen_psnr"] is not None:
                line += f", {record['judge']} chose {record['chosen_iteration']} ({record['chosen_psnr']:.2f} dB)"
            (bar.write if show else say)(line)
        bar.update(1)
    bar.close()

    if grouped:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if rank == 0 or not grouped:
        report.rows, report.summary, report.table = write_summary(out, items)
    return report


# --- command line ------------------------------------------------------------------------------------------


def build_parser(prog: str = "run_BDN.py") -> argparse.ArgumentParser:
    defaults = DipConfig()
    parser = OneLineParser(
        prog=prog,
        description="Deep Image Prior over a folder of noisy images (with or without clean partners); see "
        "bdn/dip/run.py for the files it writes.",
    )
    add = parser.add_argument
    add("--dataset_real_path", help="folder of noisy images (<id>_real.<ext>)")
    add("--dataset_mean_path", help="folder of clean images (<id>_mean.<ext>); alone: noise is synthesised")
    add("--output_path", required=True, help="output folder")
    add("--num_iter", type=int, default=defaults.num_iter)
    add("--save_iter", type=int, default=defaults.save_iter, help="snapshot interval (the choosers' candidates)")
    add("--show_iter", type=int, default=defaults.show_iter, help="how often the figures reach the progress bar")
    add("--checkpoint_iter", type=int, default=100, help="checkpoint interval for resuming; 0: none")
    add("--lr", type=float, default=defaults.lr)
    add("--input_depth", type=int, default=defaults.input_depth)
    add("--net_type", default="skip", help=f"generator: {', '.join(NET_TYPES)}")
    add("--input_base", default=defaults.input_base, help="noise | image | smoothed")
    add("--input_std", type=float, default=defaults.input_std, help="input perturbation std (1/255 units)")
    add("--input_perturbation", default=defaults.input_perturbation, help="fixed | random | none")
    add("--reference_std", type=float, default=defaults.reference_std, help="reference noise std (1/255 units)")
    add(
        "--reference_perturbation",
        default=defaults.reference_perturbation,
        help="fixed (the seed's literal behaviour, default) | random | none",
    )
    add("--fallback_db", type=float, default=defaults.fallback_db, help="fall back on a drop of this many dB; 0: off")
    add("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add(
        "--precision",
        default=defaults.precision,
        choices=PRECISIONS,
        help="network arithmetic: auto (bf16 where the CPU has AMX/AVX512-BF16 or the GPU bf16, else fp32), fp32, "
        "bf16 (float32 master weights, optimiser, loss and EMA either way)",
    )
    add("--seed", type=int, default=defaults.seed)
    add(
        "--mask_ratio",
        type=float,
        default=defaults.mask_ratio,
        help="share of pixels hidden from the input each iteration (blind-spot fit; needs --input_base image or "
        "smoothed)",
    )
    add(
        "--init",
        default=None,
        metavar="NAME_OR_PATH",
        help="learned initialisation: a shipped name or a .safetensors file; it sets --net_type, --input_base, "
        "--input_depth and --mask_ratio to what it was learned for",
    )
    add("--stop", default="none", help="online judge that ends each fit: none | wmv | emv | noise | biqan")
    add("--biqan_model", default=None, help="BIQAN checkpoint for --stop biqan (train_BIQAN.py's best.safetensors)")
    add("--biqan_patience", type=int, default=None, help="biqan: snapshots without a better score before stopping")
    add("--biqan_start_index", type=int, default=None, help="biqan: snapshots skipped before choosing (default 40)")
    add("--biqan_smooth", type=float, default=None, help="biqan: the seed's score smoothing factor (e.g. 0.8)")
    add("--biqan_tiles", type=int, default=None, help="biqan: score a grid of N x N crops, averaged (default 1)")
    add("--wmv_window", type=int, default=None, help="WMV window (default 100)")
    add("--wmv_patience", type=int, default=None, help="WMV patience (default 1000)")
    add("--wmv_stride", type=int, default=None, help="WMV: watch only iterations that are multiples of N (default 1)")
    add("--wmv_source", default=None, choices=("raw", "ema"), help="WMV: watch the raw iterate or the EMA output")
    add("--emv_alpha", type=float, default=None, help="EMV smoothing (default 0.1)")
    add("--emv_patience", type=int, default=None, help="EMV patience (default 1000)")
    add(
        "--noise_sigma",
        type=float,
        default=None,
        help="noise judge: noise level, 0-255 (default: estimated from each image)",
    )
    add(
        "--noise_factor",
        type=float,
        default=None,
        help="noise judge: stop when the residual variance is <= (factor x sigma)^2 (default 1)",
    )
    add("--noise", default="gaussian:25", help="noise synthesised for a clean-only folder, MODEL[:STRENGTH]")
    add("--is_split_dataset", action="store_true", help="take one part of the sorted image list (the seed's split)")
    add("--dataset_part_id", default=None, help="part I (1-based), or I/P as the seed wrote it")
    add("--dataset_parts", type=int, default=None, help="number of parts P")
    add("--limit", type=int, default=None, help="only the first N images of the sorted list")
    add("--crop", type=int, default=None, help="centre crop to at most N x N pixels first (quick runs)")
    add("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def _part(args: argparse.Namespace) -> tuple[int, int] | None:
    if not args.is_split_dataset:
        return None  # as the seed: the part options mean nothing without --is_split_dataset
    text = (args.dataset_part_id or "").strip()
    given, _, total = text.partition("/")
    try:
        part = int(given)
        parts = int(total) if total else args.dataset_parts
    except ValueError:
        raise BdnError(f"--dataset_part_id {text!r}: expected I or I/P with whole numbers (e.g. 1/4)") from None
    if parts is None:
        raise BdnError("--is_split_dataset needs --dataset_parts P (or --dataset_part_id I/P)")
    if total and args.dataset_parts is not None and int(total) != args.dataset_parts:
        raise BdnError(f"--dataset_part_id {text} disagrees with --dataset_parts {args.dataset_parts}")
    if parts < 1 or not 1 <= part <= parts:
        raise BdnError(f"--dataset_part_id {part} of {parts} parts: need 1 <= I <= P")
    return part, parts


def _config(args: argparse.Namespace) -> DipConfig:
    fallback = None if args.fallback_db is not None and args.fallback_db == 0 else args.fallback_db
    config = replace(
        DipConfig(),
        net_type=args.net_type,
        input_depth=args.input_depth,
        lr=args.lr,
        num_iter=args.num_iter,
        save_iter=args.save_iter,
        show_iter=args.show_iter,
        input_base=args.input_base,
        input_std=args.input_std,
        input_perturbation=args.input_perturbation,
        reference_std=args.reference_std,
        reference_perturbation=args.reference_perturbation,
        fallback_db=fallback,
        mask_ratio=args.mask_ratio,
        seed=args.seed,
        precision=args.precision,
    )
    _check_config(config)
    return config


def _shipped_biqan() -> str:
    """The quality network shipped with bdn (checkpoints/biqan.safetensors), for --stop biqan without a model."""
    from bdn.tensorfile import shipped_files

    shipped = shipped_files("biqan").get("")
    if shipped is None:
        raise BdnError("--stop biqan needs --biqan_model FILE (a train_BIQAN.py checkpoint): no BIQAN is shipped yet")
    return str(shipped)


def _judge_options(args: argparse.Namespace) -> dict:
    if args.stop == "biqan":
        # The quality network scores the snapshots run_BDN saves (every save_iter), as test_BIQAN does offline.
        given = {
            "model_path": args.biqan_model or _shipped_biqan(),
            "patience": args.biqan_patience,
            "start_index": args.biqan_start_index,
            "smooth": args.biqan_smooth,
            "tiles": args.biqan_tiles,
            "every": args.save_iter,
        }
    else:
        given = {
            "wmv": {
                "window": args.wmv_window,
                "patience": args.wmv_patience,
                "stride": args.wmv_stride,
                "source": args.wmv_source,
            },
            "emv": {"alpha": args.emv_alpha, "patience": args.emv_patience},
            "noise": {"sigma": args.noise_sigma, "factor": args.noise_factor},
        }.get(args.stop, {})
    return {key: value for key, value in given.items() if value is not None}


def main(argv: Sequence[str] | None = None, prog: str = "run_BDN.py") -> int:
    """The command line; returns the exit status (0 all done, 1 bad input or any image that failed)."""
    try:
        args = build_parser(prog).parse_args(argv)
        if args.threads is not None:
            if args.threads < 1:
                raise BdnError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        report = run_folder(
            args.dataset_real_path,
            args.dataset_mean_path,
            args.output_path,
            _config(args),
            stop=args.stop,
            judge_options=_judge_options(args),
            noise=args.noise,
            crop=args.crop,
            limit=args.limit,
            part=_part(args),
            checkpoint_iter=args.checkpoint_iter,
            device=args.device,
            progress=args.progress,
            init=args.init,
        )
    except BdnError as error:
        print(f"{prog}: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    if report.table:
        print(report.table)
    if report.skipped:
        print(f"{len(report.skipped)} image(s) were finished already and skipped")
    if report.problems:
        print(f"{prog}: {len(report.problems)} image(s) failed:", file=sys.stderr)
        for line in report.problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0
