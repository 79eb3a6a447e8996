"""One trial: a healthy cluster, clients and nemesis for a few seconds, heal, converge, check.

A trial starts from a fresh cluster (empty disks, bootstrap by the operator) when it is the
first, when it is replayed (``DVECDB_FAULT_SEED``), or when the trial before it did not end
healthy and valid; otherwise it reuses the converged cluster of the trial before with a new
collection, which keeps a trial near the length of its workload. Everything a trial learns
comes back as a ``TrialResult``; the history of a failed trial is written next to the logs.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .checker import Result, check
from .cluster import PORT, TOKEN, Cluster, root
from .history import ADMIN, INFO, OK, History, Op, Outcome, Replica
from .nemesis import Mode, Nemesis, plan
from .operator_driver import OperatorDriver
from .workload import DIM, TAG, Workload, call, session

WORKLOAD_SECONDS = 4.0
DETECTION_SECONDS = 1
LEASE_SECONDS = 0.5
CONVERGE_SECONDS = 15.0
# How long a member is asked for its records after convergence (it may still be rebuilding).
READ_SECONDS = 30.0


@dataclass
class TrialResult:
    seed: int
    mode: Mode
    fresh: bool
    seconds: float
    result: Result
    converged: bool
    failovers: int = 0  # epoch changes during the trial (by the operator's status)
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.result.valid


class Runner:
    """Runs trials on one cluster; keeps the operator and nodes between healthy trials."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.driver: OperatorDriver | None = None
        self.reusable = False
        self.trials = 0

    async def close(self) -> None:
        if self.driver is not None:
            await self.driver.close()
            self.driver = None
        self.cluster.stop_all()

    def _members(self) -> list[tuple[str, str]]:
        return [(n.name, n.url) for n in self.cluster.nodes]

    async def _fresh(self) -> None:
        if self.driver is not None:
            await self.driver.close()
        self.cluster.reset()
        for node in self.cluster.nodes:
            node.start()
        async with session() as http:
            await _until(lambda: _all_answer(http, self._members()), "nodes to start", 60)
        self.driver = OperatorDriver(
            pods=[(n.name, n.ip, PORT) for n in self.cluster.nodes],
            token=TOKEN,
            detection_seconds=DETECTION_SECONDS,
            lease_seconds=LEASE_SECONDS,
        )
        self.driver.start()

    async def _prepare(self, collection: str, *, fresh: bool) -> OperatorDriver:
        """A healthy cluster (fresh if asked) holding an empty ``collection`` on every member."""
        if fresh:
            await self._fresh()
        driver = self.driver
        assert driver is not None
        async with session() as http:
            await _until(lambda: _healthy(http, driver, self._members()), "a healthy cluster", 30)
            await _create(http, driver, self._members(), collection)
            await _until(lambda: _healthy(http, driver, self._members()), "the collection", 30)
        return driver

    async def run(self, seed: int, *, force_fresh: bool = False) -> TrialResult:
        started = time.monotonic()
        rng = random.Random(seed)
        mode: Mode = "one" if rng.random() < 0.5 else "quorum"
        fresh = force_fresh or not self.reusable or self.driver is None
        self.reusable = False
        collection = f"c{seed}"
        try:
            driver = await self._prepare(collection, fresh=fresh)
        except TimeoutError:
            if fresh:
                raise
            fresh = True  # a reused cluster that did not come back: start from nothing
            driver = await self._prepare(collection, fresh=True)
        self.trials += 1

        history = History()
        epoch_before = int(driver.status.get("epoch") or 0)
        t0 = time.monotonic()

        def told(command: str, member: str, epoch: int, at: float, end: float, ok: bool) -> None:
            outcome: Outcome = OK if ok else INFO
            history.invoke(
                Op("operator", ADMIN, at - t0, end - t0, outcome, node=member, kind=command,
                   epoch=epoch)
            )  # fmt: skip

        driver.admin_recorder = told
        steps = plan(seed, duration=WORKLOAD_SECONDS, mode=mode, detection=DETECTION_SECONDS)
        nemesis = Nemesis(self.cluster, driver, history, t0)
        workload = Workload(
            history=history,
            members=self._members(),
            leader=driver.leader_label,
            collection=collection,
            seed=seed,
            t0=t0,
        )
        try:
            await asyncio.gather(workload.run(WORKLOAD_SECONDS), nemesis.run(steps))
        finally:
            driver.admin_recorder = None

        self._heal_all()
        notes: list[str] = []
        async with session() as http:
            converged = await _converge(http, driver, self._members())
            if not converged:
                notes.append(f"not converged in {CONVERGE_SECONDS}s: {driver.status.get('phase')}")
            final = await _final(http, self._members(), collection)
        result = check(history.ops, final)
        if not result.valid or not converged:
            path = root() / f"history-{seed}.json"
            history.dump(path, final)
            notes.append(f"history: {path}")
            for node in self.cluster.nodes:
                (root() / f"trial-{seed}-{node.name}.log").write_text(node.log_tail(20000))
        self.reusable = result.valid and converged
        failovers = int(driver.status.get("epoch") or 0) - epoch_before
        seconds = time.monotonic() - started
        return TrialResult(seed, mode, fresh, seconds, result, converged, failovers, notes)

    def _heal_all(self) -> None:
        assert self.driver is not None
        self.cluster.net.heal()
        for node in self.cluster.nodes:
            node.free_disk()
            if node.paused:
                node.resume()
            if not node.running:
                node.start()
                self.driver.pod_started(node.name)


