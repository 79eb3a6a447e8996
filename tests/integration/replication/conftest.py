"""Helpers for replication tests: a group of real nodes driven through the admin API.

The tests play the operator: they start nodes in standby, promote one, point the others at
it, and poll ``/v1/status`` (never fixed sleeps) until positions converge.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from dvecdb_client import NodeClient
from tests.support.faultproxy import FaultProxy

TOKEN = "test-cluster-token"
DIM = 16


class Group:
    """Nodes of one test plus a client per node (cluster token)."""

    def __init__(self, factory: Callable[..., Any]) -> None:
        self._factory = factory
        self.nodes: list[Any] = []
        self.clients: list[NodeClient] = []

    def start(
        self, count: int, *, args: list[str] | None = None, env: dict[str, str] | None = None
    ) -> None:
        for index in range(count):
            self.add(f"n{len(self.nodes)}", args=args, env=env)
            del index

    def add(
        self, name: str, *, args: list[str] | None = None, env: dict[str, str] | None = None
    ) -> Any:
        node = self._factory(
            standalone=False,
            node_id=name,
            args=["--fsync", "batch", *(args or [])],
            env={"DVECDB_CLUSTER_TOKEN": TOKEN, "DVECDB_LOG_LEVEL": "INFO", **(env or {})},
        )
        self.nodes.append(node)
        self.clients.append(NodeClient(node.url, token=TOKEN, timeout=30.0))
        return node

    def client(self, index: int) -> NodeClient:
        return self.clients[index]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


async def wait_for(
    check: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            if await check():
                return
        except Exception:  # a node may be restarting; keep polling until the deadline
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def wait_converged(clients: list[NodeClient], within: float = 120.0) -> int:
    """Wait until the leader (first client) is ready and every follower streams from it and
    has applied exactly its last_seq; returns that seq."""
    target = (await clients[0].status())["last_seq"]

    async def done() -> bool:
        details = await asyncio.gather(*(c.replication_status() for c in clients[1:]))
        if not all(d.get("follower", {}).get("streaming") for d in details):
            return False
        statuses = await asyncio.gather(*(c.status() for c in clients))
        return all(s["applied_seq"] == target for s in statuses)

    await wait_for(done, within, f"all members to apply seq {target}")
    return int(target)


def save_report(name: str, report: dict[str, Any]) -> None:
    """Print a measurement and keep it under $DVECDB_TEST_REPORT_DIR when that is set."""
    print(f"{name}:", json.dumps(report))
    folder = os.environ.get("DVECDB_TEST_REPORT_DIR")
    if folder:
        with open(os.path.join(folder, f"{name}.json"), "w") as fh:
            json.dump(report, fh)


@pytest_asyncio.fixture
async def group(node_factory: Callable[..., Any]) -> AsyncIterator[Group]:
    g = Group(node_factory)
    yield g
    await g.close()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[int], FaultProxy]]:
    started: list[FaultProxy] = []

    def make(port: int) -> FaultProxy:
        proxy = FaultProxy(port).start()
        started.append(proxy)
        return proxy

    yield make
    for proxy in started:
        proxy.stop()
