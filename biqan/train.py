"""Train BIQAN on score files (train_BIQAN.py): EMD loss, validation by source image, early stopping, resume.

    python train_BIQAN.py --score_path runs/PolyU/scores.txt --output_path checkpoints/biqan_polyu
    torchrun --nproc-per-node 2 train_BIQAN.py ...   (data-parallel: each process takes its share of every epoch)

Data. Each score file line names an iterate (a DIP snapshot `<run>/<image>/<iter>.png`) and its 10-bin target
(biqan.labels). Several score files are pooled. The validation set holds out whole source images, never single
iterates: an iterate's source is the name of its image folder, so the same image in two runs (two noise settings,
say) lands on one side only. A seeded share of the images (`--val_fraction`, at least one) is held out.

Inputs (biqan.model.prepare): `--protocol native` takes random `--crop` crops at the iterate's own resolution
(every iterate must be at least that large), `resize` is the seed's square resize to 256 then a 224 crop; both
with random flips in training and the centre crop for validation.

Schedule. Adam at `--lr` on the EMD loss; the learning rate times 0.2 after 2 epochs without a better validation
loss; training stops after 8 such epochs (or `--epochs` in all). With `--backbone FILE` (torchvision names,
safetensors) training has two stages: for up to `--head_epochs` epochs only the layers not in the backbone learn
(the backbone's batch norms keep their statistics), then all layers, with a fresh optimiser and plateau schedule.

Output folder (`--output_path`; only rank 0 writes): `best.safetensors` (lowest validation loss) and
`last.safetensors` (biqan.model.load_biqan reads both), `checkpoint.pt` (everything needed to resume; loaded with
weights_only=True), `log.csv` (epoch, layers, train_emd, val_emd, lr, seconds), `curves.png` and `split.json` (the
training and validation source images). Running the same command again resumes after the last finished epoch and
ends exactly as an uninterrupted run would (same world size and device); other settings are refused.

Randomness is drawn per epoch from (seed, epoch): the shuffling, each sample's crop and flips (from seed, epoch
and its index, so DataLoader workers do not change them) and dropout (from seed, epoch and rank). That makes
resuming exact without saving random states.

torchrun: each process trains a DistributedDataParallel replica (gloo on the CPU, nccl on CUDA: device
cuda:LOCAL_RANK) on its share of each epoch's shuffled training set; validation is split across the processes and
summed. The output folder must be shared by all processes to resume.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bdn.devices import pick_device, torchrun_world
from bdn.errors import BdnError
from bdn.tensorfile import read_checkpoint, write_checkpoint
from biqan.model import (
    ARCHES,
    DEFAULT_ARCH,
    DEFAULT_CROP,
    DEFAULT_DROPOUT,
    PROTOCOLS,
    Biqan,
    build_biqan,
    emd_loss,
    load_backbone,
    prepare,
    prepare_tiles,
    save_biqan,
)

PROG = "train_BIQAN.py"
CHECKPOINT_FORMAT = "bdn-biqan-train-1"
PATIENCE = 8  # epochs in a row without a better validation loss before training stops (Keras EarlyStopping's)
LR_FACTOR, LR_PATIENCE = 0.2, 2  # the seed's Keras ReduceLROnPlateau: times 0.2 after 2 epochs without progress
# Settings that may change when a run resumes: they change where or how fast it runs, not what it computes.
_FREE = {"score_paths", "output_path", "epochs", "threads", "device", "workers", "backbone"}


@dataclass(frozen=True)
class TrainOptions:
    """What train_BIQAN.py's options set (see `build_parser` for each one's meaning)."""

    score_paths: tuple[str, ...]
    output_path: str
    arch: str = DEFAULT_ARCH
    dropout: float = DEFAULT_DROPOUT
    protocol: str = "native"
    crop: int = DEFAULT_CROP
    batch_size: int = 32
    epochs: int = 40
    head_epochs: int = 5
    lr: float = 1e-3
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 2
    device: str = "auto"
    backbone: str | None = None
    workers: int = 2
    tiles: int = 1  # crops a side per iterate and epoch: tiles x tiles samples of each iterate


# --- data ----------------------------------------------------------------------------------------------


def read_score_files(paths: Sequence[str | Path]) -> list[tuple[Path, np.ndarray]]:
    """All rows of the score files, in order (biqan.labels.read_scores: missing files and images are BdnError)."""
    from biqan.labels import read_scores

    if not paths:
        raise BdnError("give at least one --score_path")
    rows = []
    for path in paths:
        rows.extend((image, np.asarray(p, dtype=np.float32)) for image, p in read_scores(path))
    return rows


def source_image(path: Path) -> str:
    """The source image of an iterate: its folder's name (`<run>/<image>/<iter>.png`)."""
    return path.parent.name


