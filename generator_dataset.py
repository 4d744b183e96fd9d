"""generator_dataset.py: score files from run_BDN logs (the seed's script, a thin front end over bdn).

Not yet available: it lands with issue 4. Until then it says so and exits non-zero rather than pretend.
"""

import sys

if __name__ == "__main__":
    sys.exit("generator_dataset.py: not yet available in this version of bdn (score files from run_BDN logs; issue 4)")
