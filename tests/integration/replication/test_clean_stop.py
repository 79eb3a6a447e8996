"""A leader stopped cleanly (SIGTERM, as Kubernetes stops a pod) ends its followers' streams
once they hold everything, instead of waiting out its whole shutdown grace for streams that
never end by themselves, and so writes its shutdown checkpoint well within the pod's grace."""

from __future__ import annotations

import asyncio
import signal
import time

import numpy as np
import pytest

from .conftest import DIM, Group, wait_converged

pytestmark = pytest.mark.integration

GRACE = 60.0


async def test_a_leader_with_streaming_followers_stops_without_waiting_out_its_grace(
    group: Group,
) -> None:
    group.start(2, env={"DVECDB_SHUTDOWN_GRACE_SECONDS": str(GRACE)})
    await group.client(0).promote(1)
    await group.client(1).follow(group.nodes[0].url, 1)
    leader = group.client(0)
    await leader.create_collection("c", DIM, "l2", ack="one")
    rng = np.random.default_rng(3)
    for batch in range(5):
        items = [{"id": f"v{batch}-{i}", "vector": rng.random(DIM).tolist()} for i in range(100)]
        await leader.upsert("c", items, ack="one")
    last = await wait_converged(group.clients)

    node = group.nodes[0]
    started = time.monotonic()
    node.signal(signal.SIGTERM)
    assert node.proc is not None
    code = await asyncio.get_running_loop().run_in_executor(None, node.proc.wait, GRACE + 15)
    took = time.monotonic() - started
    assert code == 0, node.log()[-3000:]
    # Ending the streams waits for the followers to hold everything, not for the grace.
    assert took < GRACE / 4, f"a clean stop took {took:.1f}s (grace {GRACE:g}s)"
    log = node.log()
    assert "engine closed at seq" in log, log[-3000:]
    closed_at = int(log.rsplit("engine closed at seq", 1)[1].split()[0])
    assert closed_at >= last
    assert (await group.client(1).status())["applied_seq"] == closed_at