def split_by_image(paths: Sequence[Path], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, validation indices): a seeded `fraction` of the source images (at least one) held out,
    whole PolyU scenes at a time (bdn.data.split_by_scene over the iterates' source images)."""
    from bdn.data import split_by_scene

    sources = [source_image(p) for p in paths]
    try:
        held = split_by_scene(sources, fraction, seed)
    except BdnError as error:
        raise BdnError(f"the score files name iterates of {error}") from None
    train = [k for k, source in enumerate(sources) if source not in held]
    val = [k for k, source in enumerate(sources) if source in held]
    return train, val


def check_images(paths: Sequence[Path], protocol: str, crop: int) -> None:
    """Every iterate readable as an image (from its header) and, for native crops, at least `crop` on each side."""
    from PIL import Image, UnidentifiedImageError

    for path in paths:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except FileNotFoundError:
            raise BdnError(f"{path}: no such iterate image") from None
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            raise BdnError(f"{path}: not a readable image") from None
        if protocol == "native" and min(width, height) < crop:
            raise BdnError(
                f"{path}: {width}x{height} pixels, smaller than --crop {crop} (the native protocol crops at the "
                "iterate's own resolution; use a smaller --crop)"
            )


class IterateSet(torch.utils.data.Dataset):
    """(input [3, c, c], target [10]) per crop: `tiles` x `tiles` crops of every score row's iterate, each with the
    row's label. Training crops are random (position and flips from (seed, epoch, i)), so a large iterate gives that
    many different views an epoch; validation crops are the fixed grid that scoring averages over
    (`biqan.model.prepare_tiles`)."""

    def __init__(
        self, rows: Sequence[tuple[Path, np.ndarray]], protocol: str, crop: int, seed: int, train: bool, tiles: int = 1
    ):
        self.rows, self.protocol, self.crop, self.seed, self.train = list(rows), protocol, crop, seed, train
        self.crops = tiles * tiles
        self.tiles = tiles
        self.epoch = 0  # set before each epoch; workers get a copy when the loader's iterator starts

    def __len__(self) -> int:
        return len(self.rows) * self.crops

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        from bdn.io import read_image

        path, target = self.rows[index // self.crops]
        image, _ = read_image(path)
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = prepare(image, self.protocol, self.crop, rng)
        elif self.crops == 1:
            x = prepare(image, self.protocol, self.crop)
        else:
            x = prepare_tiles(image, self.protocol, self.crop, self.tiles)[index % self.crops]
        return x, torch.from_numpy(np.asarray(target, dtype=np.float32))


# --- processes and devices -----------------------------------------------------------------------------


def _device(name: str, world: int, local_rank: int) -> torch.device:
    """bdn's device rule (cuda:LOCAL_RANK under torchrun), limited to what BIQAN's training runs on."""
    device = pick_device(name, world, local_rank, what="--device")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    if device.type not in ("cpu", "cuda"):
        raise BdnError(f"--device {name!r}: BIQAN trains on cpu or cuda")
    return device


def _start_group(world: int, device: torch.device) -> None:
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    except (RuntimeError, ValueError, OSError) as error:
        raise BdnError(f"torch.distributed did not start ({' '.join(str(error).split())[:200]})") from None


def _sum_over_ranks(values: Sequence[float], device: torch.device, world: int) -> list[float]:
    if world == 1:
        return list(values)
    import torch.distributed as dist

    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def _epoch_seed(*numbers: int) -> int:
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, dtype=np.uint64)[0] >> 1)


# --- one epoch -----------------------------------------------------------------------------------------


def _set_mode(model: Biqan, frozen: set[str]) -> None:
    """Training mode, except the batch norms of frozen (backbone) layers, which keep their statistics."""
    model.train()
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and f"{name}.weight" in frozen:
            module.eval()


