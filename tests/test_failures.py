"""Bad inputs and bad parameters through the command line: one line naming the file (or the parameter) and the
cause, no traceback, the batch goes on past a bad file and its summary lists it, nothing wasted or left behind.

`CASES` is the reliability table: docs/reliability.md is made from it (`python tests/test_failures.py` writes it)
and `test_reliability_doc_is_current` fails when the two differ.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

DOC = Path(__file__).resolve().parent.parent / "docs" / "reliability.md"
MODEL = "resnet_5x5_bn_3x3"


@dataclass(frozen=True)
class Case:
    """One row of the table. `args` follow `bdn`; {tmp} is the test's folder, {in} its input folder (a.png, colour,
    and b.png, grey, 48x48), {out} the output folder. `make(tmp)` builds the bad input; `env` is set for the run."""

    bad: str  # the bad input, in words
    does: str  # what bdn does, in words
    args: tuple[str, ...]
    says: str  # a piece of the one line bdn prints
    code: int = 1  # the exit status
    written: tuple[str, ...] = ()  # the images {out} holds afterwards
    make: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    check: Callable[[Path, str], None] | None = None  # further checks, given {tmp} and all that was printed


def _weights_with(tmp: Path, name: str, change: Callable[[dict, dict], None]) -> None:
    """{tmp}/NAME: the shipped grey weights of MODEL, their tensors and metadata changed by `change`."""
    from bdn.models.weights import shipped_weights
    from bdn.tensorfile import read_tensors, save_tensors

    state, metadata = read_tensors(shipped_weights(MODEL, 1))
    change(state, metadata)
    save_tensors(tmp / name, state, metadata)


def _nan_weights(tmp: Path) -> None:
    def poison(state, metadata):
        first = next(key for key, tensor in state.items() if tensor.is_floating_point() and tensor.dim() == 4)
        state[first] = state[first] * float("nan")

    _weights_with(tmp, "nan.safetensors", poison)


def _cached_onnx(content: bytes) -> Callable[[Path], None]:
    """The ONNX cache ({tmp}/cache) holding `content` under the name MODEL's colour weights are cached by."""

    def make(tmp: Path) -> None:
        pytest.importorskip("onnxruntime")
        from bdn.models.fast import weights_digest
        from bdn.models.weights import load_weights, shipped_weights

        net, _ = load_weights(shipped_weights(MODEL, 3))
        (tmp / "cache").mkdir()
        (tmp / "cache" / f"{weights_digest(net)}_3.onnx").write_bytes(content)

    return make


def _frames(name: str, count: int) -> Callable[[Path], None]:
    def make(tmp: Path) -> None:
        frames = [Image.fromarray(np.full((48, 48), 60 * k, np.uint8)) for k in range(count)]
        frames[0].save(tmp / "in" / name, save_all=True, append_images=frames[1:])

    return make


def _stale_temporary(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / ".a.png.k3j_x9q2.tmp").write_bytes(b"\0" * 4096)  # what kill -9 mid-write leaves
    (tmp / "out" / ".notes.tmp").write_text("someone else's")


def _no_stale_temporary(tmp: Path, printed: str) -> None:
    assert sorted(p.name for p in (tmp / "out").glob(".*")) == [".notes.tmp"]


def _a_file_in_the_way(tmp: Path) -> None:
    (tmp / "file.txt").write_text("a file, not a folder")


