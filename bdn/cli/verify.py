"""`bdn verify RECORD.json`: re-run a run record and say whether the bytes match.

Verifies `bdn denoise` records (`<output>.json`, written beside each output): the input must still have the
recorded SHA-256; the same method and parameters run again into a temporary folder, with torch's recorded thread
count, and the new output's bytes are compared with the recorded output's SHA-256. Exit 0 when identical, 1 when
not (with the largest pixel difference and the PSNR between the two where the recorded output is still there),
or when the record cannot be re-run. Records of the other commands (run, bench, train, train-biqan, dip-init,
export) are read and refused with one line: re-running them is not supported yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "re-run a run record (the .json beside a bdn denoise output) and say whether the bytes match"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("record", help="a run record: the <output>.json that bdn denoise writes beside an output")
    parser.add_argument("--keep", metavar="FOLDER", help="write the re-run's output (and its record) here")
    parser.add_argument("--threads", type=int, help="torch threads for the re-run (default: the record's)")


def _environment_changes(recorded: dict, now: dict) -> list[str]:
    """The environment fields that differ between the record and this run (what may explain a difference)."""
    changes = []
    for key in ("bdn_version", "git_commit", "git_dirty", "machine", "cpu", "device", "torch_threads"):
        if recorded.get(key) != now.get(key):
            changes.append(f"{key} {recorded.get(key)!r} -> {now.get(key)!r}")
    before, after = recorded.get("libraries", {}), now.get("libraries", {})
    for name in sorted(set(before) | set(after)):
        if before.get(name) != after.get(name):
            changes.append(f"{name} {before.get(name)} -> {after.get(name)}")
    return changes


def _located(path: str, record: dict) -> Path:
    """A recorded path: relative ones are relative to the folder the recorded command ran in."""
    located = Path(path)
    return located if located.is_absolute() else Path(record.get("cwd", ".")) / located


def compare_images(a: Path, b: Path) -> tuple[float, float]:
    """(largest absolute difference in 8-bit levels, PSNR in dB) between two image files of one shape."""
    import numpy as np

    from bdn.errors import BdnError
    from bdn.io import read_image

    x, _ = read_image(a)
    y, _ = read_image(b)
    if x.shape != y.shape:
        raise BdnError(f"{a} is {x.shape}, the re-run {y.shape}")
    diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
    mse = float(np.mean(diff**2))
    return float(diff.max() * 255.0), (float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse)))


def verify(record_file: str | Path, keep: str | Path | None = None, threads: int | None = None, echo=print) -> bool:
    """Re-run a `bdn denoise` record; True when the new output's bytes equal the recorded ones. BdnError when
    the record cannot be re-run (another command, an input that changed or is gone, a failed run)."""
    import tempfile

    from bdn.batch import denoise_files
    from bdn.cli.options import set_threads
    from bdn.errors import BdnError
    from bdn.record import environment, file_sha256, read_record

    record = read_record(record_file)
    command = record.get("command")
    if command != "denoise":
        raise BdnError(f"{record_file}: a {command!r} record; bdn verify re-runs bdn denoise records only")
    try:
        (source,), (output,) = record["inputs"], record["outputs"]
        method, params = record["options"]["method"], dict(record["options"]["params"])
    except (KeyError, TypeError, ValueError):
        raise BdnError(f"{record_file}: a denoise record needs one input, one output, a method and params") from None
    source_path = _located(source["path"], record)
    if not source_path.is_file():
        raise BdnError(f"{source['path']}: the recorded input is gone")
    if file_sha256(source_path) != source["sha256"]:
        raise BdnError(f"{source_path}: the input changed since the record (its SHA-256 differs)")
    for weights in record.get("weights", []):
        path = _located(weights["path"], record)
        if not path.is_file():
            echo(f"note: weights {path} are gone; the method will look for its own")
        elif file_sha256(path) != weights["sha256"]:
            echo(f"note: weights {path} changed since the record (SHA-256 differs)")
    recorded_env = record.get("environment", {})
    set_threads(threads or recorded_env.get("torch_threads"))  # the record's count unless told
    with tempfile.TemporaryDirectory(prefix="bdn-verify-") as scratch:
        folder = Path(keep) if keep is not None else Path(scratch)
        target = folder / Path(output["path"]).name
        report = denoise_files([source_path], target, method, params, overwrite=True, progress=False)
        if report.problems or not target.is_file():
            raise BdnError(f"the re-run failed: {'; '.join(report.problems) or 'no output written'}")
        new_sha = file_sha256(target)
        for change in _environment_changes(recorded_env, environment(recorded_env.get("device"))):
            echo(f"environment: {change}")
        if new_sha == output["sha256"]:
            echo(f"identical: {method} on {source_path} gives the recorded bytes (sha256 {new_sha[:16]})")
            return True
        echo(f"differs: {method} on {source_path}: sha256 {new_sha[:16]}, recorded {str(output['sha256'])[:16]}")
        recorded_output = _located(output["path"], record)
        if recorded_output.is_file() and file_sha256(recorded_output) == output["sha256"]:
            largest, psnr = compare_images(recorded_output, target)
            echo(f"largest pixel difference {largest:.3g} (8-bit levels), PSNR between the two {psnr:.2f} dB")
        else:
            echo(f"{recorded_output}: the recorded output is gone or changed; pixels not compared")
        return False


def run(args: argparse.Namespace) -> int:
    return 0 if verify(args.record, args.keep, args.threads) else 1
