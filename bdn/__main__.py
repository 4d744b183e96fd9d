"""`python -m bdn`: the `bdn` command."""

import sys

from bdn.cli import main

sys.exit(main())
