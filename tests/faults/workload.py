"""The clients: concurrent writers and readers that record every operation in the history.

Writers upsert one record per request with a unique id and ``ack=leader|one|quorum``, sent to
the member labelled leader (what the read-write Service selects; a quarter go to any member, as
from a client with a stale view). Readers use ``eventual`` on any member, ``strong`` on the
labelled leader (the same quarter elsewhere), and ``min_seq`` (+ ``min_epoch``) with the token
of a write that was acknowledged, on any member. Each record carries metadata ``{"t": tag,
"i": id}``: a filter on ``t`` lists the whole collection (under the node's brute-force limit, so
exactly), a filter on ``i`` finds one record. Clients bind ``CLIENT_IP`` so that a cut between
the operator and a node leaves them alone.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from . import network
from .history import FAIL, INFO, OK, READ, WRITE, History, Op, Outcome, complete

DIM = 4
TAG = "fz"
WRITE_TIMEOUT = 2.5
READ_TIMEOUT = 1.5
WRITE_PAUSE = 0.02
STALE_CLIENTS = 0.25  # share of leader-bound requests sent to any member instead
MAX_RECORDS = 900  # under the node's max_k, so one read lists everything
DEFINITE_REFUSALS = frozenset({"not_leader", "invalid", "bad_request", "collection_not_found"})


def classify(status: int, code: str | None) -> Outcome:
    """A write's outcome from its answer: only a refusal before the log is a ``fail``."""
    if 200 <= status < 300:
        return OK
    if status in (400, 404, 413, 422):
        return FAIL
    if status == 409 and code == "not_leader":
        return FAIL
    if status == 507 and code == "disk_full":
        return FAIL  # the failed append is cut back before anything is answered
    return INFO  # 503 ack_timeout, 409 leadership_lost, 500: it may be in the log


def vector_of(record: str) -> list[float]:
    rng = random.Random(record)
    return [rng.uniform(-1.0, 1.0) for _ in range(DIM)]


async def _headers_sent(
    _session: aiohttp.ClientSession, context: Any, _params: aiohttp.TraceRequestHeadersSentParams
) -> None:
    if isinstance(context.trace_request_ctx, dict):
        context.trace_request_ctx["sent"] = True


def session() -> aiohttp.ClientSession:
    """A session whose requests say whether they left (``trace_request_ctx={}`` gets ``sent``).

    aiohttp resends an idempotent request (PUT) once when its connection breaks, so the
    resend's "connection refused" does not prove the first attempt never reached the node:
    only a request whose headers were never sent is certainly not applied. One connection per
    request, and no resend where the session lets it be turned off.
    """
    connector = aiohttp.TCPConnector(local_addr=(network.CLIENT_IP, 0), limit=0, force_close=True)
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(_headers_sent)
    http = aiohttp.ClientSession(connector=connector, trace_configs=[trace])
    if hasattr(http, "_retry_connection"):
        http._retry_connection = False
    return http


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any,
    seconds: float,
    trace: dict[str, bool] | None = None,
) -> tuple[int, Any]:
    """(status, JSON body) of one request that gives up after ``seconds``."""
    async with http.request(
        method,
        url,
        json=body,
        timeout=aiohttp.ClientTimeout(total=seconds),
        trace_request_ctx=trace,
    ) as resp:
        try:
            payload = await resp.json(content_type=None)
        except ValueError:
            payload = None
        return resp.status, payload


def error_code(payload: Any) -> str | None:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        return str(payload["error"].get("code"))
    return None


