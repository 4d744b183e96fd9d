"""Judges offline: replay a run_BDN output folder's snapshots through any judge of `bdn.dip.judges.make_judge`.

    python -m bdn.judge_run --run_path results/CC --judge wmv --option window=20 --option patience=30
    python -m bdn.judge_run --run_path results/CC --judge noise --noisy_path ../shared/data/CC/real
    python -m bdn.judge_run --run_path results/CC --judge biqan --model_path checkpoints/biqan.safetensors
    from bdn.judge_run import judge_run; table = judge_run("results/CC", "wmv", window=20)

Per image, the snapshots (`<iter:05d>.png`, read from their 8-bit PNGs) go through the judge in iteration order,
`update(iteration, image)` each, until the judge says stop (as it would have stopped the fit online: later
snapshots would not exist) or the snapshots run out; then `choice()`. The run's images and PSNRs are read as
`biqan.labels.read_run` reads them. Judges and their needs:
- `oracle`: the snapshot with the highest PSNR: against the clean images of `clean_path` where given (bdn's
  OracleJudge), else the PSNR the run recorded (its `<image>.txt`, else log.csv; BdnError where it has none).
- `noise`: the noisy image each fit started from, from `noisy_path` (a run over clean images only synthesised it
  and did not keep it: give the same noisy images).
- `wmv` / `emv`: nothing more; but offline they see the saved EMA snapshots `save_iter` iterations apart, not the
  raw output at every iteration as online (ES-WMV's setting): `window`, `patience` and `warmup` then count
  snapshots, not iterations, so the replay is a variant of the online rule, not the same rule.
- `biqan`: `model=` a BIQAN or `model_path=` a train_BIQAN checkpoint (loaded once for the whole run); its
  `start_index` and `patience` count snapshots, as test_BIQAN's do.
- `none`: the last snapshot.
Options other than these go to the judge as they are (`window=20`, `sigma=25`, `smooth=0.8`, ...).

Each image's `choice.json` (`{"judge", "iteration", "score", "judge_iteration", "file"}`, as run_BDN writes them)
and `result.png` (a byte copy of the chosen snapshot) are (re)written atomically in its run folder, unless
`write=False`. The returned table has per image the judge's iteration, the snapshot chosen, its PSNR, the
oracle's (highest PSNR) iteration and PSNR, the gap, and where the judge said stop.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.cmdline import OneLineParser
from bdn.errors import BdnError
from bdn.io import atomic_write_bytes, atomic_write_text, read_image

__all__ = ["RESULT_COLUMNS", "build_parser", "judge_run", "main"]

RESULT_COLUMNS = (
    "image",
    "judge",
    "judge_iteration",
    "iteration",
    "score",
    "psnr",
    "oracle_iteration",
    "oracle_psnr",
    "gap",
    "stopped_at",
    "snapshots",
)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _aligned(image: np.ndarray, snapshot: Path, what: str, name: str) -> np.ndarray:
    """`image` cut to the run's snapshot size the way run_BDN cut it (biqan.select.fit_to); BdnError if it cannot."""
    from biqan.select import fit_to

    reference = read_image(snapshot)[0]
    fitted = fit_to(image, reference.shape, reference)
    if fitted is None:
        raise BdnError(f"{name}: its {what} image ({image.shape}) does not fit the run's snapshots ({reference.shape})")
    return np.ascontiguousarray(fitted, dtype=np.float32)


def _oracle_from_records(name: str, iterations: list[int], psnrs: list[float | None]) -> int:
    if all(p is None for p in psnrs):
        raise BdnError(f"{name}: the run recorded no PSNR (no clean image); the oracle needs clean_path")
    values = np.array([-np.inf if p is None or math.isnan(p) else p for p in psnrs], dtype=np.float64)
    return iterations[int(np.argmax(values))]  # the first of equal maxima


