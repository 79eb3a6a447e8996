"""Wire replication into a node app: endpoints, hooks, read gate, metrics, lifecycle.

``create_app(settings, extra_routes=[install])`` calls :func:`install` while building the app;
the manager starts in a cleanup context (after the engine object exists) and stops before
the engine closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web
from dvecdb_node.api.errors import Handler
from dvecdb_node.api.keys import ENGINE, HOOKS, METRICS, OPENAPI_PATHS, RECOVERED, ROLE, SETTINGS
from dvecdb_node.errors import NotReady
from dvecdb_node.replication import admin, leader
from dvecdb_node.replication.keys import MANAGER
from dvecdb_node.replication.manager import ReplicationManager
from dvecdb_node.replication.metrics import ReplicationCollector
from dvecdb_node.replication.openapi import PATHS

_DATA_READS = ("/v1/collections",)


@web.middleware
async def read_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A follower whose log is not yet reconciled with its leader serves no data."""
    is_read = request.method == "GET" or request.path.endswith("/search")
    if is_read and request.path.startswith(_DATA_READS) and request.app[MANAGER].reads_blocked:
        raise NotReady("this follower is reconciling its log with the leader", code="reconciling")
    return await handler(request)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    manager = app[MANAGER]
    manager.load()
    yield
    await manager.close()


def install(app: web.Application) -> None:
    manager = ReplicationManager(app[SETTINGS], app[ENGINE], app[ROLE], app[RECOVERED])
    app[MANAGER] = manager
    app[HOOKS] = manager
    app.add_routes(admin.routes)
    app.add_routes(leader.routes)
    app.middlewares.append(read_gate)
    app[OPENAPI_PATHS].update(PATHS)
    app[METRICS].registry.register(ReplicationCollector(manager))
    app.cleanup_ctx.append(_lifecycle)
