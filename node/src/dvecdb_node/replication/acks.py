"""Pure rules for write acknowledgements and replication lag (no I/O, no clocks of their own).

``ack`` levels count followers whose *durable* position (``received_seq``) covers a write:
``leader`` needs none, ``one`` needs one, ``quorum`` needs enough that, with the leader, a
majority of the members hold it. A standalone node without followers has no cluster, so every
level is met by its own durability; any other leader needs real followers (a leader that lost
its followers must not acknowledge ``one``: that is what fences a stale leader).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

ACK_LEVELS = ("leader", "one", "quorum")


def member_count(*, cluster_size: int, known_followers: int, standalone: bool) -> int:
    """How many members the majority is taken over.

    The configured size wins when it is larger than what the leader has seen; a node that is
    not standalone counts at least two members (itself and the follower it must reach).
    """
    floor = 1 if standalone else 2
    return max(cluster_size, 1 + known_followers, floor)


def followers_needed(level: str, members: int) -> int:
    """Followers that must hold a write durably before it is acknowledged at ``level``."""
    if level == "leader" or members <= 1:
        return 0
    if level == "one":
        return 1
    if level == "quorum":
        return members // 2
    raise ValueError(f"unknown ack level {level!r}")


def acked_by(positions: Iterable[int], seq: int) -> int:
    """How many followers' durable positions cover ``seq``."""
    return sum(1 for position in positions if position >= seq)


def lag_seq(leader_last_seq: int, follower_applied_seq: int) -> int:
    return max(0, leader_last_seq - follower_applied_seq)


class WriteClock:
    """When each recent seq was written, to turn a follower's position into seconds of lag.

    A follower's ``lag_seconds`` is how long ago the oldest write it has not applied was made
    (0 when it is caught up). Entries a follower no longer needs are trimmed; at most
    ``capacity`` are kept, so a very far-behind follower sees the oldest time still held.
    """

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._seqs: list[int] = []
        self._times: list[float] = []
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._seqs)

    def record(self, seq: int, now: float) -> None:
        if self._seqs and seq <= self._seqs[-1]:
            index = bisect.bisect_left(self._seqs, seq)
            self._seqs.insert(index, seq)
            self._times.insert(index, now)
        else:
            self._seqs.append(seq)
            self._times.append(now)
        excess = len(self._seqs) - self._capacity
        if excess > 0:
            # Drop a tenth at once so that a full clock does not shift its lists per write.
            cut = excess + self._capacity // 10
            del self._seqs[:cut]
            del self._times[:cut]

    def trim_through(self, seq: int) -> None:
        """Forget entries at or below ``seq`` (every follower has applied them)."""
        cut = bisect.bisect_right(self._seqs, seq)
        if cut:
            del self._seqs[:cut]
            del self._times[:cut]

    def lag_seconds(self, applied_seq: int, leader_last_seq: int, now: float) -> float:
        if applied_seq >= leader_last_seq:
            return 0.0
        index = bisect.bisect_right(self._seqs, applied_seq)
        if index >= len(self._seqs):
            return 0.0
        return max(0.0, now - self._times[index])

    def clear(self) -> None:
        self._seqs.clear()
        self._times.clear()