class Workload:
    """Writers and readers for one trial; ``run`` returns when ``duration`` has passed."""

    def __init__(
        self,
        *,
        history: History,
        members: Sequence[tuple[str, str]],
        leader: Callable[[], str | None],
        collection: str,
        seed: int,
        t0: float,
    ) -> None:
        self.history = history
        self.urls = dict(members)
        self.leader = leader
        self.collection = collection
        self.rng = random.Random(seed)
        self.t0 = t0
        self.acked: list[Op] = []
        self.written = 0
        self.http: aiohttp.ClientSession | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _leader_or_any(self) -> str:
        """The labelled leader, but now and then any member: a client whose view is stale
        (Jepsen's clients talk to every node) is how a deposed leader gets asked at all."""
        name = self.leader()
        if name in self.urls and self.rng.random() >= STALE_CLIENTS:
            return name
        return self.rng.choice(sorted(self.urls))

    async def run(self, duration: float, *, writers: int = 3, readers: int = 2) -> None:
        async with session() as http:
            self.http = http
            deadline = self.t0 + duration
            tasks = [self._writer(f"w{i}", deadline) for i in range(writers)]
            tasks += [self._reader(f"r{i}", deadline) for i in range(readers)]
            await asyncio.gather(*tasks)

    async def _writer(self, process: str, deadline: float) -> None:
        n = 0
        while time.monotonic() < deadline and self.written < MAX_RECORDS:
            n += 1
            self.written += 1
            record = f"{self.collection}-{process}-{n}"
            ack = self.rng.choice(("leader", "one", "one", "quorum", "quorum"))
            node = self._leader_or_any()
            op = self.history.invoke(Op(process, WRITE, self.now(), node=node, id=record, ack=ack))
            body = {
                "vectors": [
                    {"id": record, "vector": vector_of(record), "metadata": {"t": TAG, "i": record}}
                ],
                "ack": ack,
            }
            await self._write(op, node, body)
            # Paced so that faults, not the record cap, end a trial's writes; slower after a
            # refusal or a doubt, so as not to spin on a dead leader.
            await asyncio.sleep(WRITE_PAUSE if op.type == OK else 0.05)

    async def _write(self, op: Op, node: str, body: dict[str, Any]) -> None:
        assert self.http is not None
        url = f"{self.urls[node]}/v1/collections/{self.collection}/vectors"
        trace: dict[str, bool] = {}
        try:
            status, payload = await call(self.http, "PUT", url, body, WRITE_TIMEOUT, trace)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # Refused before any attempt sent the request: certainly not applied.
            never_sent = isinstance(exc, aiohttp.ClientConnectorError) and not trace
            outcome: Outcome = FAIL if never_sent else INFO
            complete(op, outcome, self.now(), error=exc.__class__.__name__)
            return
        outcome = classify(status, error_code(payload))
        if outcome == OK and isinstance(payload, dict):
            seq, epoch = payload.get("seq"), payload.get("epoch")
            complete(
                op,
                OK,
                self.now(),
                seq=int(seq) if seq is not None else None,
                epoch=int(epoch) if epoch is not None else None,
            )
            self.acked.append(op)
        else:
            complete(op, outcome, self.now(), error=f"{status} {error_code(payload)}")

    async def _reader(self, process: str, deadline: float) -> None:
        while time.monotonic() < deadline:
            consistency = self.rng.choice(("eventual", "strong", "strong", "min_seq", "min_seq"))
            of = None
            body: dict[str, Any] = {"vector": [0.0] * DIM, "k": 1000, "filter": {"t": TAG}}
            if consistency == "min_seq":
                tokens = [w for w in self.acked[-30:] if w.seq is not None]
                if not tokens:
                    consistency = "eventual"
                else:
                    write = self.rng.choice(tokens)
                    of = write.id
                    body.update(k=1, filter={"i": write.id}, min_seq=write.seq)
                    if write.epoch is not None:
                        body["min_epoch"] = write.epoch
            body["consistency"] = consistency
            if consistency == "strong":
                node = self._leader_or_any()
            else:
                node = self.rng.choice(sorted(self.urls))
            op = self.history.invoke(
                Op(process, READ, self.now(), node=node, consistency=consistency, of=of)
            )
            await self._read(op, node, body)
            await asyncio.sleep(0.02 if op.type == OK else 0.1)

    async def _read(self, op: Op, node: str, body: dict[str, Any]) -> None:
        assert self.http is not None
        url = f"{self.urls[node]}/v1/collections/{self.collection}/search"
        try:
            status, payload = await call(self.http, "POST", url, body, READ_TIMEOUT)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            complete(op, INFO, self.now(), error=exc.__class__.__name__)
            return
        if status == 200 and isinstance(payload, dict):
            ids = [hit["id"] for row in payload.get("results", []) for hit in row]
            complete(op, OK, self.now(), ids=ids)
        else:
            refused: Outcome = FAIL if 400 <= status < 500 else INFO
            complete(op, refused, self.now(), error=f"{status} {error_code(payload)}")
