"""The leader's record of its followers: durable and applied positions, liveness, ack waits.

Positions come from the follower's acks (``received_seq`` is durable on the follower) and
from the point a stream starts at (the follower proved it holds that prefix). A snapshot
request only pins the log for retention (``pinned_seq``): the follower holds nothing of it
yet, so it counts for no acknowledgement until it streams. Writers wait
here until enough followers cover their seq; a leader that loses its epoch fails every
waiter at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dvecdb_node.replication.acks import acked_by


@dataclass(slots=True)
class FollowerInfo:
    node_id: str
    url: str | None = None
    received_seq: int = 0
    applied_seq: int = 0
    streams: int = 0
    # When (monotonic, as of the lease token it echoed) it last acked at this epoch.
    lease_mark: float = -math.inf
    # The seq of a snapshot being installed: the log after it is kept, nothing is acked.
    pinned_seq: int | None = None
    last_contact: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Waiter:
    seq: int
    needed: int
    future: asyncio.Future[None]


class FollowerTracker:
    """Followers seen at the current epoch (reset when the epoch changes)."""

    def __init__(self, retention_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.retention_seconds = retention_seconds
        self._clock = clock
        self._followers: dict[str, FollowerInfo] = {}
        self._waiters: list[_Waiter] = []

    # -------------------------------------------------------------- positions
    def reset(self) -> None:
        self._followers.clear()

    def get(self, node_id: str) -> FollowerInfo | None:
        return self._followers.get(node_id)

    def all(self) -> list[FollowerInfo]:
        return sorted(self._followers.values(), key=lambda f: f.node_id)

    def known(self) -> int:
        return len(self._followers)

    def _entry(self, node_id: str) -> FollowerInfo:
        entry = self._followers.get(node_id)
        if entry is None:
            entry = self._followers[node_id] = FollowerInfo(node_id)
        entry.last_contact = self._clock()
        return entry

    def stream_opened(self, node_id: str, url: str | None, position: int) -> None:
        """A follower streams from ``position + 1``: it durably holds ``position``."""
        entry = self._entry(node_id)
        entry.streams += 1
        if url:
            entry.url = url
        # The follower may have rewound (truncation or snapshot): its position is now exact.
        entry.pinned_seq = None
        entry.received_seq = position
        entry.applied_seq = min(entry.applied_seq, position)
        self._notify()

    def stream_closed(self, node_id: str) -> None:
        entry = self._followers.get(node_id)
        if entry is not None:
            entry.streams = max(0, entry.streams - 1)
            entry.last_contact = self._clock()

    def pin(self, node_id: str, position: int) -> None:
        """Keep the log after ``position`` for a follower installing a snapshot at it.

        Not an acknowledgement: ``received_seq`` stays what the follower proved it holds.
        """
        self._entry(node_id).pinned_seq = position

    def acked(self, node_id: str, received_seq: int, applied_seq: int) -> None:
        entry = self._entry(node_id)
        entry.received_seq = max(entry.received_seq, received_seq)
        entry.applied_seq = max(entry.applied_seq, min(applied_seq, entry.received_seq))
        self._notify()

    def heard(self, node_id: str, mark: float) -> None:
        """The follower acked, echoing a lease token issued at ``mark``."""
        entry = self._entry(node_id)
        entry.lease_mark = max(entry.lease_mark, mark)

    def lease_marks(self) -> list[float]:
        return [f.lease_mark for f in self._followers.values()]

    def retention_floor(self) -> int | None:
        """Lowest seq a live or recently seen follower still needs (the engine keeps it)."""
        now = self._clock()
        needed = [
            f.received_seq if f.pinned_seq is None else f.pinned_seq
            for f in self._followers.values()
            if f.streams > 0 or now - f.last_contact <= self.retention_seconds
        ]
        return min(needed) if needed else None

    # ------------------------------------------------------------------ waits
    def count_acked(self, seq: int) -> int:
        return acked_by((f.received_seq for f in self._followers.values()), seq)

    async def wait_acked(self, seq: int, needed: int, within: float) -> bool:
        """True once ``needed`` followers durably hold ``seq``; False after ``within`` seconds."""
        if self.count_acked(seq) >= needed:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(seq, needed, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(within):
                await asyncio.shield(future)
        except TimeoutError:
            return self.count_acked(seq) >= needed
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        return True

    def _notify(self) -> None:
        if not self._waiters:
            return
        positions = [f.received_seq for f in self._followers.values()]
        for waiter in list(self._waiters):
            if not waiter.future.done() and acked_by(positions, waiter.seq) >= waiter.needed:
                waiter.future.set_result(None)
                self._waiters.remove(waiter)

    def fail_waiters(self, error: BaseException) -> None:
        """Fail every pending ack wait (the leader lost its epoch)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)
