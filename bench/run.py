"""`make bench` entry point: `python bench/run.py [--quick]` (see `--help`).

The harness is the `dvecbench` package beside this file (the development project installs it
too, so tests import it like any package).
"""

import sys

from dvecbench.main import main

if __name__ == "__main__":
    sys.exit(main())
