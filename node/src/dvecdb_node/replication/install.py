"""Wire replication into a node app: endpoints, hooks, read gate, metrics, lifecycle.

``create_app(settings, extra_routes=[install])`` calls :func:`install` while building the app;
the manager starts in a cleanup context (after the engine object exists) and stops before
the engine closes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dvecdb_node.api.keys import (
    CREDENTIALS,
    ENGINE,
    HOOKS,
    METRICS,
    OPENAPI_PATHS,
    READ_GATES,
    RECOVERED,
    ROLE,
    SETTINGS,
    TLS,
)
from dvecdb_node.errors import NotReady
from dvecdb_node.replication import admin, leader
from dvecdb_node.replication.keys import MANAGER
from dvecdb_node.replication.manager import ReplicationManager
from dvecdb_node.replication.metrics import ReplicationCollector
from dvecdb_node.replication.openapi import PATHS


def _reads_gate(manager: ReplicationManager) -> None:
    """A member in standby, or a follower still reconciling its log, serves no data."""
    block = manager.read_block
    if block is not None:
        raise NotReady(block.message, code=block.code)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    manager = app[MANAGER]
    manager.load()
    yield
    await manager.close()


async def _closing(app: web.Application) -> None:
    """aiohttp's shutdown signal (after the port stopped accepting, before it waits for
    the requests in flight): let the replication streams drain and end."""
    app[MANAGER].begin_closing()


def install(app: web.Application) -> None:
    manager = ReplicationManager(
        app[SETTINGS],
        app[ENGINE],
        app[ROLE],
        app[RECOVERED],
        app[CREDENTIALS],
        None if (tls := app.get(TLS)) is None else tls.client,
    )
    app[MANAGER] = manager
    app[HOOKS] = manager
    app.add_routes(admin.routes)
    app.add_routes(leader.routes)
    app[READ_GATES].append(lambda: _reads_gate(manager))
    app[OPENAPI_PATHS].update(PATHS)
    app[METRICS].registry.register(ReplicationCollector(manager))
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_closing)
