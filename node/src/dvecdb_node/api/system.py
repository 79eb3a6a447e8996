"""Probes, status, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dvecdb_node.api.errors import error_response, json_response
from dvecdb_node.api.gates import storage_error
from dvecdb_node.api.keys import (
    CREDENTIALS,
    ENGINE,
    HOOKS,
    METRICS,
    OPENAPI_PATHS,
    RECOVERY_ERROR,
    ROLE,
    SETTINGS,
)
from dvecdb_node.api.openapi import openapi_document
from dvecdb_node.role import lease_token

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    failure = request.app[RECOVERY_ERROR]
    if failure:
        return error_response(500, "recovery_failed", failure[0])
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    error = storage_error(request.app)
    if error:
        return error_response(503, "storage_error", f"the store failed: {error}")
    if not engine.ready:
        return error_response(503, "not_ready", "recovering")
    reason = request.app[HOOKS].not_ready_reason()
    if reason:
        return error_response(503, "not_ready", reason)
    return json_response({"status": "ready", "role": request.app[ROLE].role})


def status_body(app: web.Application) -> dict[str, Any]:
    """The member's role and log positions (also the answer of every admin command).

    The operator picks among fenced members by (``last_epoch``, ``last_seq``), then
    ``applied_seq``; ``received_seq`` is the log end this member holds durably.
    """
    engine, role = app[ENGINE], app[ROLE]
    body: dict[str, Any] = {
        "node_id": role.node_id,
        "role": role.role,
        "epoch": role.epoch,
        "ready": engine.ready,
        "last_epoch": engine.last_epoch,
        "last_seq": engine.last_seq,
        "received_seq": engine.durable_seq,
        "applied_seq": engine.applied_seq,
        "durable_seq": engine.durable_seq,
        "checkpoint_seq": engine.checkpoint_seq,
        "first_seq": engine.first_seq if engine.ready else None,
        "leader": None if role.is_leader else role.leader_url,
        "url": app[SETTINGS].self_url,
        "fsync": app[SETTINGS].fsync.value,
        "storage_error": storage_error(app),
        "fenced_slots": engine.slot_fences.ranges(),
        # Pass to /v1/admin/promote or /v1/admin/confirm: the lease runs from this moment.
        "lease_token": lease_token(),
    }
    if role.is_leader:
        body["leader"] = app[SETTINGS].self_url
        body["followers"] = app[HOOKS].followers()
        lease = app[HOOKS].lease_status()
        if lease is not None:
            body["lease"] = lease
    else:
        # A leader this member acked may hold its lease up to lease_seconds past that ack.
        ack_age = app[HOOKS].last_ack_seconds()
        body["last_ack_seconds"] = None if ack_age is None else round(ack_age, 3)
    return body


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    return json_response(status_body(request.app))


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    data = generate_latest(request.app[METRICS].registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    app = request.app
    document = openapi_document(app[SETTINGS], app[OPENAPI_PATHS], app[CREDENTIALS].current)
    return json_response(document)
