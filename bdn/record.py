"""Run records: what made a result, written beside it as JSON, so that it can be traced and re-run (`bdn verify`).

A record (format ``bdn-record-1``) holds:

- ``command`` (``denoise``, ``run``, ``bench``, ``train``, ``train-biqan``, ``dip-init``, ``export``), ``argv``
  (the command line as the process received it), ``created`` (UTC) and ``cwd`` (relative paths are relative to it);
- ``environment``: bdn's version and the git commit of the checkout it runs from (with ``git_dirty`` when the
  checkout has uncommitted changes; both null for an installed copy), Python, the platform and CPU, the versions
  of torch and the key libraries, the device, torch's thread count and the thread variables of the environment;
- ``seed`` (null where the command draws no random numbers) and ``options``: every option of the command;
- ``inputs``, ``weights`` and ``outputs``: each file's path and SHA-256 (weights also by name).

`environment()` is built once per process (git runs once); `make_record` adds the rest and `write_record` writes it
atomically (bdn.io), with the permissions of any new file.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path

FORMAT = "bdn-record-1"
# Libraries whose versions can change a result; read from the installed metadata (nothing is imported).
LIBRARIES = (
    "torch",
    "numpy",
    "scipy",
    "scikit-image",
    "opencv-python",
    "opencv-python-headless",
    "pillow",
    "bm3d",
    "safetensors",
    "onnxruntime",
    "tifffile",
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str | None, bool | None]:
    """(commit, dirty) of the git checkout bdn runs from; (None, None) for an installed copy or without git."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit or None, bool(status.strip())


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict:
    from bdn import __version__

    commit, dirty = git_state()
    return {
        "bdn_version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "libraries": {name: version for name in LIBRARIES if (version := _version(name)) is not None},
    }


def environment(device: str | None = None) -> dict:
    """The machine and software part of a record. The device is as given (default 'cpu'); torch's thread count
    and CUDA details only where torch is already loaded (a classical method never loads it)."""
    env = dict(_static_environment())
    env["device"] = str(device) if device is not None else "cpu"
    env["thread_variables"] = {name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ}
    torch = sys.modules.get("torch")
    env["torch_threads"] = torch.get_num_threads() if torch is not None else None
    if torch is not None and env["device"].startswith("cuda"):
        try:
            env["cuda"] = torch.version.cuda
            env["gpu"] = torch.cuda.get_device_name(torch.device(env["device"]))
        except Exception:  # noqa: BLE001 - a record never fails a run
            pass
    return env


def file_entry(path: str | Path, name: str | None = None) -> dict:
    """{'path', 'sha256'} (and 'name' when given) of a file; sha256 null when it cannot be read."""
    path = Path(path)
    try:
        sha = file_sha256(path)
    except OSError:
        sha = None
    entry = {"path": str(path), "sha256": sha}
    if name is not None:
        entry = {"name": name, **entry}
    return entry


def jsonable(value):
    """`value` made JSON-safe: paths and other objects become text, tuples lists, mappings dicts."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def make_record(
    command: str,
    options: Mapping,
    *,
    inputs: Iterable[str | Path | Mapping] = (),
    weights: Iterable[str | Path] = (),
    outputs: Iterable[str | Path] = (),
    seed: int | None = None,
    device: str | None = None,
    **extra,
) -> dict:
    """A run record (see the module docstring); `extra` keys are added as they are. An input may be given as its
    `file_entry` already (so a file hashed once for another purpose is not read again)."""
    record = {
        "format": FORMAT,
        "command": command,
        "argv": list(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cwd": os.getcwd(),  # relative paths below are relative to it
        "environment": environment(device),
        "seed": seed,
        "options": jsonable(options),
        "inputs": [dict(path) if isinstance(path, Mapping) else file_entry(path) for path in inputs],
        "weights": [file_entry(path, Path(path).name) for path in weights],
        "outputs": [file_entry(path) for path in outputs],
    }
    record.update(jsonable(extra))
    return record


def options_of(args) -> dict:
    """A command's parsed options (an argparse Namespace) as a record's `options`: the command layer's own keys left
    out."""
    return {key: value for key, value in vars(args).items() if key not in ("command_module", "prog")}


def write_record(path: str | Path, record: Mapping) -> Path:
    """Write a record as indented JSON, atomically (bdn.io.atomic_write_text)."""
    from bdn.io import atomic_write_text

    return atomic_write_text(path, json.dumps(jsonable(record), indent=2) + "\n")


def read_record(path: str | Path) -> dict:
    """A record written by `write_record`; BdnError if it is not one."""
    from bdn.errors import BdnError

    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BdnError(f"{path}: not a readable run record ({' '.join(str(error).split())[:160]})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise BdnError(f"{path}: not a run record (no 'format': '{FORMAT}')")
    return record


def record_path(output: str | Path) -> Path:
    """Where `bdn denoise` keeps an output's record: beside it, the output's name plus '.json'."""
    output = Path(output)
    return output.with_name(output.name + ".json")


# ---------------------------------------- what a denoising method reads


def method_seed(method: str, params: Mapping) -> int | None:
    """The seed a method draws its random numbers from (its `seed` parameter, or that parameter's default);
    None for a method without one."""
    import inspect

    from bdn.methods import method_function

    parameter = inspect.signature(method_function(method)).parameters.get("seed")
    if parameter is None:
        return None
    return params.get("seed", parameter.default)


def method_weights(method: str, params: Mapping, channels: int) -> list[Path]:
    """The weights files a method reads for an image of `channels` channels: a trained model's (the `weights`
    given, else the shipped file bdn.models.run picks), DIP's learned initialisation; none for the others."""
    from bdn.methods import get_method

    spec = get_method(method)
    if spec.family == "model":
        if params.get("weights") is not None:
            return [Path(str(params["weights"]))]
        from bdn.models.registry import COLOURS, get_model_spec
        from bdn.models.weights import shipped_weights

        model = dict(spec.params)["model"]
        shipped = get_model_spec(model).shipped
        for wanted in (channels, 4 - channels):  # as bdn.models.run._net_for
            if COLOURS[wanted] in shipped:
                return [shipped_weights(model, wanted)]
        return []
    if spec.family == "dip" and params.get("init") not in (None, "none"):
        from bdn.dip.init import find_init

        return [find_init(str(params["init"]))]
    return []


def method_device(method: str, params: Mapping) -> str:
    """The device a method runs on: DIP's `device` (resolved as it resolves it), the CPU for the others."""
    from bdn.methods import get_method

    if get_method(method).family != "dip":
        return "cpu"
    try:
        from bdn.devices import pick_device

        return str(pick_device(params.get("device", "auto")))
    except Exception:  # noqa: BLE001 - a bad device fails the run itself, with its own message
        return str(params.get("device", "auto"))
