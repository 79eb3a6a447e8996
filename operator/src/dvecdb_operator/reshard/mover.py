"""Moving one slot set between two replica groups over the nodes' admin API (the I/O half).

The steps are those of the contract (/work/notes/reshard-contract.md, DESIGN.md "Horizontal
scale"): fence the slots at the target and clear them there (leftovers of an earlier attempt),
create the collections there, copy an export of the
slots from the source, replay the source's slot log until the lag is small, fence the slots at
the source (its answer's seq ``F`` bounds what the source acknowledged), replay until ``F``,
unfence the target; then the caller publishes the new map; then the source's copies are purged.
Every step is idempotent, so a mover that died runs the move again from its recorded phase:
``"copy"`` (steps 1-7), ``"publish"`` or ``"purge"``.

Leaders change under a move: each call goes to the group's leader as its members'
``/v1/status`` say, and a call answered ``not_leader``, 503, or not at all is sent again (with
backoff, up to ``call_seconds``) to whichever member leads then. The slot log serves only
committed ops, so a seq read from the source stays valid across its failover.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson

from dvecdb_client.slots import SlotMap
from dvecdb_operator.reshard.plan import Move, apply_move

log = logging.getLogger(__name__)

PHASES = ("copy", "publish", "purge")
APPLY_PARALLEL = 2  # import calls in flight during a copy
APPLY_BATCH = 512  # items per import call: well under the node's batch and body limits
LOG_LIMIT = 1000  # records per slot-log read
SMALL_LAG = 1000  # ops: below this the source is fenced (the final catch-up is short)
CATCH_UP_ROUNDS = 20  # before fencing anyway: a writer faster than the replay must not stall it
COPY_ATTEMPTS = 3  # a 410 snapshot_required (the log moved past us) copies again


class MoveError(Exception):
    """A step failed in a way retrying the call does not fix (a 4xx, a timeout of retries)."""


class SnapshotRequired(MoveError):
    """The source no longer has the log from where the catch-up must read: copy again."""


@dataclass(frozen=True, slots=True)
class GroupsAccess:
    """How the mover reaches the groups: member URLs per shard (asked again before each
    leader lookup, so the operator can hand out current pod addresses), the cluster token,
    and the TLS context for https members."""

    members: Callable[[int], Sequence[str]]
    token: str | None = None
    ssl_context: ssl.SSLContext | None = None

    @classmethod
    def fixed(
        cls,
        members: Mapping[int, Sequence[str]],
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> GroupsAccess:
        return cls(lambda shard: members[shard], token, ssl_context)


@dataclass(frozen=True, slots=True)
class Progress:
    """What a move reports as it goes; ``phase`` is where a resumed move starts."""

    phase: str  # copy | publish | purge | done
    step: str  # fence-target, collections, export, catch-up, fence-source, final, ...
    items_copied: int = 0
    ops_replayed: int = 0
    lag: int = 0  # committed source ops not yet replayed at the target
    started: float = field(default_factory=time.monotonic)

    def as_status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "step": self.step,
            "itemsCopied": self.items_copied,
            "opsReplayed": self.ops_replayed,
            "lag": self.lag,
        }


async def run_move(
    move: Move,
    groups: GroupsAccess,
    *,
    map_version: int,
    phase: str,
    on_progress: Callable[[Progress], Awaitable[None]],
    publish: Callable[[SlotMap], Awaitable[None]] | None = None,
    current: SlotMap | None = None,
    call_seconds: float = 60.0,
) -> None:
    """Run ``move`` from ``phase`` on.

    ``map_version`` is the version of the map this move publishes (the current map's + 1);
    the source's fence carries it, so a refused write tells which map to wait for. Without
    ``publish``, phase ``"copy"`` returns after step 7 (the caller publishes, records it, and
    calls again with ``"purge"``); with ``publish`` and ``current`` (the map before the move),
    the move also publishes ``apply_move(current, move)`` and purges. ``on_progress`` is
    awaited at each step, with ``phase`` the point to resume from if the mover dies then.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    if publish is not None and current is None:
        raise ValueError("publish needs the current map")
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
    connector = aiohttp.TCPConnector(ssl=groups.ssl_context if groups.ssl_context else True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        mover = _Mover(move, _Nodes(session, groups, call_seconds), map_version, on_progress)
        if phase == "copy":
            await mover.copy()
            if publish is None:
                return
            phase = "publish"
        if phase == "publish":
            if publish is None or current is None:
                return  # the caller publishes, records it, then asks for "purge"
            await publish(apply_move(current, move))
        await mover.purge()


class _Nodes:
    """Calls to a group's leader, following it across failovers."""

    def __init__(
        self, session: aiohttp.ClientSession, groups: GroupsAccess, call_seconds: float
    ) -> None:
        self.session = session
        self.groups = groups
        self.call_seconds = call_seconds
        self.leaders: dict[int, str] = {}

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.groups.token}"} if self.groups.token else {}

    async def leader(self, shard: int) -> str | None:
        """The member reporting itself leader at the highest epoch, asked now."""
        best: tuple[int, str] | None = None
        for url in self.groups.members(shard):
            url = url.rstrip("/")
            try:
                async with self.session.get(
                    url + "/v1/status",
                    headers=self.headers(),
                    timeout=aiohttp.ClientTimeout(total=3),
                ) as resp:
                    if resp.status != 200:
                        continue
                    status = orjson.loads(await resp.read())
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                continue
            epoch = status.get("epoch")
            if status.get("role") == "leader" and isinstance(epoch, int):
                if best is None or epoch > best[0]:
                    best = (epoch, url)
        return None if best is None else best[1]

    async def _retrying(
        self, shard: int, attempt: Callable[[str], Awaitable[Any]], what: str
    ) -> Any:
        deadline = time.monotonic() + self.call_seconds
        delay = 0.05
        reason = "no member reports itself leader"
        while True:
            url = self.leaders.get(shard) or await self.leader(shard)
            if url is not None:
                self.leaders[shard] = url
                try:
                    return await attempt(url)
                except _Retry as exc:
                    reason = str(exc)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reason = f"{url} did not answer: {exc!r}"
                self.leaders.pop(shard, None)
            if time.monotonic() + delay > deadline:
                raise MoveError(
                    f"shard {shard}: {what}: gave up after {self.call_seconds}s: {reason}"
                )
            log.info("shard %d: %s: %s; retrying", shard, what, reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def call(
        self,
        shard: int,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
        accept_codes: tuple[str, ...] = (),
    ) -> Any:
        """JSON in, JSON out, at the shard's leader; an error whose code is in
        ``accept_codes`` is returned as its body (e.g. "already exists")."""

        async def attempt(url: str) -> Any:
            data = None if body is None else orjson.dumps(body)
            headers = {**self.headers(), "Content-Type": "application/json"}
            async with self.session.request(
                method, url + path, data=data, params=params, headers=headers
            ) as resp:
                raw = await resp.read()
                status = resp.status
            doc = _json(raw)
            if status in ok:
                return doc
            code = _code(doc)
            if code in accept_codes:
                return doc
            if status == 410 and code == "snapshot_required":
                raise SnapshotRequired(f"shard {shard}: {method} {path}: {raw[:300]!r}")
            if code == "not_leader" or status >= 500:
                raise _Retry(f"{url} answered {status} {code}")
            raise MoveError(f"shard {shard}: {method} {path} answered {status}: {raw[:300]!r}")

        return await self._retrying(shard, attempt, f"{method} {path}")

    async def export(
        self, shard: int, collection: str, slots: str
    ) -> tuple[int, AsyncIterator[list[dict[str, Any]]]]:
        """Open an export at the leader: its cut seq, then its items in batches. A stream
        that ends without its end line raises (the caller exports again)."""
        holder: dict[str, Any] = {}

        async def attempt(url: str) -> None:
            resp = await self.session.get(
                url + "/v1/admin/slots/export",
                params={"collection": collection, "slots": slots},
                headers=self.headers(),
            )
            if resp.status != 200:
                raw = await resp.read()
                resp.release()
                code = _code(_json(raw))
                if code == "not_leader" or resp.status >= 500:
                    raise _Retry(f"{url} answered {resp.status} {code}")
                raise MoveError(f"shard {shard}: export {collection} answered {resp.status}")
            first = orjson.loads(await resp.content.readline())
            holder["resp"], holder["seq"] = resp, int(first["seq"])

        await self._retrying(shard, attempt, f"export {collection}")
        resp: aiohttp.ClientResponse = holder["resp"]

        async def batches() -> AsyncIterator[list[dict[str, Any]]]:
            batch: list[dict[str, Any]] = []
            try:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    doc = orjson.loads(line)
                    if doc.get("end"):
                        if batch:
                            yield batch
                        return
                    batch.append(doc)
                    if len(batch) >= APPLY_BATCH:
                        yield batch
                        batch = []
                raise _CutShort(f"shard {shard}: the export of {collection} was cut short")
            finally:
                resp.release()

        return holder["seq"], batches()


class _Retry(Exception):
    """Send the call again (to the leader found then)."""


class _CutShort(Exception):
    """An export stream ended without its end line."""


class _Mover:
    def __init__(
        self,
        move: Move,
        nodes: _Nodes,
        map_version: int,
        on_progress: Callable[[Progress], Awaitable[None]],
    ) -> None:
        self.move = move
        self.nodes = nodes
        self.map_version = map_version
        self.on_progress = on_progress
        self.slots = move.texts()
        self.progress = Progress("copy", "fence-target")

    async def report(self, **changes: Any) -> None:
        self.progress = replace(self.progress, **changes)
        await self.on_progress(self.progress)

    async def fence(self, shard: int, fenced: bool, **extra: Any) -> int:
        answer = await self.nodes.call(
            shard,
            "POST",
            "/v1/admin/slots/fence",
            body={"slots": self.slots, "fenced": fenced, **extra},
        )
        return int(answer["seq"])

    async def copy(self) -> None:
        """Steps 1-7: afterwards the target holds exactly what the source acknowledged for the
        slots, the source refuses writes for them, and the target takes them."""
        move = self.move
        await self.report(phase="copy", step="fence-target")
        await self.fence(move.target, True)
        for attempt in range(COPY_ATTEMPTS):
            try:
                # What an earlier attempt copied may since have been deleted at the source
                # before the new cut: the target (not yet the owner) starts empty for S.
                await self.report(step="clear-target")
                await self.nodes.call(
                    move.target, "POST", "/v1/admin/slots/purge", body={"slots": self.slots}
                )
                cuts = await self.copy_collections()
                await self.report(step="catch-up")
                if cuts:
                    from_seq = min(cuts.values()) + 1
                else:  # nothing to export: the log from now on is all there is
                    status = await self.nodes.call(move.source, "GET", "/v1/status")
                    from_seq = int(status.get("applied_seq", 0)) + 1
                for _ in range(CATCH_UP_ROUNDS):
                    from_seq, lag = await self.replay(from_seq, until=None, cuts=cuts)
                    if lag < SMALL_LAG:
                        break
                await self.report(step="fence-source")
                fence_seq = await self.fence(
                    move.source, True, owner=move.target, map_version=self.map_version
                )
                await self.report(step="final-catch-up")
                await self.replay(from_seq, until=fence_seq, cuts=cuts)
                break
            except SnapshotRequired:
                if attempt + 1 == COPY_ATTEMPTS:
                    raise
                log.warning("move %s: the source's log moved on; copying again", self.slots)
        await self.report(step="unfence-target")
        await self.fence(move.target, False)
        await self.report(phase="publish", step="publish", lag=0)

    async def collections(self) -> list[dict[str, Any]]:
        listed = await self.nodes.call(self.move.source, "GET", "/v1/collections")
        items = listed.get("collections", listed) if isinstance(listed, dict) else listed
        return [c for c in items if isinstance(c, dict) and "name" in c]

    async def ensure_collections(self) -> list[str]:
        """Step 2: the source's collections at the target, same configuration (idempotent)."""
        names = []
        for config in await self.collections():
            body = {k: config[k] for k in ("name", "dimension", "metric", "hnsw") if k in config}
            await self.nodes.call(
                self.move.target,
                "POST",
                "/v1/collections",
                body=body,
                accept_codes=("collection_exists",),
            )
            names.append(str(config["name"]))
        return names

    async def copy_collections(self) -> dict[str, int]:
        """Steps 2-3; the export's cut seq per collection."""
        await self.report(step="collections")
        cuts: dict[str, int] = {}
        for name in await self.ensure_collections():
            await self.report(step=f"export {name}")
            for tries in range(3):
                seq, batches = await self.nodes.export(self.move.source, name, ",".join(self.slots))
                try:
                    await self.import_batches(name, batches)
                    cuts[name] = seq
                    break
                except (_CutShort, aiohttp.ClientError, TimeoutError) as exc:
                    if tries == 2:
                        raise MoveError(f"exporting {name}: {exc!r}") from exc
                    log.warning("move %s: export of %s broke (%r); again", self.slots, name, exc)
        return cuts

    async def import_batches(
        self, collection: str, batches: AsyncIterator[list[dict[str, Any]]]
    ) -> None:
        """Apply an export's batches, ``APPLY_PARALLEL`` at a time while the next is read (an
        export names each id once, so their order does not matter)."""
        running: set[asyncio.Task[int]] = set()

        async def one(batch: list[dict[str, Any]]) -> int:
            await self.apply(collection, batch, [])
            return len(batch)

        async def settle() -> None:
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                running.discard(task)
                await self.report(items_copied=self.progress.items_copied + task.result())

        try:
            async for batch in batches:
                while len(running) >= APPLY_PARALLEL:
                    await settle()
                running.add(asyncio.create_task(one(batch)))
            while running:
                await settle()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def apply(
        self, collection: str, upserts: list[dict[str, Any]], deletes: list[str]
    ) -> None:
        for start in range(0, max(len(upserts), 1), APPLY_BATCH):
            part = upserts[start : start + APPLY_BATCH]
            last = start + APPLY_BATCH >= len(upserts)
            if not part and not (last and deletes):
                continue
            body = {"collection": collection, "upserts": part, "deletes": deletes if last else []}
            await self.nodes.call(self.move.target, "POST", "/v1/admin/slots/apply", body=body)

    async def replay(
        self, from_seq: int, *, until: int | None, cuts: Mapping[str, int]
    ) -> tuple[int, int]:
        """Apply the source's slot log from ``from_seq`` to the target in order, up to
        ``until``, or (None) up to the commit seq seen at the first read, so that a round ends
        even under a writer faster than the replay. Returns where to go on and the lag left."""
        source = self.move.source
        bound = until
        while True:
            page = await self.nodes.call(
                source,
                "GET",
                "/v1/admin/slots/log",
                params={
                    "slots": ",".join(self.slots),
                    "from_seq": str(from_seq),
                    "limit": str(LOG_LIMIT),
                },
            )
            ops = [op for op in page["ops"] if int(op["seq"]) > cuts.get(op["collection"], 0)]
            await self.apply_ops(ops)
            next_seq, commit = int(page["next_seq"]), int(page["commit_seq"])
            lag = max(0, commit - next_seq + 1)
            await self.report(ops_replayed=self.progress.ops_replayed + len(ops), lag=lag)
            if bound is None:
                bound = commit
            if next_seq > bound:
                return next_seq, lag
            if next_seq == from_seq:
                await asyncio.sleep(0.05)  # not committed as far as the bound yet
            from_seq = next_seq

    async def apply_ops(self, ops: Sequence[Mapping[str, Any]]) -> None:
        """Ops in log order, as one import per collection: an id's last op decides (an
        upsert's item or a delete), which is what applying them one by one would leave."""
        last: dict[str, dict[str, dict[str, Any] | None]] = {}
        for op in ops:
            ids = last.setdefault(str(op["collection"]), {})
            if op["op"] == "upsert":
                for item in op["items"]:
                    ids.pop(item["id"], None)  # keep the order of last writes
                    ids[item["id"]] = item
            else:
                for item_id in op["ids"]:
                    ids.pop(item_id, None)
                    ids[item_id] = None
        for collection, ids in last.items():
            upserts = [item for item in ids.values() if item is not None]
            deletes = [item_id for item_id, item in ids.items() if item is None]
            await self.apply_to_existing(collection, upserts, deletes)

    async def apply_to_existing(
        self, collection: str, upserts: list[dict[str, Any]], deletes: list[str]
    ) -> None:
        """Apply; a collection created at the source since step 2 is created first, one
        dropped since is skipped."""
        try:
            await self.apply(collection, upserts, deletes)
        except MoveError as exc:
            if "collection_not_found" not in str(exc):
                raise
            if collection not in await self.ensure_collections():
                return
            await self.apply(collection, upserts, deletes)

    async def purge(self) -> None:
        """Step 9: the source's copies of the moved slots go (its fence stays)."""
        await self.report(phase="purge", step="purge", lag=0)
        await self.nodes.call(
            self.move.source, "POST", "/v1/admin/slots/purge", body={"slots": self.slots}
        )
        await self.report(phase="done", step="done")


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _code(doc: Any) -> str | None:
    error = doc.get("error") if isinstance(doc, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
