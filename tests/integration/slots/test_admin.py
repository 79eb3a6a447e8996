"""The slot endpoints' input rules on one node: the import's validation and limits, bad slot
ranges, unknown collections, the cluster token, and purge of one named collection."""

from __future__ import annotations

from typing import Any

import pytest

from dvecdb_client import NodeClient
from dvecdb_client.slots import slot_of

from .conftest import Admin

pytestmark = pytest.mark.integration


@pytest.fixture
def node(node_factory: Any) -> Any:
    return node_factory(
        node_id="solo",
        env={"DVECDB_CLUSTER_TOKEN": "test-cluster-token", "DVECDB_MAX_BATCH": "5"},
    )


async def test_import_validates_like_an_upsert(node: Any, admin: Admin) -> None:
    async with NodeClient(node.url, token="test-cluster-token") as client:
        await client.create_collection("c", 2, "l2")
        await client.create_collection("d", 2, "l2")

    async def apply(body: dict[str, Any]) -> tuple[int, Any]:
        return await admin.call(node.url, "POST", "/v1/admin/slots/apply", json=body)

    item = {"id": "a", "vector": [1.0, 2.0], "metadata": {"k": "v"}}
    assert (await apply({"collection": "c", "upserts": [item]}))[1]["count"] == 1
    status, body = await apply({"collection": "c", "upserts": [{"id": "b", "vector": [1.0]}]})
    assert (status, body["error"]["code"]) == (400, "dimension_mismatch")
    status, body = await apply({"collection": "c", "deletes": [str(i) for i in range(6)]})
    assert (status, body["error"]["code"]) == (413, "batch_too_large")
    status, body = await apply({"collection": "nope", "deletes": ["a"]})
    assert (status, body["error"]["code"]) == (404, "collection_not_found")
    status, body = await apply({"collection": "c", "upserts": [{**item, "id": ""}]})
    assert (status, body["error"]["code"]) == (400, "invalid_id")
    # Upserts before deletes; deleting a missing id is fine; an empty import changes nothing.
    status, body = await apply(
        {"collection": "c", "upserts": [{**item, "id": "z"}], "deletes": ["z", "missing"]}
    )
    assert (status, body["count"]) == (200, 2)
    status, empty = await apply({"collection": "c"})
    assert (status, empty["count"]) == (200, 0) and empty["seq"] == body["seq"]
    _, items = await admin.export(node.url, "c", "0-4095")
    assert items == [{"id": "a", "vector": [1.0, 2.0], "metadata": {"k": "v"}}]

    # Slots: a reversed range is the same range; out of range or malformed is refused.
    for bad in ("4096", "1-x", "", "-3", "\u00b2-1", "0-1,"):
        status, body = await admin.call(
            node.url, "GET", "/v1/admin/slots/log", params={"slots": bad, "from_seq": "1"}
        )
        assert (status, body["error"]["code"]) == (400, "invalid_slots"), bad
    status, body = await admin.call(
        node.url, "GET", "/v1/admin/slots/log", params={"slots": "0", "from_seq": "\u00b2"}
    )
    assert status == 400, body
    slot = slot_of("a")
    status, body = await admin.call(
        node.url,
        "GET",
        "/v1/admin/slots/log",
        params={"slots": f"{slot}-0" if slot else "0", "from_seq": "1"},
    )
    assert status == 200 and [op["op"] for op in body["ops"]] == ["upsert", "upsert", "delete"]
    status, body = await admin.call(
        node.url, "GET", "/v1/admin/slots/export", params={"collection": "x", "slots": "0"}
    )
    assert (status, body["error"]["code"]) == (404, "collection_not_found")

    # Purge of one named collection leaves the other's items.
    await apply({"collection": "d", "upserts": [item]})
    status, body = await admin.call(
        node.url,
        "POST",
        "/v1/admin/slots/purge",
        json={"slots": ["0-4095"], "collection": "c"},
    )
    assert (status, body["count"]) == (200, 1)
    assert (await admin.export(node.url, "c", "0-4095"))[1] == []
    assert len((await admin.export(node.url, "d", "0-4095"))[1]) == 1


async def test_slot_endpoints_need_the_cluster_token(node: Any) -> None:
    status, body = node.request("POST", "/v1/admin/slots/fence", {"slots": ["0"], "fenced": True})
    assert status == 401, body
