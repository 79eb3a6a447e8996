"""``/v1/collections``: create, list, describe, update live settings, drop."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dvecdb_node.api.errors import json_response
from dvecdb_node.api.keys import ENGINE, SETTINGS
from dvecdb_node.api.validation import (
    check_name,
    parse_collection,
    parse_collection_update,
    query_ack,
)
from dvecdb_node.api.writes import write
from dvecdb_node.storage.index import Collection
from dvecdb_node.storage.records import CreateCollection, DropCollection

routes = web.RouteTableDef()


def describe(collection: Collection) -> dict[str, Any]:
    return {**collection.config.to_dict(), "count": collection.count}


@routes.post("/v1/collections")
async def create_collection(request: web.Request) -> web.Response:
    config = parse_collection(await request.read(), request.app[SETTINGS])
    result = await write(request, CreateCollection(config), request.query.get("ack"))
    return json_response({**config.to_dict(), "count": 0, **result.token()}, status=201)


@routes.get("/v1/collections")
async def list_collections(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    return json_response({"collections": [describe(c) for c in engine.collections()]})


@routes.get("/v1/collections/{name}")
async def get_collection(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    return json_response(describe(request.app[ENGINE].collection(name)))


@routes.patch("/v1/collections/{name}")
async def update_collection(request: web.Request) -> web.Response:
    """Change live settings (the default ef_search) through the log: followers, recovery,
    checkpoints and snapshots all carry it; answered at the ``ack`` level like a write."""
    name = check_name(request.match_info["name"])
    ack = query_ack(request.query.get("ack"))
    collection = request.app[ENGINE].collection(name)
    change, body_ack = parse_collection_update(name, await request.read())
    result = await write(request, change, body_ack or ack)
    config = collection.config
    if change.ef_search is not None:
        config = config.with_ef_search(change.ef_search)
    return json_response({**config.to_dict(), "count": collection.count, **result.token()})


@routes.delete("/v1/collections/{name}")
async def drop_collection(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    request.app[ENGINE].collection(name)
    result = await write(request, DropCollection(name), request.query.get("ack"))
    return json_response({"name": name, "dropped": True, **result.token()})
