"""Fencing: a leader that comes back with old data and a stale belief that it leads cannot
get an ``ack=one`` write acknowledged, lower epochs are refused everywhere, and once told to
follow the new leader it discards every record the new leader does not hold."""

from __future__ import annotations

import numpy as np
import pytest

from dvecdb_client import NodeError

from .conftest import DIM, Group, wait_converged, wait_for

pytestmark = pytest.mark.integration


def _ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


async def test_stale_leader_is_fenced_and_truncated(group: Group, proxy_factory) -> None:  # type: ignore[no-untyped-def]
    group.start(3, env={"DVECDB_ACK_TIMEOUT_SECONDS": "2"})
    old, n1, n2 = group.clients
    old_node = group.nodes[0]
    proxies = [proxy_factory(old_node.port) for _ in range(2)]
    await old.promote(1)
    await n1.follow(proxies[0].url, 1)
    await n2.follow(proxies[1].url, 1)
    await old.create_collection("c", DIM, ack="quorum")
    rng = np.random.default_rng(3)
    common = _ids("common", 50)
    await old.upsert_bulk("c", common, rng.standard_normal((50, DIM)), ack="quorum")
    await wait_converged(group.clients)

    # Cut the old leader off, let it take writes nobody else sees, then crash it.
    for proxy in proxies:
        proxy.partition()
    only_old = _ids("only-old", 20)
    await old.upsert_bulk("c", only_old, rng.standard_normal((20, DIM)), ack="leader")
    old_last = (await old.status())["last_seq"]
    group.nodes[0].kill()

    # The operator fails over to n1 at epoch 2; n2 follows it directly.
    await n1.promote(2)
    await n2.follow(group.nodes[1].url, 2)
    fresh = _ids("new", 30)
    await n1.upsert_bulk("c", fresh, rng.standard_normal((30, DIM)), ack="one")

    # Lower epochs are refused by every member that has seen epoch 2.
    for call in (n1.promote(1), n2.follow(old_node.url, 1), n2.fence(1)):
        with pytest.raises(NodeError) as refused:
            await call
        assert refused.value.status == 409 and refused.value.code == "stale_epoch"

    # The old leader restarts on its old data and is (wrongly) re-promoted at its old epoch.
    old_node.start()
    status = await old.status()
    assert status["role"] == "standby" and status["epoch"] == 1
    assert status["last_seq"] >= old_last
    await old.promote(1)
    with pytest.raises(NodeError) as unacked:
        await old.upsert_bulk("c", ["stale-write"], np.ones(DIM), ack="one", retry=False)
    assert unacked.value.status == 503 and unacked.value.code == "ack_timeout"
    assert "may or may not persist" in unacked.value.message

    # Told to follow the new leader, it drops what the new leader never had.
    await old.follow(group.nodes[1].url, 2)
    await wait_converged([n1, old, n2])
    leader_seq = (await n1.status())["applied_seq"]
    status = await old.status()
    assert (status["role"], status["epoch"], status["applied_seq"]) == ("follower", 2, leader_seq)
    detail = await old.replication_status()
    assert detail["follower"]["truncations"] + detail["follower"]["snapshots_installed"] >= 1
    for item_id in [*only_old, "stale-write"]:
        assert await old.get("c", item_id) is None, item_id
    for item_id in [*common, *fresh]:
        assert await old.get("c", item_id) is not None, item_id
    counts = {(await c.get_collection("c"))["count"] for c in (old, n1, n2)}
    assert counts == {len(common) + len(fresh)}

    # A leader that hears of a higher epoch from a peer stops taking writes at once.
    with pytest.raises(NodeError) as stale:
        await n2.request(
            "POST",
            "/v1/replication/ack",
            json={"node_id": "x", "epoch": 1, "received_seq": 0, "applied_seq": 0},
            admin=True,
        )
    assert stale.value.code in ("stale_epoch", "not_leader")

    async def demoted() -> bool:
        return (await n1.status())["role"] == "standby"

    with pytest.raises(NodeError) as higher:
        await n1.request(
            "POST",
            "/v1/replication/ack",
            json={"node_id": "probe", "epoch": 3, "received_seq": 0, "applied_seq": 0},
            admin=True,
        )
    assert higher.value.code == "not_leader"
    await wait_for(demoted, 5, "the leader to step down on seeing epoch 3")
    with pytest.raises(NodeError) as refused_write:
        await n1.upsert_bulk("c", ["late"], np.ones(DIM), ack="leader", retry=False)
    assert refused_write.value.code == "not_leader"
