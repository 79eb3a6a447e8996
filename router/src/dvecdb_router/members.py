"""Which member of a shard serves a request: pure choices over what the router last saw.

Eventual reads go to the least-loaded ready member, weighing requests in flight by recent
latency, and skip members whose circuit is open (three failures in a row open it for
``OPEN_SECONDS``; then one request may try again). Strong and quorum reads, and writes, go to
the leader: the ready member reporting ``leader`` at the highest epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FAILURES_TO_OPEN = 3
OPEN_SECONDS = 5.0
LATENCY_WEIGHT = 0.2


@dataclass(slots=True)
class Member:
    url: str
    role: str = "unknown"  # as its /v1/status last said: leader, follower, standby
    epoch: int = 0
    ready: bool = False  # its /readyz last answered 200
    in_flight: int = 0
    latency: float = 0.0  # moving average of answered requests, seconds
    failures: int = 0  # in a row
    open_until: float = 0.0  # circuit open until this monotonic time

    def closed(self, now: float) -> bool:
        return self.open_until <= now

    def answered(self, seconds: float) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.latency = (
            seconds
            if not self.latency
            else (1 - LATENCY_WEIGHT) * self.latency + LATENCY_WEIGHT * seconds
        )

    def failed(self, now: float) -> bool:
        """Count a failure; True when it opened the circuit."""
        self.failures += 1
        if self.failures >= FAILURES_TO_OPEN and self.closed(now):
            self.open_until = now + OPEN_SECONDS
            return True
        return False


def pick_reader(
    members: Sequence[Member], now: float, exclude: frozenset[str] = frozenset()
) -> Member | None:
    """The member an eventual read goes to, or None if no member may serve it."""
    candidates = [m for m in members if m.ready and m.closed(now) and m.url not in exclude]
    if not candidates:
        return None
    return min(candidates, key=lambda m: ((m.in_flight + 1) * max(m.latency, 1e-4), m.url))


def leader_of(members: Sequence[Member], now: float) -> Member | None:
    """The shard's leader as last seen, if it may be sent to (its circuit is closed)."""
    leaders = [m for m in members if m.role == "leader" and m.closed(now)]
    if not leaders:
        return None
    return max(leaders, key=lambda m: m.epoch)


def open_circuits(members: Sequence[Member], now: float) -> int:
    return sum(not m.closed(now) for m in members)
