"""test_BIQAN.py: picking DIP iterates with BIQAN (the seed's script, a thin front end over bdn).

Not yet available: it lands with issue 4. Until then it says so and exits non-zero rather than pretend.
"""

import sys

if __name__ == "__main__":
    sys.exit("test_BIQAN.py: not yet available in this version of bdn (picking DIP iterates with BIQAN; issue 4)")
