"""The shards as the router sees them, and the sending of requests to their members.

Each shard is a list of member URLs. A poller asks every member for ``/v1/status`` and
``/readyz`` each ``poll_seconds``; between polls the answers themselves teach the router (a
``not_leader`` answer names the leader, a failure counts towards opening a member's circuit).
Writes and leader reads retry at the new leader while a shard fails over, up to
``leader_wait_seconds``; every write the router sends is idempotent (an upsert of the same
vector, a delete, a create or drop that tolerates "already so"), so a retry after a lost
answer is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from dvecdb_client.slots import SlotMap
from dvecdb_router.config import FileSource, ShardsConfig, TokenFile
from dvecdb_router.members import Member, leader_of, open_circuits, pick_reader
from dvecdb_router.metrics import RouterMetrics
from dvecdb_router.wire import Wire

log = logging.getLogger(__name__)

# The client's own `Authorization` header, set per request by the app: data calls carry it to
# the members, which check the key (API key, read-only key) as they do for direct clients.
# Tasks that `asyncio.gather` starts copy the context, so every shard's call sees it.
client_authorization: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "client_authorization", default=None
)

# While writes wait for a move's new map, the members file is read at most this often.
REFRESH_SECONDS = 0.02

# Node answers that mean "not here, not now": wait and retry at the (new) leader.
RETRY_CODES = frozenset(
    {"not_leader", "recovering", "lease_expired", "leadership_lost", "shutting_down", "not_ready"}
)


@dataclass(frozen=True, slots=True)
class Call:
    """One request, as sent to whichever member serves it."""

    method: str
    path: str
    body: bytes | None = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: bytes
    member: str

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def code(self) -> str | None:
        """The node's error code, if the answer is an error body."""
        if self.status < 400:
            return None
        try:
            error = orjson.loads(self.body).get("error", {})
        except (orjson.JSONDecodeError, AttributeError):
            return None
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) else None


class ShardUnavailable(Exception):
    """No member of the shard could serve the request."""

    def __init__(self, shard: int, reason: str) -> None:
        super().__init__(f"shard {shard}: {reason}")
        self.shard = shard
        self.reason = reason


