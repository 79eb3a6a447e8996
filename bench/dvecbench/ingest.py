"""Bulk ingest timed until the last vector is searchable, for any server.

Bodies are encoded before the clock starts. The clock stops when the last request is
acknowledged *and* a probe shows the last vectors searchable: d-vecDB applies a write before
acknowledging it (the probe passes at once), Chroma may index after it acknowledges.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence

from dvecbench.httpc import Client, send_all


@dataclasses.dataclass(frozen=True)
class IngestResult:
    vectors: int
    requests: int
    acked_seconds: float
    searchable_seconds: float

    @property
    def rate(self) -> float:
        """Vectors per second until searchable: the figure compared across engines."""
        return self.vectors / self.searchable_seconds

    @property
    def ack_rate(self) -> float:
        return self.vectors / self.acked_seconds


def timed(
    base_url: str,
    bodies: Sequence[bytes],
    send: Callable[[Client, bytes], None],
    *,
    vectors: int,
    concurrency: int,
    searchable: Callable[[Client], bool],
    timeout: float = 600.0,
) -> IngestResult:
    started = time.perf_counter()
    acked = send_all(base_url, bodies, send, concurrency=concurrency)
    probe = Client(base_url)
    try:
        while not searchable(probe):
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"last vectors not searchable after {timeout:.0f}s")
            time.sleep(0.01)
    finally:
        probe.close()
    return IngestResult(
        vectors=vectors,
        requests=len(bodies),
        acked_seconds=acked,
        searchable_seconds=time.perf_counter() - started,
    )


@dataclasses.dataclass
class AckLog:
    """When each write's seq was acknowledged (for replication lag)."""

    acks: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def record(self, seq: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.acks.append((seq, now))


def paced(
    bodies: Sequence[bytes],
    send: Callable[[bytes], None],
    *,
    per_second: float,
) -> float:
    """Send bodies one after another at most `per_second` requests a second; returns seconds."""
    interval = 1.0 / per_second
    started = time.monotonic()
    for i, body in enumerate(bodies):
        due = started + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        send(body)
    return time.monotonic() - started
