"""Judges offline: replay a run_BDN output folder's snapshots through any judge of `bdn.dip.judges.make_judge`.

    bdn judge --run-path results/CC --judge wmv --option window=20 --option patience=30
    bdn judge --run-path results/CC --judge noise --noisy-path ../shared/data/CC/real
    bdn judge --run-path results/CC --judge biqan --model-path checkpoints/biqan.safetensors
    from bdn.judge_run import judge_run; table = judge_run("results/CC", "wmv", window=20)

Per image, the snapshots (`<iter:05d>.png`, read from their 8-bit PNGs) go through the judge in iteration order,
`update(iteration, image)` each, until the judge says stop (as it would have stopped the fit online: later
snapshots would not exist) or the snapshots run out; then `choice()`. The run is read with
`bdn.dip.runfolder.read_run`. Judges and their needs:
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
Options other than these go to the judge as they are (`window=20`, `sigma=25`, `smooth=0.8`, ...). `until=N`
(`bdn judge --until N`) keeps only the snapshots at or before iteration N, as if the fits had stopped there: one
long fit measures the judges at every shorter cap.

Only with `write=True` (`bdn judge --write`) is each image's `choice.json` (`{"judge", "iteration", "score",
"judge_iteration", "file"}`, as run_BDN writes them) and `result.png` (a byte copy of the chosen snapshot) replaced,
atomically, in its run folder: by default the fit's own record stays. The returned table has per image the
judge's iteration, the snapshot chosen, its PSNR, the oracle's (highest PSNR) iteration and PSNR, the gap, and
where the judge said stop.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.dip.runfolder import fit_to, partner_images, read_run, snapshot_at_or_before, snapshot_name, write_choice
from bdn.errors import BdnError
from bdn.io import read_image
from bdn.names import CLEAN_SUFFIX, NOISY_SUFFIX

__all__ = ["RESULT_COLUMNS", "judge_run"]

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
    """`image` cut to the run's snapshot size the way run_BDN cut it (runfolder.fit_to); BdnError if it cannot."""
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
    write: bool = False,
    progress: bool = False,
    until: int | None = None,
    **options: object,
) -> pd.DataFrame:
    """Replay every image of a run through the judge `judge_name` (see the module docstring); one row per image.
    `until`: only the snapshots at or before that iteration, as if the fits had stopped there."""
    from bdn.dip.judges import NEEDS_NOISY, make_judge
    from bdn.metrics import psnr as measure_psnr

    iterates = read_run(run_dir, require_snapshots=True, until=until)
    by_image: dict[str, list] = {}
    for it in iterates:
        by_image.setdefault(it.path.parent.name, []).append(it)
    names = sorted(by_image)
    noisy_files = {} if noisy_path is None else partner_images(noisy_path, names, NOISY_SUFFIX)
    clean_files = {} if clean_path is None else partner_images(clean_path, names, CLEAN_SUFFIX)
    if judge_name in NEEDS_NOISY:
        if noisy_path is None:
            raise BdnError(f"judge {judge_name}: needs the noisy images the run fitted (noisy_path)")
        missing = [name for name in names if name not in noisy_files]
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            raise BdnError(f"{noisy_path}: no noisy image for {missing[0]}{more}")
    if judge_name != "oracle" or clean_files:  # bad options fail before any image (not the oracle by records)
        probe = dict(options)
        if judge_name in NEEDS_NOISY:
            probe.setdefault("sigma", 25.0)
        if judge_name in (*NEEDS_NOISY, "oracle"):
            probe["noisy" if judge_name in NEEDS_NOISY else "clean"] = np.zeros((8, 8), dtype=np.float32)
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
            if judge_name in NEEDS_NOISY:
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
            score = dict(judge.scores).get(judged)
        if clean is not None and stopped_at is not None:  # the rest were not read: measure them for the oracle
            for index in range(iterations.index(stopped_at) + 1, len(snapshots)):
                psnrs[index] = measure_psnr(clean, read_image(snapshots[index].path)[0])
        chosen = snapshot_at_or_before(iterations, judged)
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
            "file": snapshot_name(chosen),
        }
        if write:
            write_choice(folder, record, (folder / record["file"]).read_bytes())
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
