"""Where resharding's movers read the log from: the engine keeps the log after it.

A mover exports a slot set at seq ``s`` and then reads the slot log from ``s+1`` on, for as
long as the copy takes. Checkpoints drop log segments older than what someone needs
(``Engine.retention_floors``); this floor is the lowest seq a mover asked for (or an export
cut plus one) within the last ``hold_seconds``, so a long copy does not end in 410
``snapshot_required`` and start over.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LogReaders:
    """Recent read positions of the slot log (monotonic clock)."""

    def __init__(self, hold_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.hold_seconds = hold_seconds
        self._clock = clock
        self._seen: deque[tuple[float, int]] = deque()

    def note(self, seq: int) -> None:
        """A mover reads (or will read) the log from ``seq``."""
        now = self._clock()
        self._drop_old(now)
        self._seen.append((now, seq))

    def floor(self) -> int | None:
        """The lowest seq noted within the hold (None: no mover read lately)."""
        self._drop_old(self._clock())
        return min((seq for _, seq in self._seen), default=None)

    def _drop_old(self, now: float) -> None:
        seen = self._seen
        while seen and now - seen[0][0] > self.hold_seconds:
            seen.popleft()
