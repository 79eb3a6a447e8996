"""``/v1/admin/promote|follow|fence|confirm`` (cluster token), ``GET /v1/replication/status``.

Every admin answer is the status body (``status_body``): role, epoch and log positions.
The bodies are ``api.schema``'s types, the ones the OpenAPI document states.
"""

from __future__ import annotations

from aiohttp import web

from dvecdb_node.api.errors import json_response
from dvecdb_node.api.schema import Confirm, Fence, Follow, Promote, decode
from dvecdb_node.api.system import status_body
from dvecdb_node.replication.keys import MANAGER

routes = web.RouteTableDef()


@routes.post("/v1/admin/promote")
async def promote(request: web.Request) -> web.Response:
    body = decode(Promote, await request.read())
    await request.app[MANAGER].promote(body.epoch, body.members, body.lease_token)
    return json_response(status_body(request.app))


@routes.post("/v1/admin/follow")
async def follow(request: web.Request) -> web.Response:
    body = decode(Follow, await request.read())
    await request.app[MANAGER].follow(body.leader, body.epoch)
    return json_response(status_body(request.app))


@routes.post("/v1/admin/fence")
async def fence(request: web.Request) -> web.Response:
    body = decode(Fence, await request.read())
    await request.app[MANAGER].fence(body.epoch)
    return json_response(status_body(request.app))


@routes.post("/v1/admin/confirm")
async def confirm(request: web.Request) -> web.Response:
    """The operator confirms this leader's epoch: its lease runs on (see ``lease``)."""
    body = decode(Confirm, await request.read())
    request.app[MANAGER].confirm(body.epoch, body.lease_token)
    return json_response(status_body(request.app))


@routes.get("/v1/replication/status")
async def replication_status(request: web.Request) -> web.Response:
    return json_response(request.app[MANAGER].replication_status())