def judge_run(
    run_dir: str | Path,
    judge_name: str,
    *,
    noisy_path: str | Path | None = None,
    clean_path: str | Path | None = None,
    write: bool = True,
    progress: bool = False,
    **options: object,
) -> pd.DataFrame:
    """Replay every image of a run through the judge `judge_name` (see the module docstring); one row per image."""
    from bdn.dip.judges import make_judge
    from bdn.metrics import psnr as measure_psnr
    from biqan.select import CLEAN_SUFFIX, NOISY_SUFFIX, _run_iterates, partner_images

    iterates = _run_iterates(run_dir)
    by_image: dict[str, list] = {}
    for it in iterates:
        by_image.setdefault(it.path.parent.name, []).append(it)
    names = sorted(by_image)
    noisy_files = {} if noisy_path is None else partner_images(noisy_path, names, NOISY_SUFFIX)
    clean_files = {} if clean_path is None else partner_images(clean_path, names, CLEAN_SUFFIX)
    if judge_name == "noise":
        if noisy_path is None:
            raise BdnError("judge noise: needs the noisy images the run fitted (noisy_path)")
        missing = [name for name in names if name not in noisy_files]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise BdnError(f"{noisy_path}: no noisy image for {missing[0]}{more}")
    if judge_name == "biqan" and options.get("model") is None and options.get("model_path") is not None:
        from biqan.model import load_biqan

        model, metadata = load_biqan(options.pop("model_path"))
        options = {"protocol": metadata.get("protocol"), "crop": metadata.get("crop"), **options, "model": model}
    if judge_name != "oracle" or clean_files:  # bad options fail before any image (not the oracle by records)
        probe = dict(options)
        if judge_name == "noise":
            probe.setdefault("sigma", 25.0)
        if judge_name in ("noise", "oracle"):
            probe["noisy" if judge_name == "noise" else "clean"] = np.zeros((8, 8), dtype=np.float32)
        make_judge(judge_name, **probe)

    from tqdm import tqdm

    rows = []
    for name in tqdm(names, desc=f"judge {judge_name}", unit="image", disable=not progress):
        snapshots = sorted(by_image[name], key=lambda it: it.iteration)
        folder = snapshots[0].path.parent
        clean = (
            _aligned(read_image(clean_files[name])[0], snapshots[-1].path, "clean", name)
            if name in clean_files
            else None
        )
        iterations = [it.iteration for it in snapshots]
        psnrs = [it.psnr for it in snapshots]
        stopped_at = None
        if judge_name == "oracle" and clean is None:
            judged, score, judge = _oracle_from_records(name, iterations, psnrs), None, None
        else:
            extra = {}
            if judge_name == "noise":
                extra["noisy"] = _aligned(read_image(noisy_files[name])[0], snapshots[-1].path, "noisy", name)
            elif judge_name == "oracle":
                extra["clean"] = clean
            judge = make_judge(judge_name, **options, **extra)
            for index, it in enumerate(snapshots):
                image = read_image(it.path)[0]
                if clean is not None:
                    psnrs[index] = measure_psnr(clean, image)  # the 8-bit snapshot against the given clean image
                if judge.update(it.iteration, image):
                    stopped_at = it.iteration
                    break
            judged = judge.choice()
            score = dict(getattr(judge, "scores", [])).get(judged)
        if clean is not None and stopped_at is not None:  # the rest were not read: measure them for the oracle
            for index in range(iterations.index(stopped_at) + 1, len(snapshots)):
                psnrs[index] = measure_psnr(clean, read_image(snapshots[index].path)[0])
        before = [i for i in iterations if i <= judged]
        chosen = max(before) if before else iterations[0]
        chosen_psnr = psnrs[iterations.index(chosen)]
        has_psnr = any(p is not None and not math.isnan(p) for p in psnrs)
        oracle = _oracle_from_records(name, iterations, psnrs) if has_psnr else None
        oracle_psnr = psnrs[iterations.index(oracle)] if oracle is not None else None
        if judge_name == "oracle" and score is None:
            score = chosen_psnr
        record = {
            "judge": judge_name,
            "iteration": chosen,
            "score": _finite(score),
            "judge_iteration": int(judged),
            "file": f"{chosen:05d}.png",
        }
        if write:
            atomic_write_bytes(folder / "result.png", (folder / record["file"]).read_bytes())
            atomic_write_text(folder / "choice.json", json.dumps(record, indent=2) + "\n")
        gap = None if oracle_psnr is None or chosen_psnr is None else oracle_psnr - chosen_psnr
        rows.append(
            {
                "image": name,
                "judge": judge_name,
                "judge_iteration": int(judged),
                "iteration": chosen,
                "score": _finite(score),
                "psnr": chosen_psnr,
                "oracle_iteration": oracle,
                "oracle_psnr": oracle_psnr,
                "gap": gap,
                "stopped_at": stopped_at,
                "snapshots": len(snapshots),
            }
        )
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    for column in ("oracle_iteration", "stopped_at"):
        table[column] = table[column].astype("Int64")
    for column in ("score", "psnr", "oracle_psnr", "gap"):
        table[column] = table[column].astype("float64")
    return table


# --- command line ---------------------------------------------------------------------------------------------


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE a Python literal (20, 0.8, None, True) or else a string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        parsed = value.strip()
    return key.strip(), parsed


def build_parser(prog: str = "python -m bdn.judge_run") -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=prog,
        description="Replay a run_BDN output folder's snapshots through a judge (oracle, wmv, emv, noise, biqan, "
        "none) and write each image's choice.json and result.png (see bdn/judge_run.py).",
    )
    add = parser.add_argument
    add("--run_path", required=True, help="run_BDN output folder")
    add("--judge", required=True, help="oracle | wmv | emv | noise | biqan | none")
    add("--noisy_path", default=None, help="noisy images the run fitted (<id>_real.<ext>): the noise judge needs them")
    add("--clean_path", default=None, help="clean images (<id>_mean.<ext>): PSNR measured on the snapshots")
    add("--model_path", default=None, help="biqan: a train_BIQAN checkpoint")
    add(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a judge option, e.g. window=20, patience=30, sigma=25, smooth=0.8 (repeatable)",
    )
    add("--output", default=None, help="also write the table as CSV here")
    add("--no-write", dest="write", action="store_false", help="do not write choice.json / result.png")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m bdn.judge_run") -> int:
    """The command line; returns the exit status (0 done, 1 bad input)."""
    try:
        args = build_parser(prog).parse_args(argv)
        options = dict(args.option)
        if args.model_path is not None:
            options["model_path"] = args.model_path
        table = judge_run(
            args.run_path,
            args.judge,
            noisy_path=args.noisy_path,
            clean_path=args.clean_path,
            write=args.write,
            progress=args.progress,
            **options,
        )
        if args.output is not None:
            atomic_write_text(Path(args.output), table.to_csv(index=False))
    except BdnError as error:
        print(f"{prog}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    from bdn.report import markdown_table

    print(markdown_table(table.astype(object).where(table.notna(), ""), floatfmt=".3f"))
    measured = table["gap"].dropna()
    if not measured.empty:
        worst = table.loc[measured.idxmax(), "image"]
        print(
            f"mean gap {measured.mean():.3f} dB, worst {measured.max():.3f} dB ({worst}); chosen mean PSNR "
            f"{table['psnr'].mean():.3f} dB, oracle {table['oracle_psnr'].mean():.3f} dB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
