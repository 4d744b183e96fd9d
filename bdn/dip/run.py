"""Deep Image Prior over a folder of images, writing the run folder every later step reads: `bdn run` (run_BDN.py
in a checkout) and `run_folder` here.

    bdn run --dataset-real-path real/ --dataset-mean-path mean/ --output-path OUT --num-iter 3000
    from bdn.dip.run import run_folder; run_folder("real/", "mean/", "OUT", DipConfig(...))

Options beyond the seed's: `--stop wmv|emv|noise` ends each fit by an online judge (bdn.dip.judges; the noise
judge, the discrepancy principle, compares the EMA output with the image being fitted, at `--noise_sigma`
(default: estimated from that image) times `--noise_factor`; `--stop biqan --biqan_model FILE` scores each
snapshot with a quality network from train_BIQAN.py); `--init NAME_OR_PATH` starts every fit from a
learned initialisation (bdn.dip.init), whose net, input and mask ratio then replace `--net_type`, `--input_base`,
`--input_depth` and `--mask_ratio` (a file that is not an initialisation, or whose weights do not fit the net it
names, fails before any image; an image whose colour channels it was not learned for fails alone);
`--mask_ratio` hides that share of the input's pixels each iteration (a blind-spot fit, DipConfig.mask_ratio).

The files it writes per image (snapshots, log.csv, the seed's `<id>.txt`, choice.json + result.png, curves.png,
done.json, checkpoint.pt) and over the folder (summary.csv / summary.md) are specified in bdn/dip/runfolder.py,
which writes and reads them. `run.json` is the run's record (bdn.record: versions, device, threads, seed, every
option, weights' SHA-256), written when an invocation's first image is done; each done.json adds the seed, the
thread count, its input files' paths and SHA-256 and result.png's SHA-256, so that `bdn verify <run>/run.json
--image <id>` can fit that image again and compare the bytes.

Resume: running the same command again skips images whose done.json exists. An unfinished image continues from
its checkpoint: `torch.save` of plain tensors and numbers (`fit_dip`'s `frame.state()`: weights, Adam moments,
EMA, fall-back weights, noise generator, history; plus the snapshot table and the judge's `state()`), read back
with `torch.load(weights_only=True)`. On the CPU the resumed fit is exactly the uninterrupted one (tested through
a SIGKILL); on CUDA it continues from the same state, but CUDA fits are not bit-reproducible anyway. The online
judge resumes exactly too (`load_state`): it chooses and stops where it would have without the interruption.
That costs space: WMV's state holds its window of iterates, so each checkpoint carries `--wmv_window` float32
images (100 colour 512x512 images: 315 MB) besides the net. Snapshot files past the checkpoint are deleted when
the image restarts. A damaged checkpoint is refused ("... is damaged (...); delete it to start the image again"),
never silently discarded; so is one made with other settings (all of DipConfig but num_iter, show_iter and the speed
switches; the judge and its options; the noise; the crop; the image; the learned initialisation, by content) or
by another version of run_BDN (an older checkpoint format).
Snapshots and checkpoints are written by one background thread, in order (bdn/dip/writer.py).

Many processes: under torchrun (WORLD_SIZE/RANK set) rank r takes images `sorted_list[r::world_size]` and uses
cuda:LOCAL_RANK when on CUDA; `bdn run` starts a gloo process group (on CPU and GPU alike: it only carries the
final barrier, and gloo waits on the CPU with a long timeout, where an NCCL barrier would need a device and its
watchdog would abort a wait of hours) and hands its barrier to `run_folder`, so that rank 0 writes the summary once
every rank has finished. Should the group fail to start,
every rank writes the summary when it finishes (the last one lists every image, barring a near tie). The seed's
manual split (`--is_split_dataset --dataset_part_id I --dataset_parts P`, or `--dataset_part_id I/P` as the seed
wrote it) takes part I (1-based) of P contiguous parts of the sorted list, sizes differing by at most one (the
seed's `len // P` parts dropped the remainder); it combines with torchrun.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from bdn.data import CLEAN_SUFFIX, Pair, centre_crop, clean_images, crop_to_multiple, find_pairs, load_pair, synthesize
from bdn.devices import pick_device, torchrun_world
from bdn.dip.config import DipConfig, DipResult, check_config
from bdn.dip.fit import fit_dip
from bdn.dip.init import OpenedInit, open_init
from bdn.dip.judges import NEEDS_NOISY, Judge, make_judge
from bdn.dip.nets import min_size, net_spec, smallest_side
from bdn.dip.runfolder import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    LOCK_BEAT_SECONDS,
    LOCK_NAME,
    heartbeat,
    log_csv,
    read_checkpoint,
    read_done,
    release_lock,
    seed_txt,
    snapshot_at_or_before,
    snapshot_files,
    snapshot_name,
    take_lock,
    write_choice,
    write_done,
    write_summary,
)
from bdn.dip.writer import OrderedWriter
from bdn.errors import BdnError
from bdn.io import atomic_write_text, read_image, write_image
from bdn.record import file_sha256
from bdn.tensorfile import write_checkpoint
from bdn.tensors import to_8bit, to_chw, to_image
from bdn.torch_metrics import psnr_torch, ssim_score

__all__ = ["FolderReport", "Item", "find_items", "run_folder", "select_items"]

STOPS = ("none", "wmv", "emv", "noise", "biqan", "learned")
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
    busy: list[str] = field(default_factory=list)  # being fitted by another process (its fitting.lock)
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

    `init` names the learned initialisation by its content (see bdn.dip.init.open_init), not by its name or path.
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


# --- judges ------------------------------------------------------------------------------------------------


def _make_judge(stop: str, judge_options: dict, noisy: np.ndarray) -> Judge | None:
    """The online judge for one image (None for --stop none); the noise judge compares with the fitted image."""
    if stop == "none":
        return None
    if stop in NEEDS_NOISY:
        return make_judge(stop, noisy=noisy, **judge_options)
    return make_judge(stop, **judge_options)


# --- one image ---------------------------------------------------------------------------------------------


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


def _snapshot_metrics(q: torch.Tensor, clean_t: torch.Tensor | None) -> tuple[float, float]:
    """PSNR and SSIM of an 8-bit snapshot against the clean image in float64 (NaN, NaN without one)."""
    if clean_t is None:
        return math.nan, math.nan
    x = q.to(torch.float64) / 255.0
    return float(psnr_torch(x, clean_t)), float(ssim_score(x, clean_t))


def _host_image(q: torch.Tensor) -> np.ndarray:
    """An 8-bit snapshot tensor as the float image write_image stores exactly."""
    return to_image(q) / np.float32(255.0)


def _choose(
    result: DipResult, judge: Judge | None, snapshots: dict[int, tuple[float, float]], has_clean: bool
) -> dict | None:
    """choice.json's content (see the module docstring), or None when there is nothing to choose with."""
    if judge is not None:
        judged = result.judge_iteration if result.judge_iteration is not None else result.iterations
        iteration = snapshot_at_or_before(snapshots, judged)
        score = dict(judge.scores).get(judged)  # the judge's own figure at its choice
        return {"judge": judge.name, "iteration": iteration, "score": score, "judge_iteration": judged}
    if not has_clean:
        return None
    if not snapshots:
        return {"judge": "oracle", "iteration": None, "score": None, "judge_iteration": None}
    best = max(sorted(snapshots), key=lambda i: snapshots[i][0])  # the first of equal PSNRs
    return {"judge": "oracle", "iteration": best, "score": snapshots[best][0], "judge_iteration": best}


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


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
    init: OpenedInit | None = None,
    keep_state: bool = False,
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
    checkpoint_path = folder / CHECKPOINT_NAME
    resume_state, judge_state, start = None, {}, 0
    snapshots: dict[int, tuple[float, float]] = {}
    if checkpoint_path.exists():
        checkpoint = read_checkpoint(checkpoint_path)
        start = _check_resumable(checkpoint_path, checkpoint, settings, config.num_iter)
        resume_state, judge_state = checkpoint["fit"], checkpoint["judge"]
        snapshots = {int(i): (p, s) for i, p, s in checkpoint["snapshots"].tolist()}
        (folder / "done.json").unlink(missing_ok=True)  # a finished fit going on: unfinished until it ends
    for iteration, path in snapshot_files(folder).items():
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
    clean_t = to_chw(clean, torch.float32, device)[None].to(torch.float64) if clean is not None else None

    writer = OrderedWriter()
    beat = [time.monotonic()]

    def on_iteration(iteration: int, frame) -> bool:
        if time.monotonic() - beat[0] >= LOCK_BEAT_SECONDS:  # the lock says this fit still runs
            heartbeat(folder / LOCK_NAME)
            beat[0] = time.monotonic()
        if frame.is_snapshot:
            q = to_8bit(frame.ema_tensor)
            writer.submit(write_image, folder / snapshot_name(iteration), _host_image(q))
            snapshots[iteration] = _snapshot_metrics(q, clean_t)
        periodic = checkpoint_iter and iteration % checkpoint_iter == 0 and iteration < config.num_iter
        if periodic or (keep_state and iteration == config.num_iter):  # the final state: a later run may go on
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

    atomic_write_text(folder / "log.csv", log_csv(result.history))
    atomic_write_text(out / f"{item.name}.txt", seed_txt(item.name, snapshots))
    choice = _choose(result, judge, snapshots, clean is not None)
    chosen_psnr, result_sha256 = None, None
    if choice is not None:
        iteration = choice["iteration"]
        if iteration is not None:
            choice["file"] = snapshot_name(iteration)
            result_image = (folder / choice["file"]).read_bytes()
            chosen_psnr = _finite(snapshots[iteration][0])
        else:  # the fit ended before its first snapshot: its final output is all there is
            choice.update(iteration=result.iterations, file=None)
            q = to_8bit(to_chw(result.ema, device=device)[None])
            result_image = _host_image(q)
            chosen_psnr = _finite(_snapshot_metrics(q, clean_t)[0])
            if choice["judge"] == "oracle":
                choice["score"] = chosen_psnr
        choice["score"] = _finite(choice["score"])
        write_choice(folder, choice, result_image)
        result_sha256 = file_sha256(folder / "result.png")
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
        "seed": config.seed,
        "torch_threads": torch.get_num_threads(),
        "input_sha256": {
            kind: file_sha256(path) for kind, path in (("noisy", item.noisy), ("clean", item.clean)) if path
        },
        "input_paths": {kind: str(path) for kind, path in (("noisy", item.noisy), ("clean", item.clean)) if path},
        "result_sha256": result_sha256,  # what `bdn verify <run>/run.json --image <id>` compares a re-fit with
    }
    write_done(folder, record)
    if not (keep_state and result.iterations == config.num_iter and not result.stopped_early):
        checkpoint_path.unlink(missing_ok=True)
    return record, start or None