async def _until(check: Any, what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _status(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        status, body = await call(http, "GET", f"{url}/v1/status", None, 1.0)
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None
    return body if status == 200 and isinstance(body, dict) else None


async def _all_answer(http: aiohttp.ClientSession, members: list[tuple[str, str]]) -> bool:
    answers = await asyncio.gather(*(_status(http, url) for _, url in members))
    return all(a is not None for a in answers)


async def _healthy(
    http: aiohttp.ClientSession, driver: OperatorDriver, members: list[tuple[str, str]]
) -> bool:
    """The operator says Healthy and every member holds the leader's position."""
    status = driver.status
    if status.get("phase") != "Healthy" or driver.leader_label() != status.get("leader"):
        return False
    answers = await asyncio.gather(*(_status(http, url) for _, url in members))
    if any(a is None for a in answers):
        return False
    leaders = [a for a in answers if a and a.get("role") == "leader"]
    if len(leaders) != 1:
        return False
    target = leaders[0].get("last_seq")
    return all(
        a is not None and a.get("last_seq") == target and a.get("applied_seq") == target
        for a in answers
    )


async def _converge(
    http: aiohttp.ClientSession, driver: OperatorDriver, members: list[tuple[str, str]]
) -> bool:
    try:
        await _until(lambda: _healthy(http, driver, members), "convergence", CONVERGE_SECONDS)
    except TimeoutError:
        return False
    return True


async def _create(
    http: aiohttp.ClientSession,
    driver: OperatorDriver,
    members: list[tuple[str, str]],
    collection: str,
) -> None:
    urls = dict(members)
    body = {"name": collection, "dimension": DIM, "metric": "l2"}
    deadline = time.monotonic() + 20
    while True:
        leader = driver.leader_label()
        if leader is not None:
            try:
                status, _ = await call(http, "POST", f"{urls[leader]}/v1/collections", body, 3.0)
                if status in (200, 201, 409):
                    probe = await call(
                        http, "GET", f"{urls[leader]}/v1/collections/{collection}", None, 3.0
                    )
                    if probe[0] == 200:
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"could not create {collection}")
        await asyncio.sleep(0.1)


async def _read_records(
    http: aiohttp.ClientSession, url: str, collection: str
) -> tuple[frozenset[str] | None, int | None]:
    """A member's records and count, retried for up to READ_SECONDS: a member that answers
    503 (still rebuilding its state after a cut-back, say) is asked again, not counted as
    unreadable at once. None where it never answered."""
    deadline = time.monotonic() + READ_SECONDS
    body = {"vector": [0.0] * DIM, "k": 1000, "filter": {"t": TAG}}
    while True:
        try:
            status, found = await call(
                http, "POST", f"{url}/v1/collections/{collection}/search", body, 3.0
            )
            if status == 200:
                ids = frozenset(hit["id"] for row in found["results"] for hit in row)
                status, described = await call(
                    http, "GET", f"{url}/v1/collections/{collection}", None, 3.0
                )
                return ids, int(described.get("count", 0)) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            return None, None
        await asyncio.sleep(0.25)


async def _final(
    http: aiohttp.ClientSession, members: list[tuple[str, str]], collection: str
) -> dict[str, Replica]:
    """Each member's records, position and role, read after healing."""
    out = {}
    for name, url in members:
        ids, count = await _read_records(http, url, collection)
        node = await _status(http, url)
        out[name] = Replica(
            ids=ids,
            last_seq=int((node or {}).get("last_seq") or 0),
            epoch=int((node or {}).get("epoch") or 0),
            role=(node or {}).get("role"),
            count=count,
        )
    return out
