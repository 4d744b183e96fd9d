"""The front door: `bdn denoise` on files, folders and globs; bad input gives one line and a non-zero exit."""

import ast
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

import bdn
from bdn.cli import COMMANDS, build_parser, main, parse_params, run_script
from bdn.errors import BdnError


@pytest.fixture
def photos(tmp_path):
    """A folder with an 8-bit colour PNG, a 16-bit grey TIFF, a text file named .png and a truncated JPEG."""
    folder = tmp_path / "in"
    folder.mkdir()
    colour = data.astronaut()[100:196, 100:196]
    Image.fromarray(colour).save(folder / "colour.png")
    grey16 = data.camera()[200:296, 200:296].astype(np.uint16) * 257
    cv2.imwrite(str(folder / "grey16.tif"), grey16)
    (folder / "notes.png").write_text("not an image at all")
    Image.fromarray(colour).save(folder / "cut.jpg", quality=90)
    payload = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(payload[: len(payload) // 2])
    return folder


def test_batch_goes_past_bad_files_and_names_them(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["denoise", str(photos), "-o", str(out), "--method", "median"])
    captured = capsys.readouterr()
    assert code == 1
    names = ["colour.png", "colour.png.json", "grey16.tif", "grey16.tif.json"]  # each output and its record
    assert sorted(p.name for p in out.iterdir()) == names
    failed = [line for line in captured.err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2
    assert any("notes.png" in line for line in failed)
    assert any("cut.jpg" in line for line in failed)
    assert "Traceback" not in captured.err
    assert "2 denoised, 0 skipped, 2 failed" in captured.out


def test_output_keeps_bit_depth_and_mode(photos, tmp_path):
    out = tmp_path / "out"
    main(["denoise", str(photos / "grey16.tif"), str(photos / "colour.png"), "-o", str(out), "-m", "median"])
    grey = cv2.imread(str(out / "grey16.tif"), cv2.IMREAD_UNCHANGED)
    assert grey.dtype == np.uint16 and grey.shape == (96, 96)
    colour = cv2.imread(str(out / "colour.png"), cv2.IMREAD_UNCHANGED)
    assert colour.dtype == np.uint8 and colour.shape == (96, 96, 3)


def test_single_input_to_a_file_name_and_resume(photos, tmp_path, capsys):
    target = tmp_path / "clean.png"
    assert main(["denoise", str(photos / "colour.png"), "-o", str(target), "-m", "median"]) == 0
    first = target.read_bytes()
    assert main(["denoise", str(photos / "colour.png"), "-o", str(target), "-m", "adaptive_wiener"]) == 0
    assert "exists, skipped" in capsys.readouterr().out
    assert target.read_bytes() == first  # a finished result is never redone unasked
    args = ["denoise", str(photos / "colour.png"), "-o", str(target), "-m", "adaptive_wiener", "--overwrite"]
    assert main(args) == 0
    assert target.read_bytes() != first


def test_glob_pattern(photos, tmp_path):
    out = tmp_path / "out"
    assert main(["denoise", str(photos / "*.png"), "-o", str(out), "-m", "median"]) == 1  # notes.png fails
    assert sorted(p.name for p in out.iterdir()) == ["colour.png", "colour.png.json"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["denoise", "missing.png", "-o", "out", "-m", "median"], "missing.png: no such file or folder"),
        (["denoise", "{img}", "-o", "out", "-m", "nope"], "unknown method 'nope'"),
        (["denoise", "{img}", "-o", "out", "-m", "median", "--param", "radius=3"], "median has no parameter radius"),
        (["denoise", "{img}", "-o", "out", "-m", "median", "--param", "size"], "--param takes NAME=VALUE"),
        (["denoise", "{img}", "-o", "out", "-m", "median", "--sigma", "-5"], "sigma"),
        (["denoise", "{tiny}", "-o", "out", "-m", "bm3d"], "tiny.png: image too small: 4x4 pixels, the minimum is 16"),
    ],
)
def test_bad_input_gives_one_line(args, message, photos, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "tiny.png")
    args = [a.format(img=photos / "colour.png", tiny=tmp_path / "tiny.png") for a in args]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_parse_params_types():
    assert parse_params(["size=5", "h=0.5", "profile=lc"]) == {"size": 5, "h": 0.5, "profile": "lc"}
    with pytest.raises(BdnError):
        parse_params(["=3"])


def test_named_path_splits_at_the_first_equals_sign():
    import argparse

    from bdn.cli.options import named_path

    assert named_path(" CC = a/b=c ") == ("CC", Path("a/b=c"))
    for bad in ("CC", "=a", "CC=", " = "):
        with pytest.raises(argparse.ArgumentTypeError, match="expected NAME=PATH"):
            named_path(bad)


def test_console_entry_point_runs_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bdn.cli", "denoise", str(tmp_path / "none.png"), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "none.png" in result.stderr


def test_methods_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("nlm", "median", "adaptive_median", "adaptive_wiener", "bm3d"):
        assert name in out


# --- one front door: every command, one option style, one exit rule, bdn below biqan ----------------------------


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith(f"usage: bdn {command} ")


def test_version_and_bare_bdn(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"bdn {bdn.__version__}"
    assert main([]) == 1 and capsys.readouterr().err.startswith("bdn: error: ")
    assert main(["nope"]) == 1 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_the_seeds_underscore_spellings_are_the_same_options():
    dashed = build_parser("run").parse_args(["run", "--output-path", "o", "--num-iter", "7", "--no-progress"])
    seed = build_parser("run").parse_args(["run", "--output_path", "o", "--num_iter=7", "--no_progress"])
    assert vars(dashed) == vars(seed) and seed.num_iter == 7 and seed.progress is False
    # A value that looks like an option is left alone, and so is a spelling that names no option.
    args = build_parser("judge").parse_args(["judge", "--run_path", "r", "--judge", "wmv", "--option", "a_b=1"])
    assert args.run_path == "r" and args.option == [("a_b", 1)]
    with pytest.raises(BdnError, match="unrecognized arguments: --no_such_option"):
        build_parser("judge").parse_args(["judge", "--run-path", "r", "--judge", "wmv", "--no_such_option"])


def test_a_seed_script_and_its_command_are_one_thing(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["--dataset_real_path", str(empty), "--output_path", str(tmp_path / "out")]
    assert run_script("run", "run_BDN.py", argv) == 1
    seed_line = capsys.readouterr().err
    assert main(["run", *argv]) == 1
    bdn_line = capsys.readouterr().err
    assert seed_line.startswith("run_BDN.py: error: ") and bdn_line.startswith("bdn run: error: ")
    assert seed_line.split(": error: ")[1] == bdn_line.split(": error: ")[1]


def test_python_m_bdn_is_the_bdn_command():
    result = subprocess.run([sys.executable, "-m", "bdn", "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"bdn {bdn.__version__}"
    worker = subprocess.run([sys.executable, "-m", "bdn.bench"], capture_output=True, text=True, timeout=60)
    assert worker.returncode == 1 and "run `bdn bench`" in worker.stderr and "Traceback" not in worker.stderr


def test_bdn_never_imports_biqan():
    """biqan builds on bdn; bdn names biqan's judge and commands by import path only."""
    package = Path(bdn.__file__).parent
    found = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            found += [f"{path.name}: {name}" for name in names if name.split(".")[0] == "biqan"]
    assert found == []


def test_library_modules_leave_torch_threads_alone():
    package = Path(bdn.__file__).parent
    setting = [
        path.relative_to(package.parent).as_posix()
        for path in [*package.rglob("*.py"), *(package.parent / "biqan").rglob("*.py")]
        if "set_num_threads(" in path.read_text(encoding="utf-8")
    ]
    # The command layer sets them; dip(threads=) sets and restores them around one call.
    assert sorted(setting) == ["bdn/cli/options.py", "bdn/dip/denoise.py"]
