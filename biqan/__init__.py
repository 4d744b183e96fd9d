"""biqan: the blind image quality network that judges Deep Image Prior iterates.

    import biqan
    biqan.score(image)           # a no-reference quality score in [1, 10] (higher: judged cleaner)
    biqan.Scorer()(image)        # the same with the network loaded once
    biqan.score_run("runs/cc")   # every snapshot of a run folder, scored beside its PSNR

Modules: `labels` (a run folder's PSNRs -> 10-bin score labels), `model` (the network, its files), `train`
(training), `select` (scoring a run and choosing iterates), `judge` (BIQAN as a DIP judge), `api` (the calls above),
and `cli` (`bdn label`, `bdn train-biqan`, `bdn select`). biqan builds on bdn; bdn never imports it.
"""

__all__ = ["Scorer", "score", "score_run"]


def __getattr__(name: str):
    # Loaded when first asked for, so `import biqan` (and the `bdn` commands that name biqan's) stays light.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("biqan.api"), name)
    raise AttributeError(f"module 'biqan' has no attribute {name!r}")
