"""Replication figures: ingest with a follower (`ack=one`) and the follower's lag.

Lag is measured from outside, not taken from the leader's own report: while the leader ingests
at a fixed pace with `ack=leader`, a poller reads the follower's `applied_seq` every few
milliseconds; a write's lag is the time from its acknowledgement on the leader to the first
poll that shows the follower applied it (zero if it was there already). The poll interval is
the resolution and is reported with the figure.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Sequence

from dvecbench.httpc import Client


def follow(follower: Client, *, leader_url: str, epoch: int, token: str) -> None:
    """Point a standby node at the leader (the operator's job in a cluster)."""
    follower.json(
        "POST",
        "/v1/admin/follow",
        {"leader": leader_url, "epoch": epoch},
        headers={"Authorization": f"Bearer {token}"},
    )


def wait_following(follower: Client, *, applied_at_least: int, timeout: float) -> float:
    """Seconds until the follower reports role follower and has applied the given seq."""
    started = time.monotonic()
    while True:
        body = follower.json("GET", "/v1/status")
        if body.get("role") == "follower" and int(body.get("applied_seq", 0)) >= applied_at_least:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"follower not caught up after {timeout:.0f}s: {body}")
        time.sleep(0.05)


@dataclasses.dataclass
class AppliedPoller:
    """Samples (time, applied_seq) of one node until stopped."""

    base_url: str
    interval: float = 0.005
    samples: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        client = Client(self.base_url)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                applied = int(client.json("GET", "/v1/status")["applied_seq"])
                received = time.monotonic()
                # The server read applied_seq somewhere in between; take the middle.
                self.samples.append(((sent + received) / 2, applied))
                self._stop.wait(self.interval)
        finally:
            client.close()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lag-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def lags(acks: Sequence[tuple[int, float]], samples: Sequence[tuple[float, int]]) -> list[float]:
    """Seconds from each ack to the first sample at or past its seq (acks never seen: skipped).

    `samples` must be in time order; applied_seq never decreases, so a binary search on it
    finds the first sample that covers a seq.
    """
    applied = [seq for _, seq in samples]
    out: list[float] = []
    for seq, acked_at in acks:
        i = bisect.bisect_left(applied, seq)
        if i == len(samples):
            continue
        out.append(max(0.0, samples[i][0] - acked_at))
    return out
