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

from bdn.auto import Picked
from bdn.errors import BdnError, BdnWarning
from bdn.io import (
    IMAGE_EXTENSIONS,
    check_writable_folder,
    default_max_pixels,
    list_images,
    read_image,
    remove_stale_temporaries,
    write_image,
)
from bdn.methods import check_params, denoise, get_method
from bdn.record import file_entry, method_weights


@dataclass
class BatchReport:
    rows: list[dict] = field(default_factory=list)  # one per processed or skipped file
    problems: list[str] = field(default_factory=list)  # one line per file or input that failed
    notes: list[str] = field(default_factory=list)  # one line per thing a method said of a result (BdnWarning)


def plan_outputs(inputs: list[Path], out: Path) -> dict[Path, Path]:
    """Map each input to its output path: OUT/<name> for a folder, OUT itself for one input and an image name.

    BdnError for one input and a name whose extension bdn cannot write (`-o result.xyz` would have made a folder
    of that name), and for several inputs and one image file name."""
    suffix = out.suffix.lower()
    if len(inputs) == 1 and suffix in IMAGE_EXTENSIONS and not out.is_dir():
        return {inputs[0]: out}
    if len(inputs) == 1 and suffix and not out.is_dir():
        known = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise BdnError(f"{out}: {suffix!r} is not an image extension bdn writes ({known}); or name a folder")
    if suffix in IMAGE_EXTENSIONS and not out.is_dir():
        raise BdnError(f"{out}: names one image file, but {len(inputs)} inputs were given; name a folder")
    return {path: out / path.name for path in inputs}


def _write_record(source: dict, target: Path, method: str, params: dict, overwrite: bool, weights: list[Path]) -> None:
    """The output's run record, beside it (`<output>.json`, bdn.record); `bdn verify` re-runs it. `source`: the
    input's `file_entry`; `weights`: the files the method that made the image loaded (auto's pick, else `method`)."""
    from bdn.record import make_record, method_device, method_seed, record_path, write_record

    options = {"method": method, "params": params, "overwrite": overwrite}
    record = make_record(
        "denoise",
        options,
        inputs=[source],
        weights=weights,
        outputs=[target],
        seed=method_seed(method, params),
        device=method_device(method, params),
    )
    write_record(record_path(target), record)


def _embedded_record(source: dict, target: Path, method: str, params: dict) -> dict[str, str]:
    """What a PNG output carries inside (tEXt chunks): bdn's version, the method, its parameters, the input's
    SHA-256 (`source`: its `file_entry`) and the name of the full record beside it."""
    import json

    from bdn import __version__
    from bdn.record import jsonable, record_path

    made = {"method": method, "params": jsonable(params), "input_sha256": source["sha256"]}
    made["record"] = record_path(target).name
    return {"Software": f"bdn {__version__}", "bdn:record": json.dumps(made, sort_keys=True)}


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
    check_params(method, params)  # so are bad parameters: checked once, not once per image
    default_max_pixels()  # and a BDN_MAX_PIXELS that would refuse every image
    paths, problems = list_images(inputs)
    report = BatchReport(problems=list(problems))
    if not paths:
        if not report.problems:
            report.problems.append("no input images given")
        return report
    outputs = plan_outputs(paths, Path(out))
    for folder in sorted({target.parent for target in outputs.values()}):
        check_writable_folder(folder)  # before any work, not after each image's denoising
    for target in outputs.values():
        for stale, size in remove_stale_temporaries(target):
            report.notes.append(f"{stale}: removed ({size:,} bytes), a temporary file an interrupted run left")
    claimed: dict[Path, Path] = {}
    for source, target in tqdm(outputs.items(), desc=f"denoise ({method})", unit="image", disable=not progress):
        if target in claimed:
            report.problems.append(f"{source}: same output name as {claimed[target]} ({target}); not written")
            continue
        claimed[target] = source
        if target.resolve() == source.resolve():  # before the skip: an input is not a finished output
            report.problems.append(f"{source}: output would overwrite the input; choose another -o")
            continue
        if target.exists() and not overwrite:
            report.rows.append({"input": str(source), "output": str(target), "status": "exists, skipped"})
            continue
        try:
            pixels, info = read_image(source, min_size=spec.min_size)
            start = time.perf_counter()
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always", BdnWarning)
                result = denoise(pixels, method, **params)
            seconds = time.perf_counter() - start
            ran = method  # auto says which method it ran: the row and the record name that one's weights
            for warning in said:
                if isinstance(warning.message, Picked):
                    ran = warning.message.method
                if issubclass(warning.category, BdnWarning):
                    report.notes.append(f"{source}: {warning.message}")
                else:  # not ours: let Python show it as it would have
                    warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
            # Looked up once: the row, the record and the PNG's own text all say the same.
            weights = method_weights(ran, params if ran == method else {}, 1 if pixels.ndim == 2 else 3)
            entry = file_entry(source)
            write_image(target, result, info, text=_embedded_record(entry, target, method, params))
            _write_record(entry, target, method, params, overwrite, weights)
        except BdnError as error:  # a method's message may not name the file; the batch's line always does
            message = str(error)
            named = message.startswith((str(source), str(target)))
            report.problems.append(message if named else f"{source}: {message}")
            continue
        height, width = pixels.shape[:2]
        row = {"input": str(source), "output": str(target), "size": f"{width}x{height}"}
        if weights:  # a trained model: the file it loaded (as given, or the shipped file's name)
            given = params.get("weights") if ran == method else None
            row["weights"] = ", ".join(str(given) if given is not None else path.name for path in weights)
        report.rows.append({**row, "seconds": round(seconds, 2), "status": "done"})
    return report