def train_epoch(net: nn.Module, loader, optimizer, device: torch.device, bar) -> tuple[float, int]:
    """(sum of per-sample EMD, samples) over one pass of `loader`."""
    total, count = 0.0, 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        loss = emd_loss(net(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * inputs.shape[0]
        count += inputs.shape[0]
        bar.update(1)
        bar.set_postfix(emd=f"{total / count:.4f}")
    return total, count


def validate(model: Biqan, loader, device: torch.device) -> tuple[float, int]:
    """(sum of per-sample EMD, samples) of the model in eval mode over `loader` (this process's share)."""
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets in loader:
            p = model(inputs.to(device))
            total += float(emd_loss(p, targets.to(device), reduction="sum"))
            count += inputs.shape[0]
    return total, count


# --- files ---------------------------------------------------------------------------------------------


def _load_checkpoint(path: Path, settings: dict) -> dict:
    state = read_checkpoint(path, CHECKPOINT_FORMAT, "train_BIQAN")
    try:
        saved = json.loads(state["settings"])
    except (KeyError, TypeError, ValueError):
        raise BdnError(f"{path} is damaged (no readable settings); delete it to train from the start") from None
    changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
    if changed:
        raise BdnError(
            f"{path}: made with other settings ({', '.join(changed)}); use the same ones or another --output_path"
        )
    return state


def _plot(path: Path, rows: list[dict]) -> None:
    from bdn.report import new_figure, save_figure

    epochs = [r["epoch"] for r in rows]
    figure, axis = new_figure(figsize=(6, 3.5))
    axis.plot(epochs, [r["train_emd"] for r in rows], marker=".", label="training")
    axis.plot(epochs, [r["val_emd"] for r in rows], marker="o", label="validation")
    switch = [r["epoch"] for r, s in zip(rows[1:], rows[:-1], strict=False) if r["layers"] != s["layers"]]
    for epoch in switch:
        axis.axvline(epoch - 0.5, color="grey", linestyle=":", label="all layers from here")
    best = min(rows, key=lambda r: r["val_emd"])
    axis.plot([best["epoch"]], [best["val_emd"]], "k*", markersize=10, label=f"best (epoch {best['epoch']})")
    axis.set(xlabel="epoch", ylabel="EMD loss", title="BIQAN training")
    axis.legend()
    figure.tight_layout()
    save_figure(figure, path)


def _digest(rows: Sequence[tuple[Path, np.ndarray]]) -> str:
    """The score rows' content (image folder/file names and targets), so a resume uses the same data."""
    text = "\n".join(f"{p.parent.name}/{p.name} {' '.join(f'{x:.6f}' for x in t)}" for p, t in rows)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _file_digest(path: str | None) -> str | None:
    if path is None:
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# --- the run -------------------------------------------------------------------------------------------


def check_options(options: TrainOptions) -> None:
    if options.arch not in ARCHES:
        raise BdnError(f"--arch {options.arch!r} is unknown; choose one of {', '.join(ARCHES)}")
    if options.protocol not in PROTOCOLS:
        raise BdnError(f"--protocol {options.protocol!r}: choose native or resize")
    if options.crop < 32:
        raise BdnError(f"--crop {options.crop}: must be at least 32 pixels")
    for name in ("batch_size", "epochs", "threads", "tiles"):
        if getattr(options, name) < 1:
            raise BdnError(f"--{name} {getattr(options, name)}: must be at least 1")
    if options.head_epochs < 0 or options.workers < 0:
        raise BdnError("--head_epochs and --workers must be 0 or more")
    if not options.lr > 0 or not math.isfinite(options.lr):
        raise BdnError(f"--lr {options.lr}: must be positive")
    if not 0 < options.val_fraction < 1:
        raise BdnError(f"--val_fraction {options.val_fraction}: must be between 0 and 1")
    if not 0 <= options.dropout < 1:
        raise BdnError(f"--dropout {options.dropout}: must be in [0, 1)")
    if options.backbone is not None and not Path(options.backbone).is_file():
        raise BdnError(f"--backbone {options.backbone}: no such file")
    if Path(options.output_path).exists() and not Path(options.output_path).is_dir():
        raise BdnError(f"--output_path {options.output_path}: exists and is not a folder")


class _Stage:
    """The trainable layers, the optimiser and the plateau schedule of one stage ("head" or "all")."""

    def __init__(self, model: Biqan, layers: str, frozen: set[str], lr: float, device, world: int) -> None:
        self.layers = layers
        self.frozen = frozen if layers == "head" else set()
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name not in self.frozen)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=lr)
        # Keras reduces once `patience` epochs in a row did not improve by min_delta 1e-4 (absolute); torch once
        # more than `patience` did: torch's patience 1 is Keras's 2.
        self.schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=LR_FACTOR, patience=LR_PATIENCE - 1, threshold=1e-4, threshold_mode="abs"
        )
        self.net: nn.Module = model
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids)


