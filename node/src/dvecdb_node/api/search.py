"""``POST /v1/collections/{name}/search``: k-NN with filters and read consistency levels.

Both servers answer it through the same steps: :func:`admit` (read gates, validation, the
leadership a consistency level needs, and the placement from :func:`dvecdb_node.search.plan.
place`), then :func:`answer_inline` for an ``INLINE`` search (the fast lane batches those
instead) or :func:`answer`, which waits where the plan says so. The aiohttp route is below; the
fast lane (``fastlane``) calls the same functions. Every function takes its dependencies as
one :class:`SearchContext`, built once per app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from dvecdb_node.api import querybody
from dvecdb_node.api.validation import SearchRequest, check_name, parse_search
from dvecdb_node.errors import Conflict, NodeError
from dvecdb_node.role import ClusterHooks, NodeRole
from dvecdb_node.search.plan import Placement, needs_lease
from dvecdb_node.search.searcher import Searcher
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.found import Found, Rows
from dvecdb_node.storage.index import Collection

routes = web.RouteTableDef()
ROUTE = "/v1/collections/{name}/search"


@dataclass(frozen=True, slots=True)
class SearchContext:
    """What answering a search reads: built by ``create_app`` once replication is wired
    (its hooks and read gate are final then)."""

    engine: Engine
    searcher: Searcher
    role: NodeRole
    hooks: ClusterHooks
    settings: NodeSettings
    # Checks that raise NotReady while this member must not serve data reads.
    read_gates: list[Callable[[], None]]


SEARCH = web.AppKey("search", SearchContext)


@dataclass(frozen=True, slots=True)
class PreparedSearch:
    name: str
    collection: Collection
    query: SearchRequest


def gate(ctx: SearchContext, raw: bytes, content_type: str | None = None) -> None:
    """The read gate of a search.

    A member that refuses data reads answers a ``strong`` or ``quorum`` read as every
    non-leader does (409 ``not_leader``): only on that refusal path is the body peeked at.
    """
    try:
        for check in ctx.read_gates:
            check()
    except NodeError:
        if querybody.wants_leader(raw, content_type):
            ctx.role.require_lease()
        raise


def prepare(
    ctx: SearchContext, name: str, raw: bytes, content_type: str | None = None
) -> PreparedSearch:
    """Validate a search body against its collection (raises a 4xx :class:`NodeError`).

    JSON unless ``content_type`` names the binary form (``querybody``).
    """
    collection = ctx.engine.collection(check_name(name))
    if content_type == querybody.CONTENT_TYPE:
        query = querybody.decode_queries(raw, collection.config, ctx.settings)
    else:
        query = parse_search(raw, collection.config, ctx.settings)
    return PreparedSearch(collection.name, collection, query)


def require_role(ctx: SearchContext, query: SearchRequest) -> None:
    """409 ``not_leader`` unless this member may answer the query's consistency level."""
    if needs_lease(query.consistency):
        ctx.role.require_lease()


def admit(
    ctx: SearchContext, name: str, raw: bytes, content_type: str | None = None
) -> tuple[PreparedSearch, Placement]:
    """Gate, validate, check leadership, plan: everything decided before a search runs."""
    gate(ctx, raw, content_type)
    prepared = prepare(ctx, name, raw, content_type)
    require_role(ctx, prepared.query)
    return prepared, ctx.searcher.plan(prepared.query, prepared.collection)


def render(prepared: PreparedSearch, rows: Rows, seq: int) -> bytes:
    """The response body: one list of hits per query vector, and the seq it reflects."""
    collection, with_metadata = prepared.collection, prepared.query.include_metadata
    if isinstance(rows, Found) and not with_metadata:
        return b'{"results":%b,"seq":%d}' % (rows.json(), seq)
    results: list[list[dict[str, Any]]] = []
    for row in rows:
        out: list[dict[str, Any]] = []
        for hit in row:
            item: dict[str, Any] = {"id": hit.id, "distance": hit.distance}
            if with_metadata:
                item["metadata"] = collection.metadata_of(hit.label) or {}
            out.append(item)
        results.append(out)
    return orjson.dumps({"results": results, "seq": seq})


def answer_inline(ctx: SearchContext, prepared: PreparedSearch) -> bytes | None:
    """An ``INLINE`` search's answer now, or None if a write holds the index."""
    seq = ctx.engine.applied_seq
    query = prepared.query
    rows = ctx.searcher.search_inline(prepared.collection, query.queries, query.k, query.clauses)
    return None if rows is None else render(prepared, rows, seq)


def check_token(engine: Engine, seq: int, epoch: int) -> None:
    """409 ``stale`` when this member's record at ``seq`` was made at another epoch: the
    write of token (``seq``, ``epoch``) was lost here, another record took its seq. (Where
    the record is no longer retained the epoch cannot be told; the read is served.)"""
    held = engine.epoch_at(seq)
    if held is not None and held != epoch:
        raise Conflict(
            f"this member's record at seq {seq} is from epoch {held}, not {epoch}: "
            "that write is not here",
            code="stale",
            applied_seq=engine.applied_seq,
            epoch_at_seq=held,
        )


async def _wait(ctx: SearchContext, query: SearchRequest) -> None:
    """A quorum read's confirmation, a ``min_seq`` read's record (and its write token)."""
    engine = ctx.engine
    if query.consistency == "quorum":
        await ctx.hooks.confirm_leadership()
    if query.min_seq is not None:
        bound = ctx.settings.min_seq_wait_seconds
        if not await engine.wait_applied(query.min_seq, bound):
            raise Conflict(
                f"applied_seq {engine.applied_seq} has not reached {query.min_seq}",
                code="stale",
                applied_seq=engine.applied_seq,
            )
        if query.min_epoch is not None:
            check_token(engine, query.min_seq, query.min_epoch)


async def answer(ctx: SearchContext, prepared: PreparedSearch, placement: Placement) -> bytes:
    """The answer of an admitted search, waiting first where ``placement`` is ``WAIT``."""
    query, engine, searcher = prepared.query, ctx.engine, ctx.searcher
    if placement is Placement.WAIT:
        await _wait(ctx, query)
        require_role(ctx, query)  # the lease may have lapsed while waiting
        # The collection as of the awaited record (created, or dropped, meanwhile).
        prepared = PreparedSearch(prepared.name, engine.collection(prepared.name), query)
    seq = engine.applied_seq
    # Inline if its plan says so and no write holds the index, else on the pool.
    rows = await searcher.search(
        prepared.collection, query.queries, query.k, ef=query.ef, clauses=query.clauses
    )
    return render(prepared, rows, seq)


@routes.post(ROUTE)
async def search(request: web.Request) -> web.Response:
    ctx = request.app[SEARCH]
    raw = await request.read()
    prepared, placement = admit(ctx, request.match_info["name"], raw, request.content_type)
    body = None
    if placement is Placement.INLINE:
        body = answer_inline(ctx, prepared)
        placement = Placement.POOLED  # if a write held the index
    if body is None:
        body = await answer(ctx, prepared, placement)
    return web.Response(body=body, content_type="application/json")
