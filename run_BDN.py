"""run_BDN.py: Deep Image Prior over a folder of noisy images (the seed's script, a thin front end over bdn).

Not yet available: it lands with issue 3. Until then it says so and exits non-zero rather than pretend.
"""

import sys

if __name__ == "__main__":
    sys.exit(
        "run_BDN.py: not yet available in this version of bdn (Deep Image Prior over a folder of noisy images; issue 3)"
    )
