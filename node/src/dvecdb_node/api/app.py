"""The app factory: settings in, a wired ``web.Application`` out (tests use the same factory).

Replication extends the app without editing this module: ``extra_routes`` are called with the
app to register routes (and may replace ``app[HOOKS]``), ``cleanup_contexts`` are appended
after the engine's, so they start once the engine object exists and stop before it closes.
Recovery runs in the background: ``/healthz`` answers at once, ``/readyz`` once it is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable

from aiohttp import web

from dvecdb_node.api import collections, search, slots, slots_openapi, system, vectors
from dvecdb_node.api.auth import auth_middleware
from dvecdb_node.api.errors import Handler, error_middleware
from dvecdb_node.api.gates import read_gate
from dvecdb_node.api.keys import (
    CREDENTIALS,
    ENGINE,
    HOOKS,
    METRICS,
    OPENAPI_PATHS,
    READ_GATES,
    RECOVERED,
    RECOVERY_ERROR,
    ROLE,
    SETTINGS,
    TLS,
)
from dvecdb_node.api.search import SEARCH, SearchContext
from dvecdb_node.credentials import CredentialStore
from dvecdb_node.metrics import NodeMetrics
from dvecdb_node.role import NodeRole, SingleNodeHooks
from dvecdb_node.search.searcher import Searcher
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.engine import Engine
from dvecdb_node.tls import Tls

log = logging.getLogger(__name__)

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].observe_request(
            request.method, route, status, time.perf_counter() - started
        )


async def _recover(app: web.Application) -> None:
    engine, role, settings = app[ENGINE], app[ROLE], app[SETTINGS]
    try:
        await engine.recover()
    except Exception as exc:
        log.exception("recovery failed")
        app[RECOVERY_ERROR].append(f"recovery failed: {exc}")
        return
    finally:
        app[RECOVERED].set()
    # What recovery loaded lives as long as the node: keep it out of the cyclic collector's
    # full passes, which would otherwise walk every loaded object (a pause growing with data).
    gc.freeze()
    role.epoch = max(role.epoch, engine.last_epoch)
    if settings.standalone:
        role.role = "leader"
        role.epoch = max(role.epoch, 1)
        role.leader_url = settings.self_url
    log.info(
        "node %s ready: role=%s epoch=%d last_seq=%d",
        role.node_id,
        role.role,
        role.epoch,
        engine.last_seq,
    )


async def engine_context(app: web.Application) -> AsyncIterator[None]:
    """Recover in the background, run the checkpoint policy, close the engine last."""
    engine = app[ENGINE]
    stop = asyncio.Event()
    recovery = asyncio.create_task(_recover(app))

    async def checkpoints() -> None:
        await app[RECOVERED].wait()
        if engine.ready:
            await engine.run_checkpoints(stop)

    checkpointer = asyncio.create_task(checkpoints())
    yield
    stop.set()
    recovery.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await recovery
    with contextlib.suppress(asyncio.CancelledError):
        await checkpointer
    if engine.ready and app[SETTINGS].checkpoint_on_shutdown:
        try:
            await engine.checkpoint()
        except Exception:
            log.exception("shutdown checkpoint failed; the log still has every write")
    await engine.close()
    app[SEARCH].searcher.close()
    log.info("engine closed at seq %d", engine.last_seq)


async def credentials_context(app: web.Application) -> AsyncIterator[None]:
    """Re-read the secrets folder and the TLS files while the node runs (when set)."""
    store, settings, tls = app[CREDENTIALS], app[SETTINGS], app.get(TLS)
    every = settings.secrets_refresh_seconds
    watchers = []
    if store.folder is not None:
        watchers.append(asyncio.create_task(store.watch(every)))
    if tls is not None:
        watchers.append(asyncio.create_task(tls.reloader.watch(every)))
    yield
    for watcher in watchers:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def create_app(
    settings: NodeSettings,
    *,
    extra_routes: Iterable[Callable[[web.Application], None]] = (),
    cleanup_contexts: Iterable[CleanupContext] = (),
    engine: Engine | None = None,
) -> web.Application:
    """Build the node's application (see the module docstring for extension points)."""
    metrics = NodeMetrics()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[metrics_middleware, error_middleware, auth_middleware, read_gate],
    )
    engine = engine or Engine(settings.data_dir, settings.engine_options(), observer=metrics)
    role = NodeRole(node_id=settings.node_id)
    app[SETTINGS] = settings
    app[CREDENTIALS] = CredentialStore(settings.credentials(), settings.secrets_dir)
    tls_files = settings.tls_files()
    if tls_files is not None:
        app[TLS] = Tls(tls_files)
    app[ENGINE] = engine
    app[ROLE] = role
    app[HOOKS] = SingleNodeHooks(role)
    app[METRICS] = metrics
    app[RECOVERED] = asyncio.Event()
    app[RECOVERY_ERROR] = []
    app[OPENAPI_PATHS] = dict(slots_openapi.PATHS)
    app[READ_GATES] = []
    metrics.watch_engine(engine, lambda: role.epoch)
    for table in (system.routes, collections.routes, vectors.routes, search.routes):
        app.add_routes(table)
    slots.install(app)
    app.cleanup_ctx.append(engine_context)
    app.cleanup_ctx.append(credentials_context)
    for register in extra_routes:
        register(app)
    app[SEARCH] = SearchContext(
        engine=engine,
        searcher=Searcher(settings.search_threads),
        role=role,
        hooks=app[HOOKS],
        settings=settings,
        read_gates=app[READ_GATES],
    )
    app.cleanup_ctx.extend(cleanup_contexts)
    return app
