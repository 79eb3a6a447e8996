"""`make bench` entry point: `python bench/run.py [--quick]` (see `--help`).

The harness lives in the `dvecbench` package beside this file; running this file puts that
folder first on `sys.path` (never the repo root, whose `operator/` folder would shadow the
standard library's `operator`).
"""

import sys

from dvecbench.main import main

if __name__ == "__main__":
    sys.exit(main())
