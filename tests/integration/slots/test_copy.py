"""A slot set copied between real nodes the mover's way: export from the source's leader,
import into the target, replay the source's slot log, fence the source, read its log up to
the fence: the target then holds exactly the source's items of those slots, although writers
kept upserting and deleting in every slot throughout."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from dvecdb_client import NodeClient, NodeError
from dvecdb_client.slots import slot_of
from tests.integration.replication.conftest import DIM, Group
from tests.integration.replication.test_converge import setup_group

from .conftest import Admin

pytestmark = pytest.mark.integration

SLOTS = "100-1500,4000-4095"
INSIDE = {s for s in range(4096) if 100 <= s <= 1500 or s >= 4000}
APPLY_BATCH = 500


def _key(item: dict[str, Any]) -> tuple[str, bytes, Any]:
    vector = np.asarray(item["vector"], dtype=np.float32).tobytes()
    return item["id"], vector, item["metadata"] or None


async def _writer(client: NodeClient, w: int, stop: asyncio.Event) -> int:
    """Upserts (some with metadata) and deletes of random ids across all slots."""
    rng = np.random.default_rng(w)
    writes = 0
    while not stop.is_set():
        ids = [f"k{int(i)}" for i in rng.integers(0, 4000, 8)]
        ids = list(dict.fromkeys(ids))
        try:
            if rng.random() < 0.3:
                await client.delete("c", ids[:3], retry=False)
            else:
                vectors = rng.standard_normal((len(ids), DIM)).astype(np.float32).tolist()
                await client.upsert(
                    "c",
                    [
                        {
                            "id": i,
                            "vector": v,
                            "metadata": {"w": w, "n": writes} if writes % 2 else None,
                        }
                        for i, v in zip(ids, vectors, strict=True)
                    ],
                    retry=False,
                )
        except NodeError as exc:
            assert exc.code == "slot_moved", exc
            await asyncio.sleep(0.01)
        writes += 1
    return writes


async def _apply(admin: Admin, url: str, upserts: list[Any], deletes: list[str]) -> None:
    status, body = await admin.call(
        url,
        "POST",
        "/v1/admin/slots/apply",
        json={"collection": "c", "upserts": upserts, "deletes": deletes},
    )
    assert status == 200, body


async def _replay(admin: Admin, source: str, target: str, from_seq: int, upto: int | None) -> int:
    """Apply the source's slot log from ``from_seq`` (until past ``upto``, or one pass of
    what is committed); returns where to continue."""
    while True:
        status, page = await admin.call(
            source,
            "GET",
            "/v1/admin/slots/log",
            params={"slots": SLOTS, "from_seq": str(from_seq), "limit": "200"},
        )
        assert status == 200, page
        for op in page["ops"]:
            assert op["seq"] >= from_seq
            if op["op"] == "upsert":
                assert all(slot_of(i["id"]) in INSIDE for i in op["items"])
                await _apply(admin, target, op["items"], [])
            else:
                assert all(slot_of(i) in INSIDE for i in op["ids"])
                await _apply(admin, target, [], op["ids"])
        assert page["next_seq"] <= page["commit_seq"] + 1
        from_seq = page["next_seq"]
        if upto is None and from_seq > page["commit_seq"]:
            return from_seq
        if upto is not None and from_seq > upto:
            return from_seq


async def test_export_and_log_replay_reproduce_the_slots_under_writes(
    group: Group, admin: Admin, node_factory: Any
) -> None:
    await setup_group(group)
    source = group.nodes[0].url
    target_node = node_factory(node_id="target")
    target = NodeClient(target_node.url, token=None, timeout=30.0)
    await target.create_collection("c", DIM, "l2")
    rng = np.random.default_rng(0)
    for start in range(0, 3000, 500):
        ids = [f"k{i}" for i in range(start, start + 500)]
        vectors = rng.standard_normal((500, DIM)).astype(np.float32)
        await group.client(0).upsert_bulk("c", ids, vectors, ack="quorum")

    # The target's copy of the slots is fenced: ordinary writes there are refused.
    status, _ = await admin.call(
        target_node.url,
        "POST",
        "/v1/admin/slots/fence",
        json={"slots": SLOTS.split(","), "fenced": True},
    )
    assert status == 200
    stop = asyncio.Event()
    writers = [
        NodeClient(source, token=None, timeout=10.0, retries=0, follow_leader=False)
        for _ in range(4)
    ]
    tasks = [asyncio.create_task(_writer(c, w, stop)) for w, c in enumerate(writers)]
    try:
        await asyncio.sleep(0.5)
        cut, items = await admin.export(source, "c", SLOTS)
        assert items and all(slot_of(i["id"]) in INSIDE for i in items)
        for start in range(0, len(items), APPLY_BATCH):
            await _apply(admin, target_node.url, items[start : start + APPLY_BATCH], [])
        position = cut + 1
        for _ in range(3):  # catch up while the writers go on
            position = await _replay(admin, source, target_node.url, position, None)
        status, fence = await admin.call(
            source,
            "POST",
            "/v1/admin/slots/fence",
            json={"slots": SLOTS.split(","), "fenced": True, "owner": 1, "map_version": 2},
        )
        assert status == 200, fence
        await _replay(admin, source, target_node.url, position, fence["seq"])
        await asyncio.sleep(0.3)  # the writers keep going outside the fence
    finally:
        stop.set()
        counts = await asyncio.gather(*tasks)
        for c in writers:
            await c.close()
    assert sum(counts) > 50

    _, on_source = await admin.export(source, "c", SLOTS)
    _, on_target = await admin.export(target_node.url, "c", SLOTS)
    assert sorted(map(_key, on_target)) == sorted(map(_key, on_source))
    assert len(on_source) > 500
    everything = ",".join(["0-4095"])
    _, all_target = await admin.export(target_node.url, "c", everything)
    assert len(all_target) == len(on_target)  # nothing outside the slots came over

    # Purge at the source: the slots' items go, the others stay, the fence stays.
    status, purged = await admin.call(
        source, "POST", "/v1/admin/slots/purge", json={"slots": SLOTS.split(",")}
    )
    assert status == 200, purged
    assert purged["count"] == len(on_source)
    _, left = await admin.export(source, "c", SLOTS)
    assert left == []
    _, rest = await admin.export(source, "c", everything)
    assert rest and all(slot_of(i["id"]) not in INSIDE for i in rest)
    status, again = await admin.call(
        source, "POST", "/v1/admin/slots/purge", json={"slots": SLOTS.split(",")}
    )
    assert (status, again["count"]) == (200, 0)
    status, body = await admin.call(source, "GET", "/v1/status")
    assert body["fenced_slots"] == ["100-1500", "4000-4095"]
    await target.close()


async def test_log_older_than_the_retained_log_answers_snapshot_required(
    admin: Admin, node_factory: Any
) -> None:
    node = node_factory(node_id="solo")
    client = NodeClient(node.url, token=None, timeout=30.0)
    await client.create_collection("c", DIM, "l2")
    await client.upsert("c", [{"id": "a", "vector": [0.0] * DIM}])
    await client.close()
    # A clean stop checkpoints and drops the log the checkpoint covers.
    await asyncio.to_thread(node.stop)
    await asyncio.to_thread(node.start)
    status, body = await admin.call(node.url, "GET", "/v1/status")
    assert body["first_seq"] > 1, body
    query = {"slots": "0-4095", "from_seq": "1"}
    status, body = await admin.call(node.url, "GET", "/v1/admin/slots/log", params=query)
    assert (status, body["error"]["code"]) == (410, "snapshot_required"), body
    query["from_seq"] = str(
        body_first := (await admin.call(node.url, "GET", "/v1/status"))[1]["first_seq"]
    )
    status, body = await admin.call(node.url, "GET", "/v1/admin/slots/log", params=query)
    assert status == 200, body
    assert body["next_seq"] == body["commit_seq"] + 1 >= body_first