def _damaged_checkpoint(damage: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """A training run's folder ({tmp}/m, its config {tmp}/config.json) whose checkpoint.pt is `damage`d."""
    return lambda tmp: _training_folder(tmp, damage)


def _training_folder(tmp: Path, damage: Callable[[bytes], bytes]) -> None:
    import json

    import torch

    from bdn.io import write_image
    from bdn.tensorfile import write_checkpoint

    (tmp / "clean").mkdir()
    camera = data.camera() / 255.0
    for k in range(3):
        write_image(tmp / "clean" / f"camera{k}.png", camera[k * 100 : k * 100 + 64, 100:164])
    config = {
        "model": {"name": MODEL, "channels": 1},
        "data": {"dataset": str(tmp / "clean"), "patch": 24, "patches_per_epoch": 8, "batch_size": 8},
        "train": {"epochs": 1, "threads": 1},
    }
    (tmp / "config.json").write_text(json.dumps(config))
    (tmp / "m").mkdir()
    write_checkpoint(tmp / "m" / "checkpoint.pt", {"format": 1, "net": {"w": torch.zeros(4096)}})
    whole = (tmp / "m" / "checkpoint.pt").read_bytes()
    (tmp / "m" / "checkpoint.pt").write_bytes(damage(whole))


def _one_line_per_bad_param(tmp: Path, printed: str) -> None:
    assert sum("size must be" in line for line in printed.splitlines()) == 1


def _text_file(tmp: Path) -> None:
    (tmp / "in" / "notes.png").write_text("not an image at all")


def _cut_jpeg(tmp: Path) -> None:
    Image.fromarray(data.astronaut()[:96, :96]).save(tmp / "in" / "cut.jpg", quality=90)
    whole = (tmp / "in" / "cut.jpg").read_bytes()
    (tmp / "in" / "cut.jpg").write_bytes(whole[: len(whole) // 2])


def _tiny(tmp: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp / "in" / "tiny.png")


DENOISE = ("denoise", "{in}", "-o", "{out}")
TRAIN = ("train", "--model-directory", "{tmp}/m", "--pipeline-config", "{tmp}/config.json", "--no-progress")
BOTH = ("a.png", "b.png")
TILE = f"{MODEL}: tile must be a whole number of pixels >= 33"
CASES: tuple[Case, ...] = (
    # --- parameters: checked once, before any image is read
    *(
        Case(f"`--param tile={value}` on a tiled model", "refused before any image is read", (*DENOISE, "-m", MODEL,
             "--param", f"tile={value}"), f"{TILE} (the model's context on both sides and a core), got {shown}")
        for value, shown in (("8", "8"), ("0", "0"), ("-1", "-1"), ("1.5", "1.5"), ("abc", "'abc'"))
    ),
    Case("`-m mwcnn --param tile=-5`", "refused before any image is read",
         (*DENOISE, "-m", "mwcnn", "--param", "tile=-5"), "mwcnn: tile must be a whole number of pixels >= 136"),
    Case("`--param weights=3` (no such file)", "refused before any image is read",
         (*DENOISE, "-m", MODEL, "--param", "weights=3"), f"{MODEL}: weights 3: no such weights file"),
    Case("weights whose `channels` metadata is not a number", "refused before any image is read",
         (*DENOISE, "-m", MODEL, "--param", "weights={tmp}/odd.safetensors"),
         "odd.safetensors: its 'channels' metadata is 'abc', not 1 or 3",
         make=lambda tmp: _weights_with(tmp, "odd.safetensors", lambda state, meta: meta.update(channels="abc"))),
    Case("a bad `--param` value in a batch of several images", "one line naming the parameter, not one per image",
         (*DENOISE, "-m", "median", "--param", "size=4"), "median: size must be an odd integer >= 3, got 4",
         check=_one_line_per_bad_param),
    Case("a parameter the method does not take", "refused before any image is read, naming those it takes",
         (*DENOISE, "-m", "median", "--param", "radius=3"), "median has no parameter radius; it takes sigma, size"),
    Case("`BDN_MAX_PIXELS=0`", "refused before any image is read", DENOISE,
         "BDN_MAX_PIXELS: expected a whole number of pixels >= 1, got '0'", env={"BDN_MAX_PIXELS": "0"}),
    Case("`BDN_MAX_PIXELS=-1`", "refused before any image is read", DENOISE,
         "BDN_MAX_PIXELS: expected a whole number of pixels >= 1, got '-1'", env={"BDN_MAX_PIXELS": "-1"}),
    # --- outputs: checked before any work
    Case("an output folder that cannot be written", "refused before any image is denoised",
         ("denoise", "{in}", "-o", "{tmp}/file.txt/out", "-m", "median"), "file.txt/out: cannot write there",
         make=_a_file_in_the_way),
    Case("`-o` the input itself, without `--overwrite`", "that file fails; the input is never touched",
         ("denoise", "{in}/a.png", "-o", "{in}/a.png", "-m", "median"),
         "a.png: output would overwrite the input; choose another -o"),
    Case("`-o result.xyz` for one input", "refused (no folder named result.xyz is made)",
         ("denoise", "{in}/a.png", "-o", "{tmp}/result.xyz", "-m", "median"),
         "result.xyz: '.xyz' is not an image extension bdn writes",
         check=lambda tmp, printed: not (tmp / "result.xyz").exists() or pytest.fail("made result.xyz")),
    Case("a hidden `.NAME.XXXXXXXX.tmp` left in the output folder by `kill -9` during a write",
         "removed at the start of the next run with a note (other hidden files are left alone)",
         (*DENOISE, "-m", "median"), ".a.png.k3j_x9q2.tmp: removed (4,096 bytes)", code=0, written=BOTH,
         make=_stale_temporary, check=_no_stale_temporary),
    # --- inputs: each bad file one line, the batch goes on
    Case("a multi-page TIFF", "that file fails, naming its frame count (bdn denoises single images)",
         (*DENOISE, "-m", "median"), "pages.tif: holds 3 frames (a multi-page or animated file)",
         written=BOTH, make=_frames("pages.tif", 3)),
    Case("an animated GIF", "that file fails, naming its frame count",
         (*DENOISE, "-m", "median"), "moving.gif: holds 4 frames", written=BOTH, make=_frames("moving.gif", 4)),
    Case("a text file named .png", "that file fails", (*DENOISE, "-m", "median"),
         "notes.png: not an image file", written=BOTH, make=_text_file),
    Case("a truncated JPEG", "that file fails", (*DENOISE, "-m", "median"),
         "cut.jpg: truncated or corrupt image file", written=BOTH, make=_cut_jpeg),
    Case("an image smaller than the method needs", "that file fails", (*DENOISE, "-m", "nlm"),
         "tiny.png: image too small: 4x4 pixels, the minimum is 16", written=BOTH, make=_tiny),
    Case("an input that does not exist", "that input fails", ("denoise", "{in}", "{tmp}/gone.png", "-o", "{out}",
         "-m", "median"), "gone.png: no such file or folder", written=BOTH),
    # --- models and caches
    Case("a model whose output holds NaN", "each file fails naming the file; nothing is written",
         (*DENOISE, "-m", MODEL, "--param", "weights={tmp}/nan.safetensors"),
         f"a.png: {MODEL} gave NaN or infinite values (damaged weights?); nothing written", make=_nan_weights),
    Case("an empty ONNX file in `$BDN_CACHE`", "recorded again with a one-line note; the image is denoised",
         ("denoise", "{in}/a.png", "-o", "{out}", "-m", MODEL, "--param", "engine=onnxruntime"),
         "cached ONNX file unusable (onnxruntime cannot load it", code=0, written=("a.png",),
         make=_cached_onnx(b""), env={"BDN_CACHE": "{tmp}/cache"}),
    Case("a truncated ONNX file in `$BDN_CACHE`", "recorded again with a one-line note; the image is denoised",
         ("denoise", "{in}/a.png", "-o", "{out}", "-m", MODEL, "--param", "engine=onnxruntime"),
         "recorded it again", code=0, written=("a.png",),
         make=_cached_onnx(b"\x08\x07\x12\x07pytorch\x1a\x03"), env={"BDN_CACHE": "{tmp}/cache"}),
    Case("a training checkpoint cut short (a copy killed half way)", "refused: the file, the cause, what to do",
         TRAIN, "checkpoint.pt is damaged (its data breaks off or is corrupt: Invalid argument); delete it to train "
         "from the start", make=_damaged_checkpoint(lambda whole: whole[: len(whole) // 2])),
    Case("a training checkpoint that is not one", "refused: the file, what the reader refused (no cut sentence)",
         TRAIN, "checkpoint.pt is damaged (not a file of plain tensors, numbers and strings; the reader stopped at: "
         "Unsupported operand 110); delete it", make=_damaged_checkpoint(lambda whole: b"not a checkpoint")),
)  # fmt: skip


@pytest.fixture
def folder(tmp_path):
    """{tmp} with in/a.png (colour) and in/b.png (grey), 48x48."""
    (tmp_path / "in").mkdir()
    Image.fromarray(data.astronaut()[200:248, 200:248]).save(tmp_path / "in" / "a.png")
    Image.fromarray(data.camera()[200:248, 200:248]).save(tmp_path / "in" / "b.png")
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[case.bad for case in CASES])
def test_bad_input_gives_one_line(case, folder, capsys, monkeypatch):
    from bdn.cli import main

    fill = {"tmp": folder, "in": folder / "in", "out": folder / "out"}
    if case.make:
        case.make(folder)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value.format(**fill))
    code = main([arg.format(**fill) for arg in case.args])
    printed = "\n".join(capsys.readouterr())
    assert code == case.code, printed
    assert "Traceback" not in printed
    lines = [line for line in printed.splitlines() if case.says in line]
    assert lines, f"{case.says!r} not in:\n{printed}"
    assert all(len(line.replace(str(folder), "{tmp}")) < 250 for line in lines), lines  # short, whatever said it
    out = folder / "out"
    written = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".tif", ".gif")) if out.is_dir() else []
    assert written == sorted(case.written)
    if code and case.args[0] == "denoise" and case.written:  # the batch went on; its summary counts the failure
        assert f"{len(case.written)} denoised" in printed and "1 failed" in printed
    if case.check:
        case.check(folder, printed)


def reliability_markdown() -> str:
    """docs/reliability.md: the table of CASES."""
    rows = [
        "# What bdn does with bad input",
        "",
        "Each row is a case of `tests/test_failures.py`, run through the command line on every test run; this page is",
        "generated from that table (`python tests/test_failures.py`). Every failure is one line naming the file or",
        "the parameter and the cause, with no traceback; a bad file never stops a batch, whose summary lists it;",
        "exit status 1 when anything failed. `{in}` is an input folder, `{out}` the output folder.",
        "",
        "| bad input | what bdn does | command | the line it prints (part) | exit |",
        "| --- | --- | --- | --- | --- |",
    ]
    for case in CASES:
        command = " ".join(["bdn", *case.args]).replace("{tmp}/", "").replace("|", "\\|")
        env = " ".join(f"{name}={value}" for name, value in case.env.items()).replace("{tmp}/", "")
        command = f"{env} {command}" if env else command
        said = case.says.replace("|", "\\|").replace("`", "'")
        rows.append(f"| {case.bad} | {case.does} | `{command}` | `{said}` | {case.code} |")
    return "\n".join(rows) + "\n"


def test_reliability_doc_is_current():
    assert DOC.read_text(encoding="utf-8") == reliability_markdown(), "run: python tests/test_failures.py"


if __name__ == "__main__":
    DOC.write_text(reliability_markdown(), encoding="utf-8")
    print(f"wrote {DOC}", file=sys.stderr)
