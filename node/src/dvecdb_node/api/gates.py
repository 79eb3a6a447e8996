"""The data gates: what the data API (``/v1/collections...``) answers before any handler.

1. Serving: until recovery is done every data call answers 503 ``recovering`` (with
   ``Retry-After``): an empty list, a 404 or a 409 then would be a wrong fact a client or a
   router acts on. A store that failed (a corrupt log, an fsync error) answers 503
   ``storage_error`` naming it.
2. Reads: registered checks may refuse data reads (replication adds one: a member whose log
   may hold records no leader acknowledged serves nothing).

The aiohttp middleware and the fast lane both ask (searches through ``search.gate``). Every
check is a few attribute reads: it runs once per search.
"""

from __future__ import annotations

from aiohttp import web

from dvecdb_node.api.errors import Handler
from dvecdb_node.api.keys import ENGINE, READ_GATES, RECOVERED, RECOVERY_ERROR
from dvecdb_node.errors import NotReady, Recovering

_DATA_PREFIX = "/v1/collections"


def is_data(path: str) -> bool:
    return path.startswith(_DATA_PREFIX)


def storage_error(app: web.Application) -> str | None:
    """Why the store cannot serve (a damaged log, a failed fsync, a failed recovery), or None."""
    error = app[ENGINE].storage_error
    if error is None and app[RECOVERY_ERROR]:
        error = app[RECOVERY_ERROR][0]
    return error


def check_serving(app: web.Application) -> None:
    """Raise 503 unless the store is recovered and healthy (``engine.ready`` says both)."""
    if app[ENGINE].ready:
        return
    if not app[RECOVERED].is_set():
        raise Recovering("the node is still recovering its store")
    error = storage_error(app)
    if error:
        raise NotReady(f"the store failed: {error}", code="storage_error")
    raise NotReady("the node is shutting down", code="shutting_down")


def check_gates(app: web.Application) -> None:
    """Raise the first refusal of the registered read gates, if any."""
    for gate in app[READ_GATES]:
        gate()


def check_reads(app: web.Application) -> None:
    """Raise the first refusal of a data read, if any."""
    check_serving(app)
    check_gates(app)


@web.middleware
async def read_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """GET reads are gated here; a search's read gate waits for its body (``search.gate``):
    a strong read refused by a non-leader answers ``not_leader``, whatever else holds."""
    if request.path.startswith(_DATA_PREFIX):
        if request.method == "GET":
            check_reads(request.app)
        else:
            check_serving(request.app)
    return await handler(request)
