"""The slot fence on real nodes: a leader and followers, a promotion, restarts.

A fence is a log record, so a follower replays it, a promoted follower and a restarted member
keep it (from the log after a crash, from the checkpoint after a clean stop); every ordinary
write (JSON and binary upsert, delete) with any id in a fenced slot is refused whole with
409 ``slot_moved``, and a write appended before the fence record lies below its seq.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from dvecdb_client import NodeClient, NodeError
from dvecdb_client.bulk import CONTENT_TYPE, encode_batch
from tests.integration.replication.conftest import DIM, Group, wait_converged, wait_for
from tests.integration.replication.test_converge import setup_group

from .conftest import Admin, ids_where

pytestmark = pytest.mark.integration

FENCED = "0-1023"


def _inside(slot: int) -> bool:
    return slot <= 1023


def _outside(slot: int) -> bool:
    return slot > 1023


def _vectors(count: int, seed: int) -> list[list[float]]:
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32).tolist()


async def _refused_whole(admin: Admin, url: str, inside: list[str], outside: list[str]) -> None:
    """JSON upsert, binary upsert and delete touching a fenced slot: 409, nothing made."""
    ids = [*outside, *inside]
    vectors = _vectors(len(ids), 7)
    status, body = await admin.call(
        url,
        "PUT",
        "/v1/collections/c/vectors",
        json={"vectors": [{"id": i, "vector": v} for i, v in zip(ids, vectors, strict=True)]},
    )
    assert status == 409, body
    error = body["error"]
    assert error["code"] == "slot_moved"
    assert error["owner"] == 1 and error["map_version"] == 7
    assert all(0 <= int(r.split("-")[0]) <= 1023 for r in error["slots"])
    data = encode_batch(ids, np.asarray(vectors, dtype=np.float32), None)
    status, body = await admin.call(
        url, "PUT", "/v1/collections/c/vectors", data=data, content_type=CONTENT_TYPE
    )
    assert (status, body["error"]["code"]) == (409, "slot_moved")
    status, body = await admin.call(
        url, "POST", "/v1/collections/c/vectors/delete", json={"ids": ids}
    )
    assert (status, body["error"]["code"]) == (409, "slot_moved")
    for item in ids:  # none of the batch was applied (the outside ids were new)
        status, _ = await admin.call(url, "GET", f"/v1/collections/c/vectors/{item}")
        assert status == 404


async def _fenced(admin: Admin, url: str) -> list[str]:
    status, body = await admin.call(url, "GET", "/v1/status")
    assert status == 200
    return list(body["fenced_slots"])


async def test_fence_refuses_writes_and_survives_promotion_and_restarts(
    group: Group, admin: Admin
) -> None:
    # One checkpoint kept: the log before it goes, so a late member needs a snapshot.
    group.start(3, env={"DVECDB_KEEP_CHECKPOINTS": "1", "DVECDB_SHUTDOWN_GRACE_SECONDS": "1"})
    await group.client(0).promote(1)
    for client in group.clients[1:]:
        await client.follow(group.nodes[0].url, 1)
    await group.client(0).create_collection("c", DIM, "l2", ack="one")
    leader = group.nodes[0]
    kept = ids_where("kept", 20, _inside)
    await group.client(0).upsert(
        "c",
        [{"id": i, "vector": v} for i, v in zip(kept, _vectors(20, 1), strict=True)],
        ack="quorum",
    )
    status, fence = await admin.call(
        leader.url,
        "POST",
        "/v1/admin/slots/fence",
        json={"slots": [FENCED], "fenced": True, "owner": 1, "map_version": 7},
    )
    assert status == 200, fence
    assert fence["epoch"] == 1 and fence["seq"] > 0
    assert await _fenced(admin, leader.url) == [FENCED]
    fresh_inside = ids_where("new-in", 5, _inside)
    fresh_outside = ids_where("new-out", 5, _outside)
    await _refused_whole(admin, leader.url, fresh_inside, fresh_outside)
    status, body = await admin.call(
        leader.url, "POST", "/v1/collections/c/vectors/delete", json={"ids": kept[:3]}
    )
    assert (status, body["error"]["code"]) == (409, "slot_moved")
    # Ids outside the fence still write, at seqs after the fence.
    wrote = await group.client(0).upsert(
        "c", [{"id": fresh_outside[0], "vector": _vectors(1, 2)[0]}], ack="quorum"
    )
    assert wrote["seq"] > fence["seq"]
    target = await wait_converged(group.clients)
    for url in (n.url for n in group.nodes[1:]):
        assert await _fenced(admin, url) == [FENCED]
    async with admin.session.get(f"{leader.url}/metrics") as resp:
        text = await resp.text()
    assert "dvecdb_fenced_slots 1024.0" in text
    assert "dvecdb_slot_moved_total 4.0" in text

    # The leader dies; a follower takes over at epoch 2 and keeps the fence.
    await asyncio.to_thread(leader.kill)
    await group.client(1).promote(2)
    await group.client(2).follow(group.nodes[1].url, 2)
    new = group.nodes[1]
    assert await _fenced(admin, new.url) == [FENCED]
    await _refused_whole(admin, new.url, ids_where("p-in", 3, _inside), ["p-out-x"])

    # A crash (the log replays the fence) and a clean stop (the checkpoint carries it).
    for restart in ("kill", "stop"):
        member = group.nodes[2]
        await asyncio.to_thread(getattr(member, restart))
        await asyncio.to_thread(member.start)
        assert await _fenced(admin, member.url) == [FENCED], restart
        await group.client(2).follow(new.url, 2)
    await wait_converged([group.client(1), group.client(2)])
    assert target > 0

    # The promoted leader restarts too; promoted again, it still refuses.
    await asyncio.to_thread(new.stop)
    await asyncio.to_thread(new.start)
    assert await _fenced(admin, new.url) == [FENCED]
    await group.client(1).promote(3)
    await group.client(2).follow(new.url, 3)
    await _refused_whole(admin, new.url, ids_where("r-in", 3, _inside), ["r-out-x"])

    # A new member joins after the leader's log was cut at its checkpoint (a second clean
    # restart): it installs a snapshot, which carries the fence.
    await wait_converged([group.client(1), group.client(2)])
    await asyncio.to_thread(new.stop)
    await asyncio.to_thread(new.start)
    await group.client(1).promote(4)
    await group.client(2).follow(new.url, 4)
    status, leader_status = await admin.call(new.url, "GET", "/v1/status")
    assert leader_status["first_seq"] > 1
    group.add("n3")
    await group.client(3).follow(new.url, 4)
    await wait_converged([group.client(1), group.client(2), group.client(3)])
    status, joined = await admin.call(group.nodes[3].url, "GET", "/v1/status")
    assert joined["first_seq"] > 1  # it started from a snapshot, not from the log
    assert joined["fenced_slots"] == [FENCED]

    # Lifting the fence lets the writes through again.
    status, body = await admin.call(
        new.url, "POST", "/v1/admin/slots/fence", json={"slots": [FENCED], "fenced": False}
    )
    assert status == 200, body
    assert await _fenced(admin, new.url) == []
    await group.client(1).upsert(
        "c", [{"id": fresh_inside[0], "vector": _vectors(1, 3)[0]}], ack="quorum"
    )
    assert await group.client(1).get("c", fresh_inside[0]) is not None


async def test_fence_on_a_follower_answers_not_leader(group: Group, admin: Admin) -> None:
    await setup_group(group, count=2)
    status, body = await admin.call(
        group.nodes[1].url, "POST", "/v1/admin/slots/fence", json={"slots": ["5"], "fenced": True}
    )
    assert (status, body["error"]["code"]) == (409, "not_leader")
    assert body["error"]["leader"] == group.nodes[0].url


async def test_writes_racing_the_fence_land_below_it_or_are_refused(
    group: Group, admin: Admin
) -> None:
    """Writers hammer fenced-to-be slots while the fence is logged: every write acknowledged
    has a seq below the fence's; every refused one left nothing."""
    await setup_group(group)
    url = group.nodes[0].url
    acked: dict[str, int] = {}
    refused: list[str] = []
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        client = NodeClient(url, token=None, timeout=10.0, retries=0, follow_leader=False)
        n = 0
        try:
            while not stop.is_set():
                ids = ids_where(f"w{w}-{n}", 3, _inside)
                n += 1
                try:
                    done = await client.upsert(
                        "c", [{"id": i, "vector": [0.5] * DIM} for i in ids], retry=False
                    )
                except NodeError as exc:
                    assert exc.code == "slot_moved", exc
                    refused.extend(ids)
                    continue
                acked.update(dict.fromkeys(ids, int(done["seq"])))
        finally:
            await client.close()

    tasks = [asyncio.create_task(writer(w)) for w in range(6)]
    await wait_for(lambda: _true(len(acked) > 300), 60, "writes to get going")
    status, fence = await admin.call(
        url, "POST", "/v1/admin/slots/fence", json={"slots": [FENCED], "fenced": True}
    )
    assert status == 200, fence
    await wait_for(lambda: _true(len(refused) > 30), 60, "refusals")
    stop.set()
    await asyncio.gather(*tasks)
    assert max(acked.values()) < fence["seq"]
    for item in refused[:50]:
        assert await group.client(0).get("c", item) is None
    for item in list(acked)[-20:]:
        assert await group.client(0).get("c", item) is not None


async def _true(value: bool) -> bool:
    return value
