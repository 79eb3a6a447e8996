"""``/v1/collections/{name}/vectors``: upsert (JSON or binary bulk), get one, delete."""

from __future__ import annotations

from aiohttp import web

from dvecdb_node.api import bulk
from dvecdb_node.api.errors import json_response
from dvecdb_node.api.keys import ENGINE, SETTINGS
from dvecdb_node.api.validation import (
    check_id,
    check_name,
    parse_delete,
    parse_upsert_json,
    query_ack,
)
from dvecdb_node.api.writes import write
from dvecdb_node.errors import NotFound
from dvecdb_node.storage.records import DeleteBatch

routes = web.RouteTableDef()


@routes.put("/v1/collections/{name}/vectors")
async def upsert_vectors(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    name = check_name(request.match_info["name"])
    config = request.app[ENGINE].collection(name).config
    body = await request.read()
    ack = query_ack(request.query.get("ack"))
    if request.content_type == bulk.CONTENT_TYPE:
        batch = bulk.decode_batch(body, name, config.dimension, settings)
    else:
        batch, body_ack = parse_upsert_json(body, config, settings)
        ack = body_ack or ack  # the body's ack, else the query parameter's
    result = await write(request, batch, ack)
    return json_response({**result.token(), "count": result.count})


# Not the id ``delete``: that path is the delete endpoint's (OpenAPI matches a concrete path
# before a templated one), so a GET there answers 405 with ``Allow: POST``.
@routes.get("/v1/collections/{name}/vectors/{id:(?!delete$).+}")
async def get_vector(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    item_id = check_id(request.match_info["id"])
    found = request.app[ENGINE].get(name, item_id)
    if found is None:
        raise NotFound(f"no vector {item_id!r} in {name!r}", code="vector_not_found")
    vector, metadata = found
    return json_response({"id": item_id, "vector": vector.tolist(), "metadata": metadata or {}})


@routes.post("/v1/collections/{name}/vectors/delete")
async def delete_vectors(request: web.Request) -> web.Response:
    name = check_name(request.match_info["name"])
    request.app[ENGINE].collection(name)
    ids, ack = parse_delete(await request.read(), request.app[SETTINGS])
    result = await write(request, DeleteBatch(name, ids), ack)
    return json_response({**result.token(), "count": result.count})
