"""Deep Image Prior: the generators (`nets`), the fitting loop (`fit`), the stopping rules (`judges`), learned
initialisations (`init`), the folder runner (`run`, run_BDN.py) and DIP as a `bdn.denoise()` method (`denoise`).

Needs torch; `import bdn` alone does not import this package.

    from bdn.dip import DipConfig, fit_dip, make_judge
    result = fit_dip(noisy, clean, DipConfig(net_type="skip_light", num_iter=2000), device="auto",
                     judge=make_judge("wmv"))
"""

from bdn.devices import pick_device
from bdn.dip.config import DipConfig, DipResult
from bdn.dip.fit import DipFrame, fit_dip
from bdn.dip.judges import JUDGES, EMVJudge, Judge, NoiseJudge, NoneJudge, OracleJudge, WMVJudge, make_judge
from bdn.dip.nets import (
    NET_TYPES,
    NetSpec,
    SkipNet,
    build_net,
    check_size,
    count_parameters,
    min_size,
    net_spec,
    smallest_side,
)

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
