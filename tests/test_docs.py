"""The Examples of the public API's docstrings run as doctests, so an example that goes stale fails the suite.

Exactly these objects: the functions a user meets first (README.md, `help(bdn)`) and the DIP and BIQAN entry points.
Examples that write files use paths relative to the current folder; each runs in a fresh temporary folder here.
"""

from __future__ import annotations

import doctest
import importlib

import pytest

PUBLIC = [
    "bdn:denoise",
    "bdn:read_image",
    "bdn:write_image",
    "bdn:add_noise",
    "bdn:estimate_sigma",
    "bdn:psnr",
    "bdn:ssim",
    "bdn:load_model",
    "bdn.models:load_model",
    "bdn.dip.denoise:dip",
    "bdn.dip.fit:fit_dip",
    "bdn.dip.run:run_folder",
    "biqan.model:load_biqan",
    "biqan.select:score_run",
    "biqan.select:select_run",
    "biqan.judge:BiqanJudge",
    "biqan.api:score",
    "biqan.api:Scorer",
    "biqan.api:score_run",
]


def _object(target: str) -> object:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("target", PUBLIC)
def test_docstring_examples(target: str, tmp_path, monkeypatch) -> None:
    obj = _object(target)
    # The object's own docstring only (a class's methods have theirs checked elsewhere), with nothing pre-imported.
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, target, globs={}) if t.examples]
    assert tests, f"{target}: its docstring has no Examples"
    monkeypatch.chdir(tmp_path)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{target}: {result.failed} of {result.attempted} examples failed (output above)"


def test_docstrings_have_numpydoc_sections() -> None:
    """Each of them says what it takes and gives in numpydoc's sections."""
    for target in PUBLIC:
        doc = _object(target).__doc__ or ""
        for section in ("Parameters\n", "Examples\n"):
            assert section in doc, f"{target}: no {section.strip()} section"
        if not target.endswith(("BiqanJudge", "Scorer")):  # classes: no Returns
            assert "Returns\n" in doc, f"{target}: no Returns section"
