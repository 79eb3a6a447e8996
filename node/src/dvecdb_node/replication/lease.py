"""The leader lease (DESIGN.md "Leader lease"): pure rules, times on this process's clock.

A leader may acknowledge writes and serve ``strong``/``quorum`` reads only while it has heard,
within ``lease_seconds``, from a majority of members (itself counted) or from the operator
confirming its epoch. Otherwise a new leader may already have been chosen without it.

A message only proves what was true when the leader *sent* the thing it answers, not when
the answer arrived (a frozen leader finds old answers queued when it thaws). So the leader
hands out lease tokens, its own clock in milliseconds: in every stream heartbeat, and as
``lease_token`` in every ``/v1/status``. A follower's ack echoes the last token it received;
the operator's ``/v1/admin/confirm`` and ``/v1/admin/promote`` send the token of the status
they based their decision on. The lease then runs from the token's time, never from arrival
(a promote that sat in a frozen member's socket until the operator had moved to a newer epoch
makes a leader whose lease has already lapsed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from dvecdb_node.role import lease_token

token_now = lease_token


def token_time(token: int | None, now: float) -> float:
    """When a token was issued (``now`` when absent); never later than ``now``.

    A token from the future was not issued by this clock (another boot): it proves no more
    than the message's arrival.
    """
    if token is None:
        return now
    return min(token / 1000.0, now)


def majority_lease(marks: Iterable[float], needed: int, lease_seconds: float) -> float:
    """Until when the followers' acks keep the lease: ``needed`` of them (with the leader, a
    majority) echoed tokens; the lease runs from the ``needed``-th most recent one.

    ``inf`` when no follower is needed (a single-member group), ``-inf`` when too few acked.
    """
    if needed <= 0:
        return math.inf
    recent = sorted(marks, reverse=True)
    if len(recent) < needed:
        return -math.inf
    return recent[needed - 1] + lease_seconds


def remaining(until: float, now: float) -> float | None:
    """Seconds the lease still runs (0 once lapsed; None when it never lapses)."""
    if until == math.inf:
        return None
    return max(0.0, until - now)
