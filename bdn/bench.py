"""`bdn bench`: every method on every dataset, one table of PSNR, SSIM, seconds per image and peak memory.

Each (method, dataset) runs in a fresh worker process so that its peak resident memory is its own, with the thread
count fixed through the environment before any numerical library loads. Workers append per-image rows to
`<run>/rows/`, so a run that is interrupted and started again with the same `--run` name resumes where it stopped.

Semantics: `sigmas` add Gaussian noise (fixed seed, not clipped, as papers do) to clean-only
sets and are ignored for real noisy/clean pairs; methods get the true sigma unless `blind`; real pairs are always
blind.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bdn.errors import BdnError

NOISE_SEED = 0  # the synthetic noise of every clean-only set; change it and the table is a different benchmark
ROW_COLUMNS = ["method", "dataset", "sigma", "image", "psnr", "ssim", "seconds"]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: VmHWM where Linux gives it, else ru_maxrss.

    ru_maxrss alone is not a worker's own: Linux carries the parent's resident size over fork and exec into it
    (a 926 MB parent made every worker read 926 MB), while VmHWM belongs to the new program's memory only.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_cases(
    dataset: str, sigmas: list[float], limit: int | None, polyu_split: str, skip: set[tuple[str, str]] = frozenset()
) -> Iterator[tuple[str, str, float | None, np.ndarray, np.ndarray]]:
    """Yield (image, sigma label, true sigma or None, noisy, clean), loading one image at a time.

    Cases in `skip` ((image, sigma label) pairs already measured) are not even loaded.
    """
    from bdn.data import (
        DATASETS,
        bundled_images,
        clean_images,
        dataset_pairs,
        dataset_path,
        load_pair,
        polyu_ids,
        synthesize,
    )
    from bdn.io import read_image

    if DATASETS[dataset].paired:
        pairs = dataset_pairs(dataset)
        if dataset == "PolyU" and polyu_split != "all":
            wanted = set(polyu_ids(polyu_split))
            pairs = [pair for pair in pairs if pair.name in wanted]
        for pair in pairs[:limit]:
            if (pair.name, "real") in skip:
                continue
            noisy, clean = load_pair(pair)
            yield pair.name, "real", None, noisy, clean
        return
    if DATASETS[dataset].kind == "bundled":
        images = bundled_images(dataset)[:limit]
        sources = [(name, lambda image=image: image) for name, image in images]
    else:
        sources = [(path.stem, lambda path=path: read_image(path)[0]) for path in clean_images(dataset_path(dataset))]
        sources = sources[:limit]
    for sigma in sigmas:
        for name, load in sources:
            if (name, f"{sigma:g}") in skip:
                continue
            clean = load()
            noisy = synthesize(clean, "gaussian", sigma, seed=NOISE_SEED, name=name)
            yield name, f"{sigma:g}", sigma, noisy, clean


def parse_dataset(spec: str, sigmas: list[float]) -> tuple[str, list[float]]:
    """`BSD68:25` or `Set12:15,25,50` gives that set its own sigmas; a plain name takes the global `sigmas`."""
    name, _, own = spec.partition(":")
    if not own:
        return name, list(sigmas)
    try:
        return name, [float(value) for value in own.split(",")]
    except ValueError:
        raise BdnError(f"dataset {spec!r}: write NAME or NAME:SIGMA[,SIGMA...], e.g. BSD68:25") from None


def run_worker(
    method: str,
    dataset: str,
    sigmas: list[float],
    blind: bool,
    limit: int | None,
    polyu_split: str,
    rows_path: Path,
) -> None:
    """Measure one method on one dataset in this process; append rows; record this process's peak memory."""
    import inspect

    import cv2
    from tqdm import tqdm

    from bdn.io import atomic_write_text
    from bdn.methods import denoise, method_function
    from bdn.metrics import psnr_ssim

    cv2.setNumThreads(int(os.environ.get("OMP_NUM_THREADS", "0") or 0))
    takes_sigma = method != "noisy" and "sigma" in inspect.signature(method_function(method)).parameters
    done = (
        pd.read_csv(rows_path, dtype={"sigma": str, "image": str})
        if rows_path.exists()
        else pd.DataFrame(columns=ROW_COLUMNS)
    )
    finished = set(zip(done["image"].astype(str), done["sigma"].astype(str), strict=True))
    rows = done.to_dict("records")
    cases = bench_cases(dataset, sigmas, limit, polyu_split, skip=finished)
    measured = 0
    for image, sigma_label, sigma, noisy, clean in tqdm(cases, desc=f"{method} on {dataset}", unit="image"):
        params = {"sigma": sigma} if takes_sigma and sigma is not None and not blind else {}
        start = time.perf_counter()
        result = noisy if method == "noisy" else denoise(noisy, method, **params)
        seconds = time.perf_counter() - start
        value_psnr, value_ssim = psnr_ssim(clean, result)
        rows.append(
            {
                "method": method,
                "dataset": dataset,
                "sigma": sigma_label,
                "image": image,
                "psnr": value_psnr,
                "ssim": value_ssim,
                "seconds": seconds,
            }
        )
        atomic_write_text(rows_path, pd.DataFrame(rows, columns=ROW_COLUMNS).to_csv(index=False))
        measured += 1
    peak_mb = peak_rss_mb()
    memory_path = rows_path.with_suffix(".json")
    if memory_path.exists():
        earlier = json.loads(memory_path.read_text())["peak_rss_mb"]
        # A resumed worker that measured nothing saw no image: the earlier process's peak stands.
        peak_mb = max(peak_mb, earlier) if measured else earlier
    atomic_write_text(memory_path, json.dumps({"peak_rss_mb": peak_mb}))


