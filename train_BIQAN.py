"""train_BIQAN.py: training of the BIQAN quality network (the seed's script, a thin front end over bdn).

Not yet available: it lands with issue 4. Until then it says so and exits non-zero rather than pretend.
"""

import sys

if __name__ == "__main__":
    sys.exit(
        "train_BIQAN.py: not yet available in this version of bdn (training of the BIQAN quality network; issue 4)"
    )
