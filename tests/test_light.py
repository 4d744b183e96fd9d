"""A light start (issue 18, item 5): `import bdn` and every `--help` load no torch (and `import bdn` no
scipy.stats); the constants the commands' options are built from, kept torch-free, agree with the library's."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bdn.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "scipy.stats", "bm3d", "streamlit", "pandas", "matplotlib")


def _loaded(code: str) -> list[str]:
    """The heavy modules loaded after running `code` in a fresh interpreter (SystemExit from --help is fine)."""
    script = (
        "import json, sys\n"
        f"try:\n    exec({code!r})\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_import_bdn_loads_no_torch_nor_scipy_stats():
    assert _loaded("import bdn") == []


def test_bdn_run_help_loads_no_torch():
    assert _loaded("from bdn.cli import main; main(['run', '--help'])") == []


def test_every_help_loads_no_torch():
    calls = [[]] + [[name] for name in COMMANDS]
    code = (
        "import contextlib, io\nfrom bdn.cli import main\n"
        f"for argv in {calls!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n            main(argv + ['--help'])\n        except SystemExit:\n            pass\n"
    )
    loaded = _loaded(code)
    assert "torch" not in loaded and "torchvision" not in loaded


@pytest.mark.parametrize("script", ["run_BDN.py", "generator_dataset.py", "train_BIQAN.py", "test_BIQAN.py"])
def test_seed_script_help_loads_no_torch(script):
    code = f"import runpy, sys\nsys.argv = [{script!r}, '--help']\nrunpy.run_path({script!r}, run_name='__main__')"
    assert "torch" not in _loaded(code)


def test_light_constants_agree_with_the_library():
    """The values the options are built from without torch are the library's own."""
    import bdn.cli.export as export_cli
    import biqan.cli.select as select_cli
    import biqan.cli.train as train_cli
    from bdn import export
    from bdn.dip import config, nets, precision
    from biqan import model, select, train

    assert tuple(nets.NET_TYPES) == config.NET_TYPE_NAMES
    assert config.PRECISIONS == precision.PRECISIONS
    assert (export_cli.WEIGHTS, export_cli.DEFAULT_OPSET) == (export.WEIGHTS, export.DEFAULT_OPSET)
    assert (select_cli.START_INDEX, select_cli.SEED_SMOOTH) == (select.START_INDEX, select.SEED_SMOOTH)
    assert (train_cli.ARCHES, train_cli.PROTOCOLS) == (model.ARCHES, model.PROTOCOLS)
    options = train.TrainOptions(score_paths=(), output_path="")
    library = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    assert {k: v for k, v in library.items() if k not in ("score_paths", "output_path")} == train_cli.DEFAULTS


def test_bdn_dip_names_still_import():
    import bdn.dip

    assert set(bdn.dip.__all__) <= set(dir(bdn.dip))
    for name in bdn.dip.__all__:
        assert getattr(bdn.dip, name) is not None
    with pytest.raises(AttributeError):
        bdn.dip.no_such_name  # noqa: B018
