"""The router's HTTP API: the node's data API, unchanged for clients, over every shard.

- Writes (upsert, delete) are split by the slot of each id and sent to each shard's leader in
  parallel; the answer carries ``count`` and an opaque ``token`` (one (epoch, seq) per shard,
  :mod:`.tokens`). If a shard fails, the answer is that shard's error, with ``written`` naming
  the shards that did take their part (a retry is safe: writes are idempotent).
- Searches go to one serving member per shard (eventual: the least-loaded ready member;
  strong and quorum: the leader), keep their form (JSON or binary) and options, and are merged
  into one top-k (:mod:`.merge`); ``coverage: {shards, answered}`` is in every answer. A shard
  with no serving member fails the search with 503 unless ``allow_partial`` is true.
  ``min_token`` waits on each shard for that shard's record of the token.
- Collections are created and dropped on every shard, idempotently; listing and describing
  read every shard, and a collection some shards lack is created there (repair).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import generate_latest

from dvecdb_client import tokens
from dvecdb_client.slots import parse_ranges, slot_of, slot_set
from dvecdb_router import bodies
from dvecdb_router.bodies import BodyError
from dvecdb_router.cluster import Answer, Call, Cluster, ShardUnavailable, client_authorization
from dvecdb_router.merge import Hit, forward_one_owner, keep_owned, merge_rows

log = logging.getLogger(__name__)

CLUSTER = web.AppKey("cluster", Cluster)
JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
routes = web.RouteTableDef()
# A write refused `slot_moved` is sent again after 25 ms, doubling to 500 ms between tries, or
# as soon as the members file brings a new map.
MOVED_FIRST_DELAY = 0.025
MOVED_MAX_DELAY = 0.5
# A shard whose answer lost hits it does not own is asked again for more, at most this often,
# up to the node's default largest k.
RE_ASKS = 2
MAX_K = 1000


def error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, **extra}},
        status=status,
        dumps=lambda o: orjson.dumps(o).decode(),
    )


def relay(answer: Answer) -> web.Response:
    """A member's answer, as it gave it."""
    return web.Response(body=answer.body, status=answer.status, content_type=JSON)


def ok(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type=JSON)


def _unavailable(exc: ShardUnavailable) -> web.Response:
    response = error(
        503, "shard_unavailable", f"shard {exc.shard} cannot serve: {exc.reason}", shard=exc.shard
    )
    response.headers["Retry-After"] = "1"
    return response


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cluster = request.app[CLUSTER]
    status = 500
    client_authorization.set(request.headers.get("Authorization"))
    try:
        response = await handler(request)
        status = response.status
        return response
    except BodyError as exc:
        status = 400
        return error(400, exc.code, str(exc))
    except ShardUnavailable as exc:
        status = 503
        return _unavailable(exc)
    except web.HTTPException as exc:
        status = exc.status
        if exc.status == 405:
            response = error(405, "method_not_allowed", f"{request.method} is not allowed here")
            response.headers["Allow"] = exc.headers.get("Allow", "")
            return response
        if exc.status == 404:
            return error(404, "not_found", f"no route {request.method} {request.path}")
        if exc.status == 413:
            return error(413, "payload_too_large", str(exc))
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal_error", "internal server error")
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        cluster.metrics.request(request.method, route, str(status))