def summarise(
    rows: pd.DataFrame, memory: dict[tuple[str, str], float], methods: list[str], datasets: list[str]
) -> pd.DataFrame:
    """Mean metrics per (dataset, sigma, method), in the order the run asked for them."""
    rows = rows.assign(
        dataset=pd.Categorical(rows.dataset, categories=datasets, ordered=True),
        method=pd.Categorical(rows.method, categories=methods, ordered=True),
        sigma_order=pd.to_numeric(rows.sigma, errors="coerce"),
    ).sort_values(["dataset", "sigma_order", "method"])
    summary = (
        rows.groupby(["dataset", "sigma", "method"], sort=False, observed=True)
        .agg(
            images=("image", "count"),
            psnr=("psnr", "mean"),
            ssim=("ssim", "mean"),
            seconds=("seconds", "mean"),
        )
        .reset_index()
    )
    summary["peak_mb"] = [
        memory.get((m, d), float("nan")) for m, d in zip(summary.method, summary.dataset, strict=True)
    ]
    summary[["dataset", "method"]] = summary[["dataset", "method"]].astype(str)
    return summary.rename(columns={"seconds": "sec_per_image"})


def run_bench(
    methods: list[str],
    datasets: list[str],
    sigmas: list[float],
    *,
    blind: bool = False,
    threads: int = 2,
    limit: int | None = None,
    polyu_split: str = "all",
    out_root: Path = Path("results/bench"),
    run_name: str | None = None,
) -> pd.DataFrame:
    from bdn.data import DATASETS, dataset_path
    from bdn.io import atomic_write_text
    from bdn.methods import get_method, missing_extra
    from bdn.report import grouped_bar_figure, markdown_table, write_table

    for method in methods:
        if method != "noisy":
            get_method(method)
    skipped = [method for method in methods if method != "noisy" and missing_extra(method)]
    for method in skipped:  # e.g. bm3d, an extra: the others are measured, this one is left out with a note
        print(f"bdn bench: skipping {method}: {missing_extra(method)}", file=sys.stderr)
    if skipped and len(skipped) == len(methods):
        raise BdnError(missing_extra(skipped[0]))
    methods = [method for method in methods if method not in skipped]
    plan = [parse_dataset(spec, sigmas) for spec in datasets]
    for dataset, _ in plan:
        if dataset not in DATASETS:
            raise BdnError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
        if DATASETS[dataset].kind != "bundled":
            dataset_path(dataset)  # a missing dataset fails now, not after an hour of other work
    run_dir = Path(out_root) / (run_name or datetime.now().strftime("%Y%m%d-%H%M%S"))
    (run_dir / "rows").mkdir(parents=True, exist_ok=True)
    command = "bdn " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "bdn" else "(python API)"
    config = {
        "command": command,
        "methods": methods,
        "datasets": datasets,
        "sigmas": sigmas,
        "blind": blind,
        "threads": threads,
        "limit": limit,
        "polyu_split": polyu_split,
        "noise_seed": NOISE_SEED,
    }
    from bdn.record import environment

    config["environment"] = environment()  # bdn.record: versions, git commit, CPU (workers run `threads` threads)
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))

    env = dict(os.environ, **{name: str(threads) for name in THREAD_VARIABLES})
    for method in methods:
        for dataset, dataset_sigmas in plan:
            rows_path = run_dir / "rows" / f"{method}__{dataset}.csv"
            worker = [sys.executable, "-m", "bdn.bench", "--worker", method, dataset, str(rows_path)]
            worker += ["--sigma", *map(str, dataset_sigmas), "--polyu-split", polyu_split]
            worker += ["--blind"] * blind + (["--limit", str(limit)] if limit else [])
            if subprocess.run(worker, env=env).returncode != 0:
                raise BdnError(f"bench worker for {method} on {dataset} failed (see the message above)")

    # Only this run's (method, dataset) files: a run folder resumed with other choices keeps its old rows apart.
    frames, memory = [], {}
    for method in methods:
        for dataset, dataset_sigmas in plan:
            rows_path = run_dir / "rows" / f"{method}__{dataset}.csv"
            rows = pd.read_csv(rows_path, dtype={"sigma": str, "image": str})
            if not DATASETS[dataset].paired:
                rows = rows[rows.sigma.isin([f"{sigma:g}" for sigma in dataset_sigmas])]
            frames.append(rows)
            memory[(method, dataset)] = json.loads(rows_path.with_suffix(".json").read_text())["peak_rss_mb"]
    rows = pd.concat(frames, ignore_index=True)
    rows.to_csv(run_dir / "per_image.csv", index=False)
    summary = summarise(rows, memory, methods, [dataset for dataset, _ in plan])
    write_table(summary, run_dir / "summary")
    summary["case"] = summary["dataset"] + np.where(summary["sigma"] == "real", "", " σ=" + summary["sigma"])
    grouped_bar_figure(summary, "case", "method", "psnr", run_dir / "psnr.png", "mean PSNR (dB)")
    summary = summary.drop(columns="case")
    print(markdown_table(summary))
    print(f"written: {run_dir}/summary.csv, summary.md, per_image.csv, psnr.png")
    return summary


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bdn.bench --worker")
    parser.add_argument("method")
    parser.add_argument("dataset")
    parser.add_argument("rows_path", type=Path)
    parser.add_argument("--sigma", nargs="+", type=float, default=[25.0])
    parser.add_argument("--blind", action="store_true")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--polyu-split", default="all")
    args = parser.parse_args(argv)
    try:
        run_worker(args.method, args.dataset, args.sigma, args.blind, args.limit, args.polyu_split, args.rows_path)
    except BdnError as error:
        print(f"bdn: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # the worker process `bdn bench` starts for each method; not a command of its own
    if sys.argv[1:2] != ["--worker"]:
        print("bdn.bench: error: this is `bdn bench`'s worker process; run `bdn bench`", file=sys.stderr)
        sys.exit(1)
    sys.exit(worker_main(sys.argv[2:]))
