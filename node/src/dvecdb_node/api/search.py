"""``POST /v1/collections/{name}/search``: k-NN with filters and read consistency levels.

Both servers answer it through the same three steps: :func:`prepare` (validate), then
:func:`answer_now` (on the event loop, when nothing needs waiting for) or :func:`answer`.
The aiohttp route is below; the fast lane (``fastlane``) calls the same functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from dvecdb_node.api import querybody
from dvecdb_node.api.gates import check_gates
from dvecdb_node.api.keys import ENGINE, HOOKS, ROLE, SETTINGS
from dvecdb_node.api.validation import SearchRequest, check_name, parse_search
from dvecdb_node.errors import Conflict, NodeError
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.found import Found, Rows
from dvecdb_node.storage.index import Collection

routes = web.RouteTableDef()
ROUTE = "/v1/collections/{name}/search"


@dataclass(frozen=True, slots=True)
class PreparedSearch:
    name: str
    collection: Collection
    query: SearchRequest


def gate(app: web.Application, raw: bytes, content_type: str | None = None) -> None:
    """The read gate of a search (both servers call it before :func:`prepare`).

    A member that refuses data reads answers a ``strong`` or ``quorum`` read as every
    non-leader does (409 ``not_leader``): only on that refusal path is the body peeked at.
    """
    try:
        check_gates(app)
    except NodeError:
        if querybody.wants_leader(raw, content_type):
            app[ROLE].require_lease()
        raise


def prepare(
    app: web.Application, name: str, raw: bytes, content_type: str | None = None
) -> PreparedSearch:
    """Validate a search body against its collection (raises a 4xx :class:`NodeError`).

    JSON unless ``content_type`` names the binary form (``querybody``).
    """
    collection = app[ENGINE].collection(check_name(name))
    if content_type == querybody.CONTENT_TYPE:
        query = querybody.decode_queries(raw, collection.config, app[SETTINGS])
    else:
        query = parse_search(raw, collection.config, app[SETTINGS])
    return PreparedSearch(collection.name, collection, query)


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


def is_plain(app: web.Application, prepared: PreparedSearch) -> bool:
    """An eventual or strong read, unfiltered, at the default ef: answerable without waiting
    and together with other such searches. Raises if a strong read reaches a non-leader."""
    query = prepared.query
    if query.min_seq is not None or query.consistency not in ("eventual", "strong"):
        return False
    if query.consistency == "strong":
        app[ROLE].require_lease()
    return query.clauses is None and (
        query.ef is None or query.ef == prepared.collection.config.hnsw.ef_search
    )


def answer_now(app: web.Application, prepared: PreparedSearch) -> bytes | None:
    """The answer if it needs no waiting (a plain, cheap search), else None."""
    if not is_plain(app, prepared):
        return None
    query, engine = prepared.query, app[ENGINE]
    seq = engine.applied_seq
    rows = engine.search_now(
        prepared.name, query.queries, query.k, ef=query.ef, clauses=query.clauses
    )
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


async def answer(app: web.Application, prepared: PreparedSearch) -> bytes:
    """The answer, waiting where the consistency level or the index asks for it."""
    query, engine = prepared.query, app[ENGINE]
    if query.consistency in ("strong", "quorum"):
        app[ROLE].require_lease()
    if query.consistency == "quorum":
        await app[HOOKS].confirm_leadership()
    if query.min_seq is not None:
        bound = app[SETTINGS].min_seq_wait_seconds
        if not await engine.wait_applied(query.min_seq, bound):
            raise Conflict(
                f"applied_seq {engine.applied_seq} has not reached {query.min_seq}",
                code="stale",
                applied_seq=engine.applied_seq,
            )
        if query.min_epoch is not None:
            check_token(engine, query.min_seq, query.min_epoch)
    seq = engine.applied_seq
    rows = await engine.search(
        prepared.name, query.queries, query.k, ef=query.ef, clauses=query.clauses
    )
    return render(prepared, rows, seq)


@routes.post(ROUTE)
async def search(request: web.Request) -> web.Response:
    app = request.app
    raw = await request.read()
    gate(app, raw, request.content_type)
    prepared = prepare(app, request.match_info["name"], raw, request.content_type)
    body = answer_now(app, prepared)
    if body is None:
        body = await answer(app, prepared)
    return web.Response(body=body, content_type="application/json")
