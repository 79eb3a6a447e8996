"""``/v1/admin/promote|follow|fence|confirm`` (cluster token), ``GET /v1/replication/status``.

Every admin answer is the status body (``status_body``): role, epoch and log positions.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from dvecdb_node.api.errors import json_response
from dvecdb_node.api.system import status_body
from dvecdb_node.api.validation import parse_json, require_object
from dvecdb_node.errors import InvalidInput
from dvecdb_node.replication.keys import MANAGER

routes = web.RouteTableDef()


def _epoch(body: dict[str, Any]) -> int:
    epoch = body.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise InvalidInput("epoch must be a positive integer", code="invalid_epoch")
    return epoch


def _token(body: dict[str, Any]) -> int | None:
    """The optional ``lease_token``: the lease runs from it (see ``replication.lease``)."""
    token = body.get("lease_token")
    if token is not None and (isinstance(token, bool) or not isinstance(token, int) or token < 0):
        raise InvalidInput("lease_token must be a non-negative integer", code="invalid_token")
    return token


async def _body(request: web.Request) -> dict[str, Any]:
    return require_object(parse_json(await request.read()))


@routes.post("/v1/admin/promote")
async def promote(request: web.Request) -> web.Response:
    body = await _body(request)
    members = body.get("members")
    if members is not None and (
        isinstance(members, bool) or not isinstance(members, int) or not 1 <= members <= 1000
    ):
        raise InvalidInput("members must be an integer from 1 to 1000")
    await request.app[MANAGER].promote(_epoch(body), members, _token(body))
    return json_response(status_body(request.app))


@routes.post("/v1/admin/follow")
async def follow(request: web.Request) -> web.Response:
    body = await _body(request)
    leader = body.get("leader")
    if not isinstance(leader, str) or not leader:
        raise InvalidInput("leader must be the leader's URL", code="invalid_leader")
    await request.app[MANAGER].follow(leader, _epoch(body))
    return json_response(status_body(request.app))


@routes.post("/v1/admin/fence")
async def fence(request: web.Request) -> web.Response:
    body = await _body(request)
    await request.app[MANAGER].fence(_epoch(body))
    return json_response(status_body(request.app))


@routes.post("/v1/admin/confirm")
async def confirm(request: web.Request) -> web.Response:
    """The operator confirms this leader's epoch: its lease runs on (see ``lease``)."""
    body = await _body(request)
    request.app[MANAGER].confirm(_epoch(body), _token(body))
    return json_response(status_body(request.app))


@routes.get("/v1/replication/status")
async def replication_status(request: web.Request) -> web.Response:
    return json_response(request.app[MANAGER].replication_status())
