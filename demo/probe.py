"""A writer that keeps writing through the read-write Service while the leader dies.

Like a client without kube-proxy, each attempt resolves the ``<name>-rw`` Service's
EndpointSlice to the ready pod address and writes one vector there with ``ack=one``, never
following a ``not_leader`` redirect: an acknowledgement therefore comes from whichever member
the Service routes to. Every acknowledged write is remembered so that the demo can check
afterwards that none was lost, and the first acknowledgement after the kill gives the
measured failover time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from demo.kube import DemoError
from dvecdb_client import NodeClient, NodeError

NODE_PORT = 8080


@dataclass(frozen=True)
class Ack:
    """One acknowledged write: what, when it was sent and answered, by which address."""

    item_id: str
    vector: tuple[float, ...]
    sent: float
    acked: float
    address: str
    seq: int


@dataclass
class ProbeWriter:
    resolve: Callable[[], list[str]]
    collection: str
    dimension: int
    api_key: str | None = None
    ca: bytes | None = None  # the cluster's CA: https, verified (None: plain HTTP)
    interval: float = 0.05
    timeout: float = 1.0
    acks: list[Ack] = field(default_factory=list)
    failures: int = 0
    last_error: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="probe-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def snapshot(self) -> list[Ack]:
        with self._lock:
            return list(self.acks)

    def first_ack_sent_after(self, moment: float) -> Ack | None:
        """The first acknowledged write whose request left after ``moment``."""
        return next((a for a in self.snapshot() if a.sent >= moment), None)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        clients: dict[str, NodeClient] = {}
        rng = np.random.default_rng(7)
        number = 0
        try:
            while not self._stop.is_set():
                vector: npt.NDArray[np.float32] = rng.standard_normal(self.dimension).astype(
                    np.float32
                )
                item_id = f"probe-{number:06d}"
                try:
                    addresses = self.resolve()
                except DemoError as err:
                    addresses, self.last_error = [], str(err)
                if len(addresses) != 1:
                    self._failed(f"read-write Service has {len(addresses)} ready endpoints")
                    await asyncio.sleep(self.interval)
                    continue
                address = addresses[0]
                client = clients.get(address)
                if client is None:
                    client = clients[address] = NodeClient(
                        f"{'http' if self.ca is None else 'https'}://{address}:{NODE_PORT}",
                        api_key=self.api_key,
                        ca=self.ca,
                        timeout=self.timeout,
                        retries=0,
                        follow_leader=False,
                    )
                sent = time.monotonic()
                try:
                    body = await client.upsert(
                        self.collection,
                        [{"id": item_id, "vector": vector.tolist()}],
                        ack="one",
                        retry=False,
                    )
                except NodeError as err:
                    self._failed(f"{address}: {err.code}")
                    await asyncio.sleep(self.interval)
                    continue
                ack = Ack(
                    item_id,
                    tuple(float(x) for x in vector),
                    sent,
                    time.monotonic(),
                    address,
                    int(body.get("seq", 0)),
                )
                with self._lock:
                    self.acks.append(ack)
                number += 1
                await asyncio.sleep(self.interval)
        finally:
            for client in clients.values():
                await client.close()

    def _failed(self, reason: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_error = reason
