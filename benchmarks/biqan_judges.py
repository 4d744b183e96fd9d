"""BIQAN against the other judges on the same DIP snapshots: issue 4's "Measured" table, one dataset per run folder.

    python benchmarks/biqan_judges.py \
        --runs CC=results/run_cc PolyU=results/run_polyu_heldout \
        --biqan checkpoints/biqan.safetensors \
        --noisy CC=../shared/data/CC/real PolyU=../shared/data/PolyU/real \
        --clean CC=../shared/data/CC/mean PolyU=../shared/data/PolyU/mean --classical \
        --out results/biqan_judges

Each `--runs NAME=FOLDER` is a run_BDN output folder (per image `<id>/<iter:05d>.png` snapshots and a log.csv whose
PSNR column is filled: the run had clean images). Every judge is replayed offline over the SAME snapshots with
`bdn.judge_run.judge_run(..., write=False)` (the run folders are only read: no choice.json or result.png is
written), and set against the oracle (the snapshot with the highest recorded PSNR):
- `biqan`: bdn's BIQAN (`--biqan FILE`, a train_BIQAN checkpoint) with `--biqan-start-index` / `--biqan-smooth`
  (`--biqan-tiles N`: each snapshot scored as the mean over a grid of N x N crops, not its centre crop);
- `seed recipe`: the same network with the seed's test_BIQAN settings (start_index 40, smoothing 0.8);
- `wmv`: ES-WMV (`--wmv-window`, `--wmv-patience`);
- `noise`: the noise-level rule (`--noise-factor`; sigma estimated from each noisy image), which needs the noisy
  images the run fitted (`--noisy NAME=FOLDER`; without it the dataset's noise rows are skipped with a note);
- `learned`: the learned judge (biqan/combined.py: the noise rule's, WMV's and BIQAN's figures in one linear model;
  `--learned-weights`, default the shipped ones), with the same BIQAN and the noisy images;
- `last`: the final snapshot, no judge at all: the baseline a judge must beat (where a fit's PSNR still rises at
  the last iteration, as bdn's default DIP's does on full-size CC at 3,000 iterations, it is the best one);
- `oracle`: the best snapshot (gap 0 by definition: a check that every judge sees the same snapshots).
With a BIQAN, the notes also give its rank correlation (Spearman) with PSNR over each image's snapshots.
Without `--biqan` the biqan and seed recipe rows are skipped with a note. With `--classical` (or `--classical nlm`),
non-local means and BM3D (blind: sigma estimated; bm3d takes seconds an image) denoise the same noisy images, cut
to the window the run fitted, for context (`--noisy` and `--clean` for that dataset; else a note).

Judge parameters default to bdn's (wmv: `bdn.dip.judges.TUNED_WMV`'s window 3 and patience 15, in snapshots, as
tuned on PolyU's training split by benchmarks/judge_tuning.py; noise factor bdn.dip.denoise.DEFAULT_NOISE_FACTOR;
BiqanJudge start_index 40, no smoothing). They MUST be tuned on PolyU's
training split only (runs over `bdn.data.polyu_pairs("train")`), never on CC or the held-out PolyU images this table
reports. Offline, wmv's window and patience and biqan's start_index count snapshots (save_iter iterations apart),
not iterations (see bdn/judge_run.py and `bdn judge`).

`--until N` replays every judge (and BIQAN's Spearman) on the snapshots at or before iteration N only, as if the
fits had stopped there: the same long fits give the table at the seed's 3,000 iterations and at bdn's own cap.

Writes under `--out` (default results/biqan_judges): per_image.csv (dataset, judge, image, judge_run's columns),
summary.csv and summary.md (one row per judge and dataset: mean gap = mean over images of oracle PSNR - chosen PSNR,
the worst gap and its image, chosen and oracle mean PSNR, the goal), with the command, the date and notes in
summary.md. Nothing is written until every figure is measured.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import inspect
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bdn.cli.options import OneLineParser, named_path
from bdn.devices import pick_device
from bdn.errors import BdnError
from bdn.judge_run import RESULT_COLUMNS
from biqan.select import SEED_REPORTED, spearman_by_image

PROG = "benchmarks/biqan_judges.py"
GOAL = "mean <= 0.15, worst <= 0.5 on CC"
GOAL_MEAN, GOAL_WORST = 0.15, 0.5
SEED_START_INDEX, SEED_SMOOTH = 40, 0.8  # the seed's test_BIQAN settings
CLASSICAL = ("nlm", "bm3d")
# judge_run's own columns, the dataset first and the judge before the image
PER_IMAGE_COLUMNS = ("dataset", "judge", "image", *(c for c in RESULT_COLUMNS if c not in ("image", "judge")))
SUMMARY_COLUMNS = (
    "judge",
    "dataset",
    "images",
    "mean_gap",
    "worst_gap",
    "worst_image",
    "chosen_psnr",
    "oracle_psnr",
    "goal",
    "goal_met",
    "settings",
)


@dataclass(frozen=True)
class Spec:
    """One row kind of the table: a judge of bdn.dip.judges.make_judge with its options, under a key."""

    key: str  # biqan | seed recipe | wmv | noise | learned | last | oracle
    judge: str  # the make_judge name
    options: dict = field(default_factory=dict)
    settings: str = ""


class Memo(torch.nn.Module):
    """A quality network that remembers its output for each input it has seen (by the input's bytes).

    The biqan and seed recipe rows replay the same snapshots through the same network and transform; with this
    each snapshot goes through the network once. Outputs are kept on the network's device, 10 numbers each.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: dict[tuple, torch.Tensor] = {}
        self.hits = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keys = [
            (tuple(row.shape), hashlib.blake2b(row.detach().cpu().numpy().tobytes(), digest_size=16).digest())
            for row in x
        ]
        new = [i for i, key in enumerate(keys) if key not in self.seen]
        if new:
            for i, p in zip(new, self.model(x[new]), strict=True):
                self.seen[keys[i]] = p
        self.hits += len(keys) - len(new)
        return torch.stack([self.seen[key] for key in keys])


# --- the command line ---------------------------------------------------------------------------------------------


def _optional_float(text: str) -> float | None:
    if text.strip().lower() in ("none", "off", ""):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    from bdn.dip.denoise import DEFAULT_NOISE_FACTOR
    from bdn.dip.judges import TUNED_WMV
    from biqan.judge import BiqanJudge

    biqan = {n: p.default for n, p in inspect.signature(BiqanJudge.__init__).parameters.items()}
    wmv = TUNED_WMV  # offline, its window and patience count snapshots: save_iter apart, as its stride is online
    parser = OneLineParser(prog=PROG, description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--runs", nargs="+", type=named_path, required=True, metavar="NAME=FOLDER", help="run_BDN output folders")
    add("--biqan", type=Path, default=None, help="BIQAN checkpoint (train_BIQAN.py); without it no biqan rows")
    add("--noisy", nargs="+", type=named_path, default=[], metavar="NAME=FOLDER", help="noisy images the runs fitted")
    add("--clean", nargs="+", type=named_path, default=[], metavar="NAME=FOLDER", help="clean images (--classical)")
    add(
        "--classical",
        nargs="*",
        choices=CLASSICAL,
        default=None,
        metavar="METHOD",
        help="add classical methods on the same images (needs --noisy and --clean): nlm and bm3d, or those named",
    )
    add("--wmv-window", type=int, default=wmv["window"], help="wmv window, in snapshots (tuned: %(default)s)")
    add("--wmv-patience", type=int, default=wmv["patience"], help="wmv patience, in snapshots (%(default)s)")
    add("--noise-factor", type=float, default=DEFAULT_NOISE_FACTOR, help="noise rule factor (%(default)s)")
    add("--biqan-start-index", type=int, default=biqan["start_index"], help="biqan: snapshots skipped (%(default)s)")
    add("--biqan-tiles", type=int, default=1, help="biqan: a grid of N x N crops scored and averaged (1: the centre)")
    add(
        "--biqan-smooth",
        type=_optional_float,
        default=biqan["smooth"],
        help="biqan: score smoothing factor, or none (bdn default %(default)s)",
    )
    add("--learned-weights", default=None, help="the learned judge's weights (default: the shipped ones)")
    add("--device", default="auto", help="BIQAN's device: auto | cpu | cuda | cuda:N")
    add("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    add(
        "--until",
        type=int,
        default=None,
        metavar="N",
        help="only the snapshots at or before iteration N: every judge as if the fits had stopped there",
    )
    add("--out", type=Path, default=Path("results/biqan_judges"))
    add("--no-progress", dest="progress", action="store_false", help="no progress bars")
    return parser


def _by_name(pairs: Sequence[tuple[str, Path]], option: str, datasets: Sequence[str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name, path in pairs:
        if name in found:
            raise BdnError(f"{option}: {name} given twice")
        if name not in datasets:
            raise BdnError(f"{option} {name}={path}: no --runs folder named {name} (runs: {', '.join(datasets)})")
        if not path.is_dir():
            raise BdnError(f"{option} {name}={path}: no such folder")
        found[name] = path
    return found


# --- measuring ----------------------------------------------------------------------------------------------------


def judge_specs(args: argparse.Namespace, model: object | None, metadata: dict) -> list[Spec]:
    """The judges to replay, in table order (biqan and the seed recipe only with a model)."""
    smooth = "none" if args.biqan_smooth is None else f"{args.biqan_smooth:g}"
    specs = []
    if model is not None:
        network = {"model": model, "protocol": metadata.get("protocol"), "crop": metadata.get("crop")}
        if args.device_name is not None:
            network["device"] = args.device_name
        specs.append(
            Spec(
                "biqan",
                "biqan",
                {
                    **network,
                    "start_index": args.biqan_start_index,
                    "smooth": args.biqan_smooth,
                    "tiles": args.biqan_tiles,
                },
                f"start_index {args.biqan_start_index}, smooth {smooth}"
                + (f", {args.biqan_tiles}x{args.biqan_tiles} crops" if args.biqan_tiles != 1 else ""),
            )
        )
        specs.append(
            Spec(
                "seed recipe",
                "biqan",
                {**network, "start_index": SEED_START_INDEX, "smooth": SEED_SMOOTH},
                f"start_index {SEED_START_INDEX}, smooth {SEED_SMOOTH:g}",
            )
        )
    specs.append(
        Spec(
            "wmv",
            "wmv",
            {"window": args.wmv_window, "patience": args.wmv_patience},
            f"window {args.wmv_window}, patience {args.wmv_patience}",
        )
    )
    specs.append(
        Spec("noise", "noise", {"factor": args.noise_factor}, f"factor {args.noise_factor:g}, sigma estimated")
    )
    if model is not None:
        learned = {"model": model, "weights": args.learned_weights, "every": 1, "tiles": args.biqan_tiles}
        shown = args.learned_weights or "checkpoints/judge_learned.json"
        specs.append(Spec("learned", "learned", learned, f"weights {shown}, sigma estimated"))
    specs.append(Spec("last", "none", {}, "the run's final snapshot: no judge"))
    specs.append(Spec("oracle", "oracle", {}, "best recorded PSNR"))
    return specs


def check_specs(specs: Sequence[Spec]) -> None:
    """Make each judge once on a dummy image, so that a bad option fails before any replay (BdnError)."""
    from bdn.dip.judges import make_judge

    dummy = np.zeros((8, 8), dtype=np.float32)
    for spec in specs:
        extra = {"noisy": dummy, "sigma": 25.0} if spec.judge in ("noise", "learned") else {}
        extra = {"clean": dummy} if spec.judge == "oracle" else extra
        make_judge(spec.judge, **spec.options, **extra)


def replay(
    dataset: str, run: Path, spec: Spec, noisy: Path | None, progress: bool, until: int | None = None
) -> pd.DataFrame:
    """judge_run's per-image table for one judge on one run, read-only (write=False), tagged dataset and key."""
    from bdn.judge_run import judge_run

    table = judge_run(run, spec.judge, noisy_path=noisy, write=False, progress=progress, until=until, **spec.options)
    table = table.assign(dataset=dataset, judge=spec.key)
    return table[list(PER_IMAGE_COLUMNS)]


def _window(noisy: np.ndarray, clean: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """noisy and clean cut to the snapshots' window as run_BDN cut it (bdn.dip.runfolder.fit_to, decided on clean)."""
    from bdn.dip.runfolder import fit_to

    if clean.shape == reference.shape:
        return noisy, clean
    cut = fit_to(clean, reference.shape, reference)
    if cut is None:
        raise BdnError(f"clean image {clean.shape} does not fit the run's snapshots {reference.shape}")
    h, w = reference.shape[:2]
    if np.array_equal(cut, clean[:h, :w]):
        return noisy[:h, :w], cut
    top, left = (clean.shape[0] - h) // 2, (clean.shape[1] - w) // 2
    return noisy[top : top + h, left : left + w], cut


def classical(
    dataset: str,
    run: Path,
    oracle: pd.DataFrame,
    noisy_dir: Path,
    clean_dir: Path,
    methods: Sequence[str] = CLASSICAL,
    progress: bool = False,
) -> pd.DataFrame:
    """Classical methods' PSNR per image (blind: sigma estimated) on the noisy images the run fitted, cut to the
    window the run fitted; the DIP oracle's iteration and PSNR beside them."""
    from tqdm import tqdm

    import bdn
    from bdn.dip.runfolder import partner_images
    from bdn.io import read_image
    from bdn.names import CLEAN_SUFFIX, NOISY_SUFFIX

    names = oracle["image"].tolist()
    noisy_files = partner_images(noisy_dir, names, NOISY_SUFFIX)
    clean_files = partner_images(clean_dir, names, CLEAN_SUFFIX)
    for folder, files in ((noisy_dir, noisy_files), (clean_dir, clean_files)):
        missing = [name for name in names if name not in files]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise BdnError(f"{folder}: no image for {missing[0]}{more}")
    rows = []
    for row in tqdm(oracle.itertuples(), total=len(oracle), desc=f"{dataset} classical", disable=not progress):
        noisy, clean = read_image(noisy_files[row.image])[0], read_image(clean_files[row.image])[0]
        if noisy.shape != clean.shape:
            raise BdnError(f"{noisy_files[row.image]}: {noisy.shape}, its clean partner {clean.shape}")
        reference = read_image(run / row.image / f"{int(row.oracle_iteration):05d}.png")[0]
        try:
            noisy, clean = _window(noisy, clean, reference)
        except BdnError as error:
            raise BdnError(f"{row.image}: {error}") from None
        for method in methods:
            value = bdn.psnr(clean, bdn.denoise(noisy, method))
            rows.append(
                {
                    "dataset": dataset,
                    "judge": method,
                    "image": row.image,
                    "psnr": value,
                    "oracle_iteration": row.oracle_iteration,
                    "oracle_psnr": row.oracle_psnr,
                }
            )
    return pd.DataFrame(rows).reindex(columns=list(PER_IMAGE_COLUMNS))


def summarise(per_image: pd.DataFrame, order: Sequence[str], datasets: Sequence[str]) -> pd.DataFrame:
    """One row per (judge, dataset): images, mean and worst gap (+ image), chosen and oracle mean PSNR, goal."""
    rows = []
    for key in order:
        for dataset in datasets:
            group = per_image[(per_image["judge"] == key) & (per_image["dataset"] == dataset)]
            if group.empty:
                continue
            gaps = group["gap"].astype("float64")
            measured = gaps.notna().any()
            worst = group.loc[gaps.idxmax()] if measured else None
            mean_gap = float(gaps.mean()) if measured else math.nan
            worst_gap = float(worst["gap"]) if measured else math.nan
            goal, met = ("context" if key in CLASSICAL else "reported"), ""
            if key == "biqan":
                goal = GOAL
                if dataset.lower() == "cc":
                    met = "yes" if mean_gap <= GOAL_MEAN and worst_gap <= GOAL_WORST else "no"
            rows.append(
                {
                    "judge": key,
                    "dataset": dataset,
                    "images": len(group),
                    "mean_gap": mean_gap,
                    "worst_gap": worst_gap,
                    "worst_image": None if worst is None else str(worst["image"]),
                    "chosen_psnr": float(group["psnr"].mean()),
                    "oracle_psnr": float(group["oracle_psnr"].mean()),
                    "goal": goal,
                    "goal_met": met,
                }
            )
    return pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c != "settings"])


def _dB(value: float, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summary_markdown(summary: pd.DataFrame, command: str, date: str, notes: Sequence[str]) -> str:
    """summary.md: the command and date, the table (gaps to 3 decimals, PSNRs to 2), then the notes."""
    shown = pd.DataFrame(
        {
            "judge": summary["judge"],
            "dataset": summary["dataset"],
            "images": summary["images"],
            "mean gap (dB)": [_dB(v, 3) for v in summary["mean_gap"]],
            "worst gap (dB, image)": [
                "-" if pd.isna(image) else f"{gap:.3f} ({image})"
                for gap, image in zip(summary["worst_gap"], summary["worst_image"], strict=True)
            ],
            "chosen mean PSNR": [_dB(v, 2) for v in summary["chosen_psnr"]],
            "oracle mean PSNR": [_dB(v, 2) for v in summary["oracle_psnr"]],
            "goal": [
                f"{goal} ({'met' if met == 'yes' else 'not met'})" if met else goal
                for goal, met in zip(summary["goal"], summary["goal_met"], strict=True)
            ],
            "settings": summary["settings"],
        }
    )
    lines = [
        "# Judges on the same DIP snapshots (issue 4)",
        "",
        f"Command ({date}):",
        "",
        f"    {command}",
        "",
        "gap = oracle PSNR - chosen PSNR (dB), per image; oracle = the snapshot with the highest recorded PSNR.",
        "",
        shown.to_markdown(index=False),  # bdn.report's markdown_table, without loading matplotlib
        "",
        *[f"- {note}" for note in notes],
    ]
    return "\n".join(lines) + "\n"


def spearman_note(
    dataset: str, run: Path, model: torch.nn.Module, metadata: dict, tiles: int, until: int | None = None
) -> str:
    """BIQAN's rank correlation (Spearman) with PSNR over each image's snapshots: mean, median and worst image."""
    from biqan.select import default_transform, score_run

    protocol, crop = str(metadata.get("protocol", "native")), int(metadata.get("crop", 224))
    scores = score_run(model, run, transform=default_transform(protocol, crop, tiles), until=until)
    if scores["psnr"].isna().all():
        return f"BIQAN's score vs PSNR on {dataset}: no PSNR recorded"
    per_image = spearman_by_image(scores)
    if per_image.empty:
        return f"BIQAN's score vs PSNR on {dataset}: undefined (scores or PSNRs constant within every image)"
    return (
        f"BIQAN's score vs PSNR on {dataset} (Spearman over each image's snapshots): mean {per_image.mean():.3f}, "
        f"median {per_image.median():.3f}, worst {per_image.min():.3f} ({per_image.idxmin()})"
    )


def _protocol_note(dataset: str, run: Path, table: pd.DataFrame, until: int | None = None) -> str:
    counts = table["snapshots"]
    span = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}..{counts.max()}"
    cap = "" if until is None else f" (those at or before iteration {until}: --until)"
    return f"{dataset}: {len(table)} images from {run}, {span} snapshots each{cap}"


def _degenerate(dataset: str, spec: Spec, table: pd.DataFrame) -> list[str]:
    """Notes where a judge's parameters exceed the run's snapshots, so that its rule did not really apply."""
    if spec.judge == "biqan":
        start = spec.options["start_index"]
        few = table[table["snapshots"] <= start]
        if not few.empty:
            return [
                f"{spec.key} on {dataset}: {len(few)} image(s) have no more than start_index {start} snapshots: "
                "it chose among all of them"
            ]
    if spec.judge == "wmv":
        window = spec.options["window"]
        short = table[table["snapshots"] < window]
        if not short.empty:
            return [
                f"wmv on {dataset}: {len(short)} image(s) have fewer snapshots than the window ({window}): no "
                "variance was measured and it kept the last snapshot"
            ]
    return []


def measure(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(per-image table, summary, notes) for parsed arguments; reads only."""
    datasets = [name for name, _ in args.runs]
    runs = dict(args.runs)
    if len(runs) != len(datasets):
        raise BdnError("--runs: a dataset name is given twice")
    for name, run in runs.items():
        if not run.is_dir():
            raise BdnError(f"--runs {name}={run}: no such folder")
    noisy = _by_name(args.noisy, "--noisy", datasets)
    clean = _by_name(args.clean, "--clean", datasets)
    notes: list[str] = []
    model, metadata = None, {}
    if args.biqan is not None:
        from biqan.model import load_biqan

        model, metadata = load_biqan(args.biqan)
        model = Memo(model)  # biqan and the seed recipe score the same snapshots: once each
        notes.append(
            f"BIQAN: {args.biqan} ({metadata.get('arch')}, protocol {metadata.get('protocol')}, "
            f"crop {metadata.get('crop')})"
        )
    else:
        notes.append("biqan and seed recipe: skipped (no --biqan checkpoint given)")
    specs = judge_specs(args, model, metadata)
    check_specs(specs)
    # --classical alone: every classical method; --classical nlm: that one.
    methods = [] if args.classical is None else list(dict.fromkeys(args.classical or CLASSICAL))

    tables = []
    for dataset in datasets:
        run = runs[dataset]
        for spec in specs:
            if spec.judge in ("noise", "learned") and dataset not in noisy:
                notes.append(f"{spec.key} on {dataset}: skipped (no --noisy {dataset}=FOLDER)")
                continue
            table = replay(dataset, run, spec, noisy.get(dataset), args.progress, args.until)
            tables.append(table)
            if spec.key == "oracle":
                notes.append(_protocol_note(dataset, run, table, args.until))
                if methods and dataset in noisy and dataset in clean:
                    tables.append(
                        classical(dataset, run, table, noisy[dataset], clean[dataset], methods, args.progress)
                    )
                elif methods:
                    notes.append(
                        f"{', '.join(methods)} on {dataset}: skipped (needs --noisy and --clean {dataset}=FOLDER)"
                    )
            notes += _degenerate(dataset, spec, table)
    if isinstance(model, Memo):
        notes.append(f"BIQAN scored {len(model.seen)} distinct snapshots ({model.hits} repeats answered from memory)")
        for dataset in datasets:
            notes.append(spearman_note(dataset, runs[dataset], model, metadata, args.biqan_tiles, args.until))
    per_image = pd.concat([t for t in tables if not t.empty], ignore_index=True)
    for column in ("judge_iteration", "iteration", "oracle_iteration", "stopped_at", "snapshots"):
        per_image[column] = per_image[column].astype("Int64")  # classical rows have none: blank, not 40.0
    order = [spec.key for spec in specs] + methods
    summary = summarise(per_image, order, datasets)
    settings = {spec.key: spec.settings for spec in specs} | {m: "sigma estimated" for m in CLASSICAL}
    summary["settings"] = summary["judge"].map(settings)
    notes += [
        "Judge parameters must be tuned on PolyU's training split only; offline, wmv's window and patience and "
        "biqan's start_index count snapshots, not iterations.",
        SEED_REPORTED,
    ]
    return per_image, summary, notes


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns 0 when the tables are written, 1 for bad input (one line on stderr)."""
    words = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(words)
        if args.threads is not None:
            if args.threads < 1:
                raise BdnError(f"--threads must be >= 1, got {args.threads}")
            torch.set_num_threads(args.threads)
        args.device_name = str(pick_device(args.device, what="--device"))
        per_image, summary, notes = measure(args)
    except BdnError as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    from bdn.io import atomic_write_text

    command = f"python {PROG} {shlex.join(words)}"
    date = datetime.date.today().isoformat()
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "per_image.csv", per_image.to_csv(index=False))
    atomic_write_text(args.out / "summary.csv", summary.to_csv(index=False))
    text = summary_markdown(summary, command, date, notes)
    atomic_write_text(args.out / "summary.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
