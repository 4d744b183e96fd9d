"""`python -m bdn.cli`: the `bdn` command."""

import sys

from bdn.cli import main

sys.exit(main())
