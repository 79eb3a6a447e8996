"""``demo`` is an application run from the checkout (``python -m demo``), not an installed
package: make it importable here. The checkout goes last on ``sys.path`` so that its
``operator/`` folder can never shadow the standard library's ``operator`` module."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[3])
if REPO not in sys.path:
    sys.path.append(REPO)
