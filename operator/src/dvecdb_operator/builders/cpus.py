"""How many cores a member's CPU limit gives it: the node's `DVECDB_SEARCH_THREADS`.

The node splits a search over `min(search_threads, usable cores)` and reads a CPU quota itself
only on cgroup v2 (`cpu.max`); on a cgroup v1 host it sees every core of the machine and
over-splits, each slice then waiting for quota. The operator knows the limit from the spec, so
it passes it down. Only the limit counts: the quota is what throttles, a request only weighs
the scheduler's placement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from dvecdb_operator.quantity import parse_quantity

# The bounds of the node's `search_threads` setting (dvecdb_node.settings).
MIN_SEARCH_THREADS = 1
MAX_SEARCH_THREADS = 64


def cores_of_limit(cpu: object) -> int | None:
    """Whole cores a CPU limit lets the node keep busy: rounded up, within the node's bounds.

    Rounding up matches the node's own reading of `cpu.max` (a 2.5-core quota runs three
    threads part of the time). A zero limit sets no quota at all, so it gives no number (None).
    Raises `InvalidQuantityError` for what is not a quantity; `parse_spec` already refuses
    those, so a validated spec never raises here.
    """
    cores = parse_quantity(cpu)
    if cores <= 0:
        return None
    if cores >= MAX_SEARCH_THREADS:  # compared before `ceil`: "1e18" stays cheap
        return MAX_SEARCH_THREADS
    return max(MIN_SEARCH_THREADS, math.ceil(cores))


def search_threads(resources: Mapping[str, Any]) -> int | None:
    """The node's search threads from a container's `resources`, or None to keep its default."""
    limits = resources.get("limits") or {}
    cpu = limits.get("cpu")
    return None if cpu is None else cores_of_limit(cpu)
