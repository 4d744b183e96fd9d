"""`bdn verify RECORD.json`: re-run a run record and say whether the bytes match.

Verifies `bdn denoise` records (`<output>.json`, written beside each output): the input must still have the
recorded SHA-256; the same method and parameters run again into a temporary folder, with torch's recorded thread
count, and the new output's bytes are compared with the recorded output's SHA-256. Exit 0 when identical, 1 when
not (with the largest pixel difference and the PSNR between the two where the recorded output is still there),
or when the record cannot be re-run.

Verifies `bdn run` records too (`<run>/run.json`), one image at a time (`--image ID`; optional when the run
finished one image only): that image's done.json names its input files and their SHA-256, its thread count and
device, and result.png's SHA-256; the image is fitted again from the start with run.json's options (those of the
folder's latest `bdn run`: the config, the judge and its options, the noise, the crop, the learned initialisation;
the iteration count the image's own where no judge stopped it) into a temporary folder and the new
result.png's bytes are compared. A fit takes as long as it took (done.json's `seconds`). On one machine and
thread count a CPU fit is deterministic, resumed or not; elsewhere a few levels may differ. Records of the other
commands (bench, train, train-biqan, dip-init, export) are read and refused with one line: re-running them is
not supported yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "re-run a run record (bdn denoise's <output>.json, bdn run's run.json) and say whether the bytes match"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "record", help="a run record: the <output>.json beside a bdn denoise output, or a bdn run folder's run.json"
    )
    parser.add_argument("--image", metavar="ID", help="for a bdn run record: the image to fit again")
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


def _report_difference(recorded_output: Path, recorded_sha: str, new_output: Path, echo) -> None:
    """The largest pixel difference and the PSNR between the recorded output and the re-run's, where the recorded
    file is still the one recorded."""
    from bdn.record import file_sha256

    if recorded_output.is_file() and file_sha256(recorded_output) == recorded_sha:
        largest, psnr = compare_images(recorded_output, new_output)
        echo(f"largest pixel difference {largest:.3g} (8-bit levels), PSNR between the two {psnr:.2f} dB")
    else:
        echo(f"{recorded_output}: the recorded output is gone or changed; pixels not compared")


def _done_images(run: Path) -> list[str]:
    return sorted(path.parent.name for path in run.glob("*/done.json"))


def verify_run(
    record_file: Path, record: dict, image: str | None, keep: str | Path | None, threads: int | None, echo
) -> bool:
    """Fit one image of a `bdn run` record again (see the module docstring); True when result.png's bytes match."""
    import dataclasses
    import tempfile

    from bdn.cli.options import set_threads
    from bdn.dip.config import DipConfig
    from bdn.dip.run import run_folder
    from bdn.dip.runfolder import read_done
    from bdn.errors import BdnError
    from bdn.record import environment, file_sha256

    run = Path(record_file).parent
    finished = _done_images(run)
    if image is None:
        if len(finished) != 1:
            shown = ", ".join(finished[:5]) + (", ..." if len(finished) > 5 else "")
            raise BdnError(
                f"{record_file}: give --image ID, one of the {len(finished)} finished images ({shown or 'none'})"
            )
        image = finished[0]
    if image not in finished:
        raise BdnError(f"--image {image}: not a finished image of {run} (no {image}/done.json)")
    done = read_done(run / image)
    if done is None:
        raise BdnError(f"{run / image / 'done.json'}: cannot be read")
    if "result_sha256" not in done or "input_paths" not in done:
        raise BdnError(f"{run / image / 'done.json'}: written by an older bdn (no input paths or result SHA-256)")
    if done["result_sha256"] is None:
        raise BdnError(f"{image}: the run wrote no result.png for it (no judge, no clean image): nothing to compare")
    inputs = {}
    for kind, path in done["input_paths"].items():
        located = _located(path, record)
        if not located.is_file():
            raise BdnError(f"{path}: the recorded {kind} input is gone")
        if file_sha256(located) != done["input_sha256"].get(kind):
            raise BdnError(f"{located}: the {kind} input changed since the record (its SHA-256 differs)")
        inputs[kind] = located
    options = record.get("options", {})
    try:
        config = DipConfig(**options["config"])
    except (KeyError, TypeError) as error:
        raise BdnError(f"{record_file}: not a bdn run record's options ({error})") from None
    if isinstance(options["config"].get("net_type"), dict):
        raise BdnError(f"{record_file}: a custom net spec; bdn verify re-fits the named nets only")
    if not done.get("stopped_early") and done.get("iterations"):  # the image's own length (run.json: the last call's)
        config = dataclasses.replace(config, num_iter=int(done["iterations"]))
    judge_options = {
        key: str(_located(value, record)) if key in ("model_path", "weights") and value else value
        for key, value in (options.get("judge_options") or {}).items()
    }
    set_threads(threads or done.get("torch_threads"))
    with tempfile.TemporaryDirectory(prefix="bdn-verify-") as scratch:
        folder = Path(keep) if keep is not None else Path(scratch)
        dirs = {}
        for kind, sub in (("noisy", "real"), ("clean", "mean")):  # the one image's files, under their own names
            if kind in inputs:
                dirs[kind] = Path(scratch) / "inputs" / sub
                dirs[kind].mkdir(parents=True)
                (dirs[kind] / inputs[kind].name).symlink_to(inputs[kind].resolve())
        echo(f"fitting {image} again ({done.get('iterations')} iterations took {done.get('seconds')} s)")
        report = run_folder(
            dirs.get("noisy"),
            dirs.get("clean"),
            folder / "run",
            config,
            stop=options.get("stop", "none"),
            judge_options=judge_options,
            noise=options.get("noise", "gaussian:25"),
            crop=options.get("crop"),
            checkpoint_iter=0,
            device=done.get("device", "cpu"),
            progress=False,
            echo=None,
            init=options.get("init"),
        )
        new_output = folder / "run" / image / "result.png"
        if report.problems or not new_output.is_file():
            raise BdnError(f"the re-fit failed: {'; '.join(report.problems) or 'no result.png written'}")
        new_sha = file_sha256(new_output)
        for change in _environment_changes(record.get("environment", {}), environment(done.get("device"))):
            echo(f"environment: {change}")
        if new_sha == done["result_sha256"]:
            echo(f"identical: {image} fitted again gives the recorded result.png (sha256 {new_sha[:16]})")
            return True
        echo(f"differs: {image}: result.png sha256 {new_sha[:16]}, recorded {done['result_sha256'][:16]}")
        _report_difference(run / image / "result.png", done["result_sha256"], new_output, echo)
        return False


def verify(
    record_file: str | Path,
    keep: str | Path | None = None,
    threads: int | None = None,
    echo=print,
    image: str | None = None,
) -> bool:
    """Re-run a `bdn denoise` record, or one image of a `bdn run` record; True when the new output's bytes equal
    the recorded ones. BdnError when the record cannot be re-run (another command, an input that changed or is
    gone, a failed run)."""
    import tempfile

    from bdn.batch import denoise_files
    from bdn.cli.options import set_threads
    from bdn.errors import BdnError
    from bdn.record import environment, file_sha256, read_record

    record = read_record(record_file)
    command = record.get("command")
    if command == "run":
        return verify_run(Path(record_file), record, image, keep, threads, echo)
    if image is not None:
        raise BdnError(f"--image is for bdn run records; {record_file} is a {command!r} record")
    if command != "denoise":
        raise BdnError(f"{record_file}: a {command!r} record; bdn verify re-runs bdn denoise and bdn run records only")
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
        _report_difference(_located(output["path"], record), output["sha256"], target, echo)
        return False


def run(args: argparse.Namespace) -> int:
    return 0 if verify(args.record, args.keep, args.threads, image=args.image) else 1