class Cluster:
    def __init__(
        self,
        shards: Sequence[Sequence[str]],
        *,
        cluster_token: str | TokenFile | None = None,
        request_timeout: float = 30.0,
        leader_wait_seconds: float = 10.0,
        poll_seconds: float = 1.0,
        metrics: RouterMetrics | None = None,
        ssl_context: ssl.SSLContext | None = None,
        source: FileSource | None = None,
        slot_map: SlotMap | None = None,
        moved_retry_seconds: float = 15.0,
    ) -> None:
        # For https members: trusts the cluster's CA (None: the system's CAs).
        self.ssl_context = ssl_context
        # Members from a file kept current by the operator: a shard may be empty for a
        # while (its pods have no address yet); given on the command line, none may be.
        self.source = source
        if not shards or (source is None and any(not urls for urls in shards)):
            raise ValueError("every shard needs at least one member URL")
        self.shards = [[Member(url.rstrip("/")) for url in urls] for urls in shards]
        if slot_map is None and source is not None and source.current is not None:
            slot_map = source.current.slot_map
        self._slot_map = slot_map or SlotMap.even(len(self.shards))
        self._owning = sorted(set(self._slot_map.owners))
        if self.slot_map.shards > len(self.shards):
            raise ValueError(f"the slot map needs {self.slot_map.shards} shards")
        # How long a write refused `slot_moved` (its slots are being handed over) is retried.
        self.moved_retry_seconds = moved_retry_seconds
        self.cluster_token = cluster_token
        self.request_timeout = request_timeout
        self.leader_wait_seconds = leader_wait_seconds
        self.poll_seconds = poll_seconds
        self.metrics = metrics or RouterMetrics()
        self._session: aiohttp.ClientSession | None = None  # polls
        self._wire: Wire | None = None  # data and admin calls (:mod:`.wire`)
        self._poller: asyncio.Task[None] | None = None
        self.polled = asyncio.Event()  # set after the first full poll
        # Set (and replaced) when the file brings a new map or members: wakes waiting writes.
        self._map_changed = asyncio.Event()
        self._refreshed_at = 0.0
        self.metrics.map_version.set(self.slot_map.version)

    @property
    def slot_map(self) -> SlotMap:
        return self._slot_map

    @slot_map.setter
    def slot_map(self, slot_map: SlotMap) -> None:
        self._slot_map = slot_map
        self._owning = sorted(set(slot_map.owners))

    # ------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=64, ssl=True if self.ssl_context is None else self.ssl_context
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.request_timeout)
        )
        self._wire = Wire(self.ssl_context, self.request_timeout)
        await self.poll()
        self._poller = asyncio.create_task(self._poll_forever(), name="router poller")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._session is not None:
            await self._session.close()
        if self._wire is not None:
            await self._wire.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the cluster is not started")
        return self._session

    @property
    def wire(self) -> Wire:
        if self._wire is None:
            raise RuntimeError("the cluster is not started")
        return self._wire

    # --------------------------------------------------------------- polling
    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                await self.poll()
            except Exception:  # one bad poll must not stop the next
                log.exception("polling the members failed")

    def reconfigure(self, config: ShardsConfig) -> bool:
        """Take the file's slot map and member URLs per shard (more or fewer shards after a
        resharding move), keeping what was learnt of members that stay; False (nothing
        changed) when its map is older than the one the router follows."""
        if config.version < self.slot_map.version:
            log.warning(
                "the members file's slot map version %d is older than the router's %d: ignored",
                config.version,
                self.slot_map.version,
            )
            return False
        old = self.shards
        shards: list[list[Member]] = []
        for index, urls in enumerate(config.shards):
            known = {m.url: m for m in old[index]} if index < len(old) else {}
            shards.append([known.get(url) or Member(url) for url in urls])
        self.shards = shards
        if self._wire is not None:
            self._wire.forget({m.url for members in shards for m in members})
        if config.slot_map != self.slot_map:
            log.info(
                "slot map version %d: %s",
                config.version,
                [list(r) for r in config.slot_map.owner_ranges()],
            )
        self.slot_map = config.slot_map
        self.metrics.map_version.set(self.slot_map.version)
        self._map_changed.set()
        self._map_changed = asyncio.Event()
        return True

    def owning_shards(self) -> list[int]:
        """Shards the map gives slots to: reads and readiness need only them. (Collections
        are created and dropped on every listed shard, so a group is ready to take slots.)
        Kept with the map: every search asks, and a set of 4,096 owners is not free."""
        return list(self._owning)

    def map_and_owners(self) -> tuple[SlotMap, list[int]]:
        """The map and its owning shards, read together (a search keeps one map)."""
        return self._slot_map, self._owning

    def refresh(self) -> bool:
        """Re-read the members file now (a write was refused because its slots moved), at
        most every ``REFRESH_SECONDS`` however many writes wait; True when a newer map or
        other members were taken."""
        now = time.monotonic()
        if self.source is None or now - self._refreshed_at < REFRESH_SECONDS:
            return False
        self._refreshed_at = now
        changed = self.source.read()
        return changed is not None and self.reconfigure(changed)

    async def wait_map_change(self, seconds: float) -> None:
        """Sleep up to ``seconds`` (a write's backoff), waking as soon as the members file
        brings a new map: a write refused ``slot_moved`` goes on right after the publish."""
        event = self._map_changed
        deadline = time.monotonic() + seconds
        while not event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.refresh()
            if event.is_set():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, REFRESH_SECONDS)):
                    await event.wait()

    async def poll(self, shard: int | None = None) -> None:
        """Refresh every member's role, epoch and readiness (of one shard, if given)."""
        if shard is None and self.source is not None:
            changed = self.source.read()
            if changed is not None and self.reconfigure(changed):
                log.info("members now %s", [[m.url for m in members] for members in self.shards])
        groups = self.shards if shard is None else [self.shards[shard]]
        await asyncio.gather(*(self._poll_member(m) for members in groups for m in members))
        now = time.monotonic()
        self.metrics.open_circuits.set(sum(open_circuits(s, now) for s in self.shards))
        self.metrics.leaders.set(sum(leader_of(s, now) is not None for s in self.shards))
        self.polled.set()

    def _headers(self) -> dict[str, str]:
        token = self.cluster_token
        if isinstance(token, TokenFile):
            token = token.current()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _poll_member(self, member: Member) -> None:
        timeout = aiohttp.ClientTimeout(total=max(0.5, self.poll_seconds))
        try:
            async with self.session.get(
                member.url + "/v1/status", headers=self._headers(), timeout=timeout
            ) as resp:
                status = orjson.loads(await resp.read()) if resp.status == 200 else {}
            async with self.session.get(member.url + "/readyz", timeout=timeout) as resp:
                member.ready = resp.status == 200
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            member.ready = False
            member.role = "unknown"
            return
        member.role = str(status.get("role", "unknown"))
        epoch = status.get("epoch")
        member.epoch = epoch if isinstance(epoch, int) else 0

    # --------------------------------------------------------------- sending
    async def send(self, member: Member, call: Call) -> Answer:
        """One request to one member; failures (no answer, 5xx) count towards its circuit."""
        started = time.monotonic()
        member.in_flight += 1
        headers = call.headers
        authorization = client_authorization.get()
        if authorization is not None:
            headers = {**(headers or {}), "Authorization": authorization}
        try:
            status, data = await self.wire.request(
                member.url, call.method, call.path, call.body, call.params, headers
            )
            answer = Answer(status, data, member.url)
        except (aiohttp.ClientError, TimeoutError) as exc:
            member.ready = False
            if member.failed(time.monotonic()):
                log.warning("circuit opened for %s: %s", member.url, exc)
            raise
        finally:
            member.in_flight -= 1
        if answer.status >= 500 and answer.code not in RETRY_CODES:
            member.failed(time.monotonic())
        else:
            member.answered(time.monotonic() - started)
        return answer

    def _learn_leader(self, shard: int, answer: Answer) -> None:
        """A ``not_leader`` answer: the sender is not leader; the URL it names may be."""
        members = self.shards[shard]
        for member in members:
            if member.url == answer.member:
                member.role = "follower"
        try:
            named = answer.json().get("error", {}).get("leader")
        except (orjson.JSONDecodeError, AttributeError):
            named = None
        if isinstance(named, str):
            for member in members:
                if member.url == named.rstrip("/"):
                    member.role = "leader"

    async def to_leader(self, shard: int, call: Call) -> Answer:
        """Send to the shard's leader, following it across a failover (see the docstring)."""
        deadline = time.monotonic() + self.leader_wait_seconds
        delay = 0.05
        reason = "no member reports itself leader"
        while True:
            leader = leader_of(self.shards[shard], time.monotonic())
            if leader is not None:
                try:
                    answer = await self.send(leader, call)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    reason = f"leader {leader.url} did not answer: {exc}"
                    leader.role = "unknown"
                    self.metrics.retries.labels("leader_unreachable").inc()
                else:
                    code = answer.code
                    if code not in RETRY_CODES:
                        return answer
                    reason = f"{leader.url} answered {answer.status} {code}"
                    if code == "not_leader":
                        self._learn_leader(shard, answer)
                    self.metrics.retries.labels(code or "retry").inc()
                    if code == "not_leader" and leader_of(self.shards[shard], time.monotonic()):
                        continue  # it named the new leader: go there now
            if time.monotonic() + delay > deadline:
                self.metrics.unavailable.labels(str(shard)).inc()
                raise ShardUnavailable(shard, reason)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
            await self.poll(shard)

    async def to_reader(self, shard: int, call: Call) -> Answer:
        """Send an eventual read to the best serving member; once more elsewhere on failure."""
        tried: set[str] = set()
        reason = "no member is ready"
        for _ in range(2):
            member = pick_reader(self.shards[shard], time.monotonic(), frozenset(tried))
            if member is None:
                break
            tried.add(member.url)
            try:
                answer = await self.send(member, call)
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = f"{member.url} did not answer: {exc}"
                self.metrics.retries.labels("member_unreachable").inc()
                continue
            if answer.status == 503:
                reason = f"{member.url} answered 503 {answer.code}"
                member.ready = False
                self.metrics.retries.labels(answer.code or "unavailable").inc()
                continue
            return answer
        self.metrics.unavailable.labels(str(shard)).inc()
        raise ShardUnavailable(shard, reason)

    def describe(self) -> list[dict[str, Any]]:
        """Per shard: its slot ranges and what the router last saw of each member."""
        now = time.monotonic()
        out = []
        for index, members in enumerate(self.shards):
            leader = leader_of(members, now)
            out.append(
                {
                    "shard": index,
                    "slots": [list(r) for r in self.slot_map.ranges(index)],
                    "leader": None if leader is None else leader.url,
                    "members": [
                        {
                            "url": m.url,
                            "role": m.role,
                            "epoch": m.epoch,
                            "ready": m.ready,
                            "circuit": "closed" if m.closed(now) else "open",
                            "in_flight": m.in_flight,
                            "latency_ms": round(m.latency * 1000, 3),
                        }
                        for m in members
                    ],
                }
            )
        return out
