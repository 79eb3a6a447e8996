"""``POST /v1/collections/{name}/search``: k-NN with filters and read consistency levels."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from dvecdb_node.api.errors import json_response
from dvecdb_node.api.keys import ENGINE, HOOKS, ROLE, SETTINGS
from dvecdb_node.api.validation import SearchRequest, check_name, parse_json, parse_search
from dvecdb_node.errors import Conflict

routes = web.RouteTableDef()


async def _enforce_consistency(request: web.Request, query: SearchRequest) -> None:
    app = request.app
    if query.consistency == "strong":
        app[ROLE].require_leader()
    elif query.consistency == "quorum":
        app[ROLE].require_leader()
        await app[HOOKS].confirm_leadership()
    if query.min_seq is not None:
        bound = app[SETTINGS].min_seq_wait_seconds
        if not await app[ENGINE].wait_applied(query.min_seq, bound):
            raise Conflict(
                f"applied_seq {app[ENGINE].applied_seq} has not reached {query.min_seq}",
                code="stale",
                applied_seq=app[ENGINE].applied_seq,
            )


@routes.post("/v1/collections/{name}/search")
async def search(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    name = check_name(request.match_info["name"])
    collection = engine.collection(name)
    query = parse_search(parse_json(await request.read()), collection.config, request.app[SETTINGS])
    await _enforce_consistency(request, query)
    seq = engine.applied_seq
    rows = await engine.search(name, query.queries, query.k, ef=query.ef, clauses=query.clauses)
    results: list[list[dict[str, Any]]] = []
    for row in rows:
        out: list[dict[str, Any]] = []
        for hit in row:
            item: dict[str, Any] = {"id": hit.id, "distance": hit.distance}
            if query.include_metadata:
                item["metadata"] = collection.metadata_of(hit.label) or {}
            out.append(item)
        results.append(out)
    return json_response({"results": results, "seq": seq})
