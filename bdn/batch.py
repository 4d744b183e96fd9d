"""`bdn denoise` on files, folders and globs: one bad file never stops the batch, and nothing is half-written.

Outputs keep the input's name, format, bit depth and mode. A file whose output already exists is skipped unless
`overwrite`, so an interrupted batch resumes where it stopped.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bdn.errors import BdnError, BdnWarning
from bdn.io import IMAGE_EXTENSIONS, list_images, read_image, write_image
from bdn.methods import denoise, get_method


@dataclass
class BatchReport:
    rows: list[dict] = field(default_factory=list)  # one per processed or skipped file
    problems: list[str] = field(default_factory=list)  # one line per file or input that failed
    notes: list[str] = field(default_factory=list)  # one line per thing a method said of a result (BdnWarning)


def plan_outputs(inputs: list[Path], out: Path) -> dict[Path, Path]:
    """Map each input to its output path: OUT/<name> for a folder, OUT itself for one input and an image name."""
    if len(inputs) == 1 and out.suffix.lower() in IMAGE_EXTENSIONS and not out.is_dir():
        return {inputs[0]: out}
    return {path: out / path.name for path in inputs}


def denoise_files(
    inputs: Iterable[str | Path],
    out: str | Path,
    method: str,
    params: dict | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchReport:
    spec = get_method(method)  # an unknown method is a usage error, before any file is touched
    params = dict(params or {})
    paths, problems = list_images(inputs)
    report = BatchReport(problems=list(problems))
    if not paths:
        if not report.problems:
            report.problems.append("no input images given")
        return report
    outputs = plan_outputs(paths, Path(out))
    claimed: dict[Path, Path] = {}
    for source, target in tqdm(outputs.items(), desc=f"denoise ({method})", unit="image", disable=not progress):
        if target in claimed:
            report.problems.append(f"{source}: same output name as {claimed[target]} ({target}); not written")
            continue
        claimed[target] = source
        if target.exists() and not overwrite:
            report.rows.append({"input": str(source), "output": str(target), "status": "exists, skipped"})
            continue
        if target.resolve() == source.resolve():
            report.problems.append(f"{source}: output would overwrite the input; choose another -o")
            continue
        try:
            pixels, info = read_image(source, min_size=spec.min_size)
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always", BdnWarning)
                result = denoise(pixels, method, **params)
            seconds = time.perf_counter() - start
            for warning in said:
                if issubclass(warning.category, BdnWarning):
                    report.notes.append(f"{source}: {warning.message}")
                else:  # not ours: let Python show it as it would have
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            write_image(target, result, info)
        except BdnError as error:
            report.problems.append(str(error))
            continue
        height, width = pixels.shape[:2]
        report.rows.append(
            {
                "input": str(source),
                "output": str(target),
                "size": f"{width}x{height}",
                "seconds": round(seconds, 2),
                "status": "done",
            }
        )
    return report