# --- the folder --------------------------------------------------------------------------------------------


def _finished(folder: Path, num_iter: int) -> bool:
    """done.json is there, and no kept final state lets the fit go on to `num_iter` (see keep_state)."""
    done = read_done(folder)
    if done is None:
        return (folder / "done.json").exists()  # unreadable: finished as far as passing it by goes
    more = int(done.get("iterations") or 0) < num_iter and not done.get("stopped_early")
    return not (more and (folder / CHECKPOINT_NAME).exists())


def _problem(item: Item, error: BaseException) -> str:
    text = " ".join(str(error).split())
    named = [str(p) for p in (item.noisy, item.clean) if p is not None]
    return text if any(text.startswith(p) for p in named) else f"{item.name}: {text}"


def _write_run_record(
    out: Path,
    config: DipConfig,
    stop: str,
    judge_options: dict,
    noise: str,
    crop,
    limit,
    part,
    checkpoint_iter: int,
    device,
    init: str | None,
    keep_state: bool,
) -> None:
    """run.json: the run's record (bdn.record), rewritten by each invocation that finishes an image."""
    from bdn.record import make_record, write_record

    weights = []
    if init is not None:
        from bdn.dip.init import find_init

        weights.append(find_init(init))
    weights += [Path(str(v)) for k, v in judge_options.items() if k in ("model_path", "weights") and v is not None]
    options = {
        "config": {f.name: getattr(config, f.name) for f in fields(config)},
        "stop": stop,
        "judge_options": judge_options,
        "noise": noise,
        "crop": crop,
        "limit": limit,
        "part": part,
        "checkpoint_iter": checkpoint_iter,
        "init": init,
        "keep_state": keep_state,
    }
    write_record(out / "run.json", make_record("run", options, weights=weights, seed=config.seed, device=str(device)))


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
    barrier: Callable[[], None] | None = None,
    keep_state: bool = False,
) -> FolderReport:
    """DIP over a folder (see the module docstring for the files); BdnError for bad input as a whole, while one
    bad image only adds a line to `problems` and the batch goes on.

    What `bdn run` (run_BDN.py) runs. The files it writes are specified in bdn/dip/runfolder.py. Running it again
    skips images whose done.json exists and continues an unfinished one from its checkpoint.

    Parameters
    ----------
    noisy_dir : str or pathlib.Path or None
        The noisy images. With `clean_dir`, `<id>_real.<ext>` pairs with `<id>_mean.<ext>`, otherwise equal
        stems pair up (the two may be one folder). None: the noise is synthesised from the clean images.
    clean_dir : str or pathlib.Path or None
        The clean images (`<id>_mean.<ext>` or `<id>.<ext>`), for PSNR, SSIM and the oracle; None: none.
    out : str or pathlib.Path
        The run folder (created).
    config : DipConfig, optional
        The fit's settings; default ``DipConfig()``, the seed's run_BDN defaults.
    stop : {'none', 'wmv', 'emv', 'noise', 'biqan'}, default 'none'
        The online judge that ends each fit (bdn.dip.judges; 'biqan' from biqan.judge); 'none' runs every
        iteration, and the oracle then chooses offline where a clean image exists. 'oracle' is refused: it needs
        the clean image, so it only chooses offline.
    judge_options : dict, optional
        Keyword options of the judge (``bdn.dip.judges.make_judge``), e.g. sigma and factor of 'noise' (the image
        being fitted is its noisy image), model_path of 'biqan'. Bad options fail before any image.
    noise : str, default 'gaussian:25'
        The noise synthesised for an image with no noisy file, as MODEL:STRENGTH (`bdn.noise.parse_noise`),
        seeded by the image's name and ``config.seed``.
    crop : int, optional
        Centre-crop each image to at most this many pixels a side (then to the net's multiple, as always).
    limit : int, optional
        Only the first `limit` images, by name.
    part : (int, int), optional
        (I, P): part I (1-based) of P contiguous parts of the sorted list (the seed's manual split), sizes
        differing by at most one; it combines with torchrun (rank r takes every world-th image of it).
    checkpoint_iter : int, default 100
        Write the image's checkpoint every that many iterations (0: never), for resuming.
    device : str, default 'auto'
        'auto' (cuda, else mps, else cpu; under torchrun cuda:LOCAL_RANK) or a torch device name.
    progress : bool, default True
        Progress bars (rank 0 only).
    echo : callable or None, default print
        Receives one line per image fitted; None: silent.
    init : str, optional
        A learned initialisation (a shipped name or a safetensors file, bdn.dip.init); it fixes the net, the
        input and the mask ratio of `config` to those it was learned for, and every fit starts from its weights.
    barrier : callable, optional
        Under torchrun, a process group's barrier (the command layer starts the group): every rank waits there
        when its images are done, then rank 0 writes the summary; without one, every rank writes it.
    keep_state : bool, default False
        Keep each image's final state (its checkpoint.pt at the last iteration, about the size of the snapshots'
        PNGs) when it ran every iteration (no judge stopped it). A later run with a larger `config.num_iter` then
        continues those images from there instead of passing them by as finished (exactly as one longer run, on
        the CPU); images finished without a kept state stay finished.

    Returns
    -------
    FolderReport
        rows (summary rows of every finished image of the list), done (fitted or finished in this run), skipped
        (finished before it), resumed (name -> checkpoint iteration), problems (one line per image that failed),
        summary (summary.csv, where this process wrote it) and table (the summary as Markdown).

    Raises
    ------
    BdnError
        For bad input as a whole: neither folder given, unpaired images, a bad config, stop, judge option, noise
        spec, crop, limit, part, checkpoint_iter, device or init, an output folder that cannot be created.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlib import Path
    >>> import bdn
    >>> from bdn.dip import DipConfig
    >>> from bdn.dip.run import run_folder
    >>> _ = bdn.write_image("clean/0001_mean.png", np.random.default_rng(0).random((64, 64, 3)))
    >>> config = DipConfig(net_type="skip64", num_iter=10, save_iter=5)  # the seed: 'skip', 3000 iterations
    >>> report = run_folder(None, "clean", "run", config, progress=False, echo=None)  # noise: gaussian:25
    >>> report.done, report.problems, report.summary.name
    (['0001'], [], 'summary.csv')
    >>> sorted(path.name for path in Path("run/0001").iterdir())  # doctest: +NORMALIZE_WHITESPACE
    ['00005.png', '00010.png', 'choice.json', 'curves.png', 'done.json', 'log.csv', 'result.png']
    >>> run_folder(None, "clean", "run", config, progress=False, echo=None).skipped  # finished: not fitted again
    ['0001']
    """
    from bdn.noise import parse_noise

    config = DipConfig() if config is None else config
    check_config(config)
    judge_options = dict(judge_options or {})
    if stop == "oracle":
        raise BdnError(
            "--stop oracle: the oracle needs the clean image, so it only chooses offline (it does when a "
            "clean image exists and --stop is none)"
        )
    if stop not in STOPS:
        raise BdnError(f"--stop {stop!r}: choose one of {', '.join(STOPS)}")
    if stop != "none":  # bad judge options fail now, not once per image
        probe = {"noisy": np.full((16, 16), 0.5, np.float32), "sigma": 1.0} if stop in NEEDS_NOISY else {}
        make_judge(stop, **{**probe, **judge_options})
    noise_model = parse_noise(noise)
    for name, value, least in (("--crop", crop, 1), ("--limit", limit, 1), ("--checkpoint_iter", checkpoint_iter, 0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise BdnError(f"{name} must be a whole number >= {least}, got {value!r}")
    opened, changed = None, []
    if init is not None:
        given = config
        opened, config = open_init(init, config)
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
    show = progress and rank == 0
    report = FolderReport()

    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine), desc="run_BDN", unit="image", disable=not show, dynamic_ncols=True)
    for index, item in enumerate(mine, 1):
        folder = out / item.name
        finished = _finished(folder, config.num_iter)
        lock = None if finished else take_lock(folder)
        if lock is not None and _finished(folder, config.num_iter):  # another process finished it meanwhile
            release_lock(lock)
            lock, finished = None, True
        if lock is None:  # finished, or being fitted by another process
            (report.skipped if finished else report.busy).append(item.name)
            if not finished:
                say(f"{item.name}: being fitted by another process ({folder / LOCK_NAME}); passed by")
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
                keep_state=keep_state,
            )
        except BdnError as error:
            report.problems.append(_problem(item, error))
        except torch.cuda.OutOfMemoryError:
            report.problems.append(f"{item.name}: out of memory on {dev} (try --crop or a lighter --net_type)")
        else:
            if rank == 0 and not report.done:  # the run's record, once an image is done (bdn.record)
                _write_run_record(
                    out, config, stop, judge_options, noise, crop, limit, part, checkpoint_iter, dev, init, keep_state
                )
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
        finally:
            release_lock(lock)
        bar.update(1)
    bar.close()

    if barrier is not None:
        barrier()
    if rank == 0 or barrier is None:
        report.rows, report.summary, report.table = write_summary(out, [item.name for item in items])
    return report