@dataclass(frozen=True)
class _Plan:
    """What a run works on, checked before any process group starts or any file is written."""

    rows: list[tuple[Path, np.ndarray]]
    train_idx: list[int]
    val_idx: list[int]
    batch_size: int
    settings: dict
    state: dict | None


def _plan(options: TrainOptions, world: int) -> _Plan:
    check_options(options)
    rows = read_score_files(options.score_paths)
    paths = [p for p, _ in rows]
    check_images(paths, options.protocol, options.crop)
    train_idx, val_idx = split_by_image(paths, options.val_fraction, options.seed)
    batch_size = min(options.batch_size, len(train_idx) // world)
    if batch_size < 2:
        raise BdnError(
            f"{len(train_idx)} training iterates for {world} process(es): each needs at least 2 (batch norm)"
        )
    settings = {k: v for k, v in asdict(options).items() if k not in _FREE}
    settings.update(scores=_digest(rows), backbone_sha256=_file_digest(options.backbone), batch=batch_size)
    checkpoint = Path(options.output_path) / "checkpoint.pt"
    state = _load_checkpoint(checkpoint, settings) if checkpoint.exists() else None
    return _Plan(rows, train_idx, val_idx, batch_size, settings, state)


def _write_record(directory: Path, options: TrainOptions, device: torch.device, epoch: int) -> None:
    """record.json beside the weights (bdn.record): versions, device, threads, seed, options, files' SHA-256."""
    from dataclasses import asdict

    from bdn.record import make_record, write_record

    weights = [options.backbone] if options.backbone and Path(options.backbone).is_file() else []
    outputs = [path for name in ("best", "last") if (path := directory / f"{name}.safetensors").is_file()]
    record = make_record(
        "train-biqan",
        asdict(options),
        inputs=options.score_paths,
        weights=weights,
        outputs=outputs,
        seed=options.seed,
        device=str(device),
        epoch=epoch,
    )
    write_record(directory / "record.json", record)


def train(options: TrainOptions, progress: bool = True) -> dict:
    """Train (or resume) BIQAN into `options.output_path`; returns the last log row. BdnError for bad input."""
    rank, world, local = torchrun_world()
    device = _device(options.device, world, local)
    plan = _plan(options, world)
    if world > 1:
        _start_group(world, device)
    try:
        return _fit(options, plan, rank, world, device, progress)
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def _fit(options: TrainOptions, plan: _Plan, rank: int, world: int, device: torch.device, progress: bool) -> dict:
    from tqdm import tqdm

    from bdn.io import atomic_write_text
    from bdn.report import write_training_log

    rows, train_idx, val_idx, batch_size, state = plan.rows, plan.train_idx, plan.val_idx, plan.batch_size, plan.state
    paths = [p for p, _ in rows]
    directory = Path(options.output_path)
    checkpoint = directory / "checkpoint.pt"
    share = len(train_idx) // world

    torch.manual_seed(options.seed)
    model = build_biqan(options.arch, options.dropout).to(device)
    frozen = set(load_backbone(model, options.backbone)) if options.backbone else set()
    layers = "head" if frozen and options.head_epochs > 0 else "all"
    history: list[dict] = []
    best, bad, epoch, stopped = math.inf, 0, 0, False
    if state is not None:
        model.load_state_dict(state["model"])
        layers, history = state["layers"], json.loads(state["log"])
        best, bad, epoch, stopped = float(state["best"]), int(state["bad"]), int(state["epoch"]), bool(state["stopped"])
    stage = _Stage(model, layers, frozen, options.lr, device, world)
    if state is not None:
        stage.optimizer.load_state_dict(state["optimizer"])
        stage.schedule.load_state_dict(state["schedule"])
    if epoch >= options.epochs or stopped:
        why = "stopped early" if stopped else "finished"
        if rank == 0:
            print(f"{directory}: already {why} after {epoch} epochs (best validation EMD {best:.4f})")
        return history[-1]

    crops = dict(protocol=options.protocol, crop=options.crop, seed=options.seed, tiles=options.tiles)
    train_set = IterateSet([rows[k] for k in train_idx], train=True, **crops)
    val_rows = [rows[k] for k in val_idx][rank::world]
    val_set = IterateSet(val_rows, train=False, **crops)
    sampler = torch.utils.data.DistributedSampler(
        train_set, num_replicas=world, rank=rank, shuffle=True, seed=options.seed, drop_last=True
    )
    pin = device.type == "cuda"
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size, sampler=sampler, num_workers=options.workers, drop_last=True, pin_memory=pin
    )
    val_loader = torch.utils.data.DataLoader(val_set, batch_size, num_workers=options.workers, pin_memory=pin)
    images = sorted({source_image(p) for p in paths})
    held = sorted({source_image(rows[k][0]) for k in val_idx})
    print(
        f"{PROG}: rank {rank} of {world} on {device}: {share} of {len(train_idx)} training iterates per epoch "
        f"(batch {batch_size}{f', {options.tiles}x{options.tiles} crops of each' if options.tiles > 1 else ''}), "
        f"{len(val_rows)} of {len(val_idx)} validation iterates; {len(images) - len(held)} "
        f"training and {len(held)} validation images",
        file=sys.stderr,
        flush=True,
    )
    split = {"train": [i for i in images if i not in held], "validation": held}
    info = {"scores": json.dumps([str(p) for p in options.score_paths]), "seed": options.seed}
    while epoch < options.epochs and not stopped:
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        train_set.epoch = epoch
        torch.manual_seed(_epoch_seed(options.seed, epoch, rank))  # dropout
        _set_mode(model, stage.frozen)
        lr = stage.optimizer.param_groups[0]["lr"]
        steps = len(train_loader)
        with tqdm(total=steps, desc=f"epoch {epoch + 1}/{options.epochs}", disable=not progress or rank != 0) as bar:
            train_sum, train_count = train_epoch(stage.net, train_loader, stage.optimizer, device, bar)
        val_sum, val_count = validate(model, val_loader, device)
        train_sum, train_count, val_sum, val_count = _sum_over_ranks(
            [train_sum, train_count, val_sum, val_count], device, world
        )
        train_emd, val_emd = train_sum / train_count, val_sum / val_count
        epoch += 1
        stage.schedule.step(val_emd)
        improved = val_emd < best
        best, bad = (val_emd, 0) if improved else (best, bad + 1)
        row = {
            "epoch": epoch,
            "layers": stage.layers,
            "train_emd": round(train_emd, 6),
            "val_emd": round(val_emd, 6),
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 1),
        }
        history.append(row)
        if rank == 0:
            print(
                f"epoch {epoch}/{options.epochs} ({stage.layers} layers): training EMD {train_emd:.4f}, "
                f"validation EMD {val_emd:.4f}{' (best)' if improved else ''}, lr {lr:.2e}, {row['seconds']} s",
                flush=True,
            )
        if stage.layers == "head" and (epoch >= options.head_epochs or bad >= PATIENCE):
            stage, bad = _Stage(model, "all", frozen, options.lr, device, world), 0
        elif bad >= PATIENCE:
            stopped = True
        if rank == 0:
            meta = {**info, "epoch": epoch, "val_emd": f"{val_emd:.6f}"}
            common = {"protocol": options.protocol, "crop": options.crop}
            save_biqan(directory / "last.safetensors", model, **common, **meta)
            if improved:
                save_biqan(directory / "best.safetensors", model, **common, **meta)
            write_training_log(directory, history, _plot)
            _write_record(directory, options, device, epoch)
            atomic_write_text(directory / "split.json", json.dumps(split, indent=1) + "\n")
            write_checkpoint(
                checkpoint,
                {
                    "format": CHECKPOINT_FORMAT,
                    "settings": json.dumps(plan.settings, sort_keys=True),
                    "model": model.state_dict(),
                    "optimizer": stage.optimizer.state_dict(),
                    "schedule": stage.schedule.state_dict(),
                    "layers": stage.layers,
                    "log": json.dumps(history),
                    "best": best,
                    "bad": bad,
                    "epoch": epoch,
                    "stopped": stopped,
                },
            )
        if stopped and rank == 0:
            print(f"early stop: no better validation EMD for {PATIENCE} epochs", flush=True)
    return history[-1]
