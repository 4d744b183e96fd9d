"""Deep Image Prior: the generators (`nets`), the fitting loop (`fit`), the stopping rules (`judges`), learned
initialisations (`init`), the folder runner (`run`, run_BDN.py) and DIP as a `bdn.denoise()` method (`denoise`).

Needs torch; `import bdn` alone does not import this package, and importing it imports torch only when a name
that needs it is first used.

    from bdn.dip import DipConfig, fit_dip, make_judge
    result = fit_dip(noisy, clean, DipConfig(net_type="skip_light", num_iter=2000), device="auto",
                     judge=make_judge("wmv"))
"""

import importlib

# name -> the submodule that defines it. Loaded on first use (PEP 562), so that reading a DipConfig default or a run
# folder (bdn run --help, bdn label) imports no torch; `from bdn.dip import fit_dip` works as before.
_WHERE = {
    "pick_device": "bdn.devices",
    "DipConfig": "bdn.dip.config",
    "DipResult": "bdn.dip.config",
    "DipFrame": "bdn.dip.fit",
    "fit_dip": "bdn.dip.fit",
    **dict.fromkeys(
        ("JUDGES", "EMVJudge", "Judge", "NoiseJudge", "NoneJudge", "OracleJudge", "WMVJudge", "make_judge"),
        "bdn.dip.judges",
    ),
    **dict.fromkeys(
        (
            "NET_TYPES",
            "NetSpec",
            "SkipNet",
            "build_net",
            "check_size",
            "count_parameters",
            "min_size",
            "net_spec",
            "smallest_side",
        ),
        "bdn.dip.nets",
    ),
}


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bdn.dip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


__all__ = [
    "JUDGES",
    "NET_TYPES",
    "DipConfig",
    "DipFrame",
    "DipResult",
    "EMVJudge",
    "Judge",
    "NetSpec",
    "NoiseJudge",
    "NoneJudge",
    "OracleJudge",
    "SkipNet",
    "WMVJudge",
    "build_net",
    "check_size",
    "count_parameters",
    "fit_dip",
    "make_judge",
    "min_size",
    "net_spec",
    "pick_device",
    "smallest_side",
]