# ----------------------------------------------------------------- system
@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return ok({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Ready when every shard that owns slots has a member that can serve reads (a group
    listed before slots move to it may still be starting)."""
    cluster = request.app[CLUSTER]
    missing = [
        index
        for index in cluster.owning_shards()
        if not any(m.ready for m in cluster.shards[index])
    ]
    if missing:
        return error(503, "shard_unavailable", f"no ready member in shards {missing}")
    return ok({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[CLUSTER].metrics.registry)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    return ok(
        {
            "role": "router",
            "slot_map": {
                "version": cluster.slot_map.version,
                "shards": cluster.slot_map.shards,
                "owners": [list(r) for r in cluster.slot_map.owner_ranges()],
            },
            "shards": cluster.describe(),
        }
    )


# ------------------------------------------------------------ collections
async def _every_leader(
    cluster: Cluster, method: str, path: str, body: bytes | None, params: dict[str, str]
) -> list[Answer]:
    return list(
        await asyncio.gather(
            *(
                cluster.to_leader(shard, Call(method, path, body, params))
                for shard in range(len(cluster.shards))
            )
        )
    )


async def _create_everywhere(cluster: Cluster, body: bytes, params: dict[str, str]) -> list[Answer]:
    """Create on every shard; "already exists" with the same configuration counts as done."""
    answers = await _every_leader(cluster, "POST", "/v1/collections", body, params)
    wanted = bodies.parse_json_object(body)
    for answer in answers:
        if answer.status == 409 and answer.code == "collection_exists":
            described = Call("GET", f"/v1/collections/{wanted.get('name')}")
            existing = await cluster.send(_member(cluster, answer.member), described)
            if existing.status != 200 or not _same_config(existing.json(), wanted):
                return [answer]
    return answers


def _member(cluster: Cluster, url: str) -> Any:
    for members in cluster.shards:
        for member in members:
            if member.url == url:
                return member
    raise KeyError(url)


def _same_config(described: dict[str, Any], wanted: dict[str, Any]) -> bool:
    for key in ("dimension", "metric"):
        if key in wanted and described.get(key) != wanted[key]:
            return False
    for key, value in (wanted.get("hnsw") or {}).items():
        if (described.get("hnsw") or {}).get(key) != value:
            return False
    return True


@routes.post("/v1/collections")
async def create_collection(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    raw = await request.read()
    bodies.parse_json_object(raw)
    answers = await _create_everywhere(cluster, raw, dict(request.query))
    failed = [a for a in answers if a.status >= 300 and a.code != "collection_exists"]
    if failed:
        return relay(failed[0])
    if all(a.code == "collection_exists" for a in answers):
        return relay(answers[0])  # it was there already on every shard: the node's 409
    created = next(a for a in answers if a.status < 300)
    doc = created.json()
    doc.pop("seq", None)
    doc.pop("epoch", None)
    return ok({**doc, "shards": len(answers)}, status=201)


@routes.get("/v1/collections")
async def list_collections(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    answers = await asyncio.gather(
        *(cluster.to_reader(s, Call("GET", "/v1/collections")) for s in cluster.owning_shards())
    )
    for answer in answers:
        if answer.status != 200:
            return relay(answer)
    listed = [_names(a.json()) for a in answers]
    every = set().union(*(set(names) for names in listed))
    missing = {name for name in every if any(name not in names for names in listed)}
    for name in sorted(missing):
        await _repair(
            cluster, name, [answers[i] for i, names in enumerate(listed) if name in names]
        )
    return await _describe_all(cluster, sorted(every))


def _names(doc: Any) -> dict[str, dict[str, Any]]:
    items = doc.get("collections", doc) if isinstance(doc, dict) else doc
    return {c["name"]: c for c in items if isinstance(c, dict) and "name" in c}


async def _repair(cluster: Cluster, name: str, holders: list[Answer]) -> None:
    """Create ``name`` on the shards that lack it, as a shard that has it describes it."""
    config = _names(holders[0].json())[name]
    body = orjson.dumps(
        {k: config[k] for k in ("name", "dimension", "metric", "hnsw") if k in config}
    )
    log.warning("collection %s is missing on some shards: creating it there", name)
    await _create_everywhere(cluster, body, {})


async def _describe_all(cluster: Cluster, names: list[str]) -> web.Response:
    described = [await _describe(cluster, name) for name in names]
    return ok({"collections": [d for d in described if d is not None]})


async def _describe(cluster: Cluster, name: str) -> dict[str, Any] | None:
    answers = await asyncio.gather(
        *(
            cluster.to_reader(s, Call("GET", f"/v1/collections/{name}"))
            for s in cluster.owning_shards()
        )
    )
    found = [a.json() for a in answers if a.status == 200]
    if not found:
        return None
    doc = dict(found[0])
    doc["count"] = sum(int(d.get("count", 0)) for d in found)
    doc["shards"] = {"total": len(answers), "holding": len(found)}
    return doc


@routes.get("/v1/collections/{name}")
async def get_collection(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    name = request.match_info["name"]
    answers = await asyncio.gather(
        *(
            cluster.to_reader(s, Call("GET", f"/v1/collections/{name}"))
            for s in cluster.owning_shards()
        )
    )
    if all(a.status == 404 for a in answers):
        return relay(answers[0])
    for answer in answers:
        if answer.status not in (200, 404):
            return relay(answer)
    described = await _describe(cluster, name)
    return ok(described)


@routes.delete("/v1/collections/{name}")
async def drop_collection(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    name = request.match_info["name"]
    answers = await _every_leader(
        cluster, "DELETE", f"/v1/collections/{name}", None, dict(request.query)
    )
    dropped = [a for a in answers if a.status < 300]
    failed = [a for a in answers if a.status >= 300 and a.code != "collection_not_found"]
    if failed:
        return relay(failed[0])
    if not dropped:
        return relay(answers[0])  # no shard had it: the node's 404
    return ok({"name": name, "dropped": True, "shards": len(answers)})


@routes.patch("/v1/collections/{name}")
async def update_collection(request: web.Request) -> web.Response:
    """A live setting (the default ef) on every shard's leader; the value is absolute, so a
    retry after a partial failure is safe. The answer is shard 0's description, with the
    write token of every shard."""
    cluster = request.app[CLUSTER]
    name = request.match_info["name"]
    raw = await request.read()
    bodies.parse_json_object(raw)
    answers = await _every_leader(
        cluster, "PATCH", f"/v1/collections/{name}", raw, dict(request.query)
    )
    failed = [a for a in answers if a.status >= 300]
    if failed:
        return relay(failed[0])
    docs = [a.json() for a in answers]
    positions = {shard: (int(d["epoch"]), int(d["seq"])) for shard, d in enumerate(docs)}
    doc = docs[0]
    doc.pop("seq", None)
    doc.pop("epoch", None)
    return ok({**doc, "token": tokens.encode(positions), "shards": len(answers)})


# ----------------------------------------------------------------- writes
async def _split_write(request: web.Request, path: str, field: str) -> web.Response:
    """Split a JSON write by owning shard, send each part to its leader, join the answers.

    A part refused ``slot_moved`` (some of its slots are being handed to another shard; nothing
    of it was applied): its ids in the slots the node names are split again by the map re-read
    from the file and sent again, with backoff, until the move publishes its map or
    ``moved_retry_seconds`` pass (503 ``slot_moving``); its other ids are sent again at once.
    Parts that were taken are not sent again.
    """
    cluster = request.app[CLUSTER]
    if request.content_type not in (JSON, "application/octet-stream", ""):
        return error(
            415,
            "unsupported_media_type",
            f"the router takes JSON writes; {request.content_type} goes to a member directly",
        )
    doc = bodies.parse_json_object(await request.read())
    ids = bodies.ids_of(doc.get(field), field)
    items: list[Any] = doc[field]  # a list: ids_of checked it
    params = dict(request.query)
    started = time.perf_counter()

    async def part(shard: int, positions: list[int]) -> Answer:
        body = orjson.dumps({**doc, field: [items[i] for i in positions]})
        call = Call(request.method, path, body, params, {"Content-Type": JSON})
        return await cluster.to_leader(shard, call)

    written: dict[int, tokens.Position] = {}
    count = 0
    failure: web.Response | None = None
    pending = list(range(len(ids)))
    waiting: list[int] = []  # refused for a fenced slot: sent again after a backoff
    moved: Answer | None = None
    deadline = time.monotonic() + cluster.moved_retry_seconds
    delay = MOVED_FIRST_DELAY
    while True:
        owners = cluster.slot_map.owners
        groups: dict[int, list[int]] = {}
        for position in pending:
            groups.setdefault(owners[slot_of(ids[position])], []).append(position)
        shards = sorted(groups)
        results = await asyncio.gather(
            *(part(s, groups[s]) for s in shards), return_exceptions=True
        )
        now: list[int] = []  # refused only for sharing a batch with a fenced id: send at once
        for shard, result in zip(shards, results, strict=True):
            if isinstance(result, ShardUnavailable):
                failure = failure or _unavailable(result)
            elif isinstance(result, BaseException):
                raise result
            elif result.status == 409 and result.code == "slot_moved":
                moved = result
                fenced = _refused_slots(result)
                for position in groups[shard]:
                    slot = slot_of(ids[position])
                    (waiting if fenced is None or slot in fenced else now).append(position)
            elif result.status >= 300:
                failure = failure or relay(result)
            else:
                answer = result.json()
                at = (int(answer.get("epoch", 0)), int(answer["seq"]))
                written[shard] = max(written.get(shard, at), at)
                count += int(answer.get("count", 0))
        if failure is not None or not (now or waiting):
            break
        if now and now != pending:  # (the same ids refused twice running: they wait too)
            pending = now
            continue
        waiting += now
        if time.monotonic() + delay > deadline:
            cluster.metrics.slot_moving.inc()
            slots = (moved.json().get("error") or {}).get("slots") if moved else None
            failure = error(
                503,
                "slot_moving",
                f"{len(waiting)} ids are in slots being moved between shards; the move did "
                f"not publish within {cluster.moved_retry_seconds:g}s (retry later)",
                slots=slots,
            )
            failure.headers["Retry-After"] = "1"
            break
        cluster.metrics.slot_moved_retries.inc()
        await cluster.wait_map_change(delay)
        delay = min(delay * 2, MOVED_MAX_DELAY)
        pending, waiting = sorted(waiting), []
    cluster.metrics.fanout("write", time.perf_counter() - started)
    if failure is not None:
        if written:  # said plainly: part of the write is in, a retry is safe
            detail = orjson.loads(failure.body) if isinstance(failure.body, bytes) else {}
            error_doc = detail.get("error", {})
            error_doc["written"] = tokens.encode(written)
            error_doc["written_shards"] = sorted(written)
            failure = web.Response(
                body=orjson.dumps({"error": error_doc}),
                status=failure.status,
                content_type=JSON,
                headers={k: v for k, v in failure.headers.items() if k == "Retry-After"},
            )
        return failure
    return ok({"count": count, "token": tokens.encode(written), "shards": len(written)})


def _refused_slots(answer: Answer) -> frozenset[int] | None:
    """The fenced slots a ``slot_moved`` answer names (None: it names none, so every id of
    the part waits)."""
    try:
        texts = answer.json().get("error", {}).get("slots")
        return slot_set(parse_ranges(texts)) if isinstance(texts, list) and texts else None
    except (ValueError, AttributeError):
        return None


@routes.put("/v1/collections/{name}/vectors")
async def upsert(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _split_write(request, f"/v1/collections/{name}/vectors", "vectors")


@routes.post("/v1/collections/{name}/vectors/delete")
async def delete(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return await _split_write(request, f"/v1/collections/{name}/vectors/delete", "ids")


@routes.get("/v1/collections/{name}/vectors/{id}")
async def get_vector(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER]
    item_id = request.match_info["id"]
    shard = cluster.slot_map.shard_of(item_id)
    answer = await cluster.to_reader(shard, Call("GET", request.path))
    return relay(answer)


# ----------------------------------------------------------------- search
@routes.post("/v1/collections/{name}/search")
async def search(request: web.Request) -> web.Response:
    """Every shard that owns slots answers its top-k; hits of slots it does not own (copies a
    move is making, or stale ones the source has not purged yet) are dropped, and a shard whose
    answer lost hits that way is asked again for more, so each owner's true top-k is merged.

    With one owning shard its answer's bytes are forwarded when the merge would not change
    them (:func:`.merge.forward_one_owner`): only ``coverage`` is added."""
    cluster = request.app[CLUSTER]
    body = bodies.parse_search(await request.read(), request.content_type)
    options = dict(body.options)
    allow_partial = options.pop("allow_partial", False)
    if not isinstance(allow_partial, bool):
        raise BodyError("allow_partial must be true or false")
    if "min_seq" in options or "min_epoch" in options:
        raise BodyError(
            "min_seq names one member's log; through the router read your writes with "
            "min_token (the token of the write)",
            code="invalid_consistency",
        )
    raw_token = options.pop("min_token", None)
    positions: dict[int, tokens.Position] = {}
    if raw_token is not None:
        try:
            positions = tokens.decode(raw_token)
        except tokens.TokenError as exc:
            raise BodyError(str(exc), code="invalid_token") from exc
    # The client's bytes go to the members as they are unless an option changes.
    edited = len(options) != len(body.options)
    consistency = options.get("consistency", "eventual")
    leader_read = consistency in ("strong", "quorum")
    # One map for the whole search: whom to ask and whose hits.
    slot_map, owning = cluster.map_and_owners()
    headers = {"Content-Type": body.content_type}

    async def ask(shard: int, k: int) -> Answer:
        if edited or k != body.k or shard in positions:
            own = dict(options)
            if k != body.k:
                own["k"] = k
            if shard in positions:
                own["min_epoch"], own["min_seq"] = positions[shard]
            payload = body.rebuild(own)
        else:
            payload = body.raw
        call = Call("POST", request.path, payload, None, headers)
        if leader_read:
            return await cluster.to_leader(shard, call)
        return await cluster.to_reader(shard, call)

    async def owned(shard: int, first: list[list[Hit]] | None = None) -> Answer | list[list[Hit]]:
        k = body.k
        asks = 0
        while True:
            if first is None:
                answer = await ask(shard, k)
                if answer.status != 200:
                    return answer
                found = answer.json()["results"]
            else:
                found, first = first, None
            rows, dropped, short = keep_owned(found, shard, slot_map, k)
            if dropped:
                cluster.metrics.hits_dropped.inc(dropped)
            asks += 1
            if not short or k >= MAX_K or asks > RE_ASKS:
                return rows
            k = min(MAX_K, 2 * k + dropped)

    started = time.perf_counter()
    if len(owning) == 1:
        try:
            answer = await ask(owning[0], body.k)
        finally:
            cluster.metrics.fanout("search", time.perf_counter() - started)
        if answer.status != 200:
            return relay(answer)  # a 4xx (bad query, unknown collection, stale) is the answer
        prefix, rows = forward_one_owner(answer.body, body.k)
        if prefix is not None:
            cluster.metrics.forwarded.inc()
            return web.Response(body=prefix + _ONE_OF_ONE, content_type=JSON)
        results: list[Any] = [await owned(owning[0], rows)]
    else:
        results = await asyncio.gather(*(owned(s) for s in owning), return_exceptions=True)
        cluster.metrics.fanout("search", time.perf_counter() - started)
    answered: list[Any] = []
    unavailable: ShardUnavailable | None = None
    for result in results:
        if isinstance(result, ShardUnavailable):
            unavailable = unavailable or result
        elif isinstance(result, BaseException):
            raise result
        elif isinstance(result, Answer):
            return relay(result)  # a 4xx (bad query, unknown collection, stale) is the answer
        else:
            answered.append(result)
    if unavailable is not None and (not allow_partial or not answered):
        return _unavailable(unavailable)
    if len(answered) < len(owning):
        cluster.metrics.partial.inc()
    merged = merge_rows(answered, body.k) if answered else []
    return ok({"results": merged, "coverage": {"shards": len(owning), "answered": len(answered)}})


# What a lone owner's forwarded answer ends with (the router's answer has no `seq`).
_ONE_OF_ONE = b',"coverage":{"shards":1,"answered":1}}'


def create_app(cluster: Cluster, *, max_body_bytes: int = 64 << 20) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes, middlewares=[errors_middleware])
    app[CLUSTER] = cluster
    app.add_routes(routes)

    async def lifecycle(app: web.Application) -> Any:
        await cluster.start()
        yield
        await cluster.close()

    app.cleanup_ctx.append(lifecycle)
    return app
