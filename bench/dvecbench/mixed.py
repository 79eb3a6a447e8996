"""Search under a metadata filter and beside a writer: the mixed rows.

A server holds ``n`` clustered vectors with metadata ``{"g": i % 7}``. wrk (``connections``
connections, pinned as every search figure is) replays the held-out queries, with no filter
and with ``{"g": 3}`` (1/7 of the points), in three settings: nothing else running; a writer
upserting ``write_batch`` random existing ids back to back (unpaced), each vector moved by
Gaussian noise of ``move`` times the data's per-dimension spread (0.1: about 12% of the
median nearest-neighbour distance of the clustered set, a re-embedded, lightly edited
document; the same metadata); and the same writer paced at ``paced_vectors_per_second``.
Each row gives QPS, p50/p99 and the writer's achieved vectors/s; recall@10 of each search
kind against exact (filtered) search over the unmoved vectors is measured once, on the idle
server, and once with the unpaced writer on (the moves make that truth slightly stale, for
every server alike). Until 2026-11-30 the writer wrote the stored vectors back unchanged.

Any server that speaks :class:`MixedApi` can be measured: d-vecDB's node, and a peer.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dvecbench import wrk
from dvecbench.datasets import F32, I64, exact_knn, recall_at_k
from dvecbench.httpc import Client

GROUPS = 7
CHOSEN_GROUP = 3
SETTINGS = ("idle", "writes", "paced")
KINDS = ("plain", "filtered")


@dataclasses.dataclass(frozen=True)
class MixedConfig:
    connections: int = 4
    seconds: float = 10.0
    k: int = 10
    write_batch: int = 500
    paced_vectors_per_second: float = 2000.0
    recall_queries: int = 200
    move: float = 0.1
    warmup: float = 3.0


@dataclasses.dataclass(frozen=True)
class MixedApi:
    """How to search and write one server for these rows.

    ``search_body(query, k, group)``: one search body (``group`` None: no filter);
    ``search_ids(client, query, k, group)``: the ids it answers (the recall pass);
    ``upsert(client, ids, vectors, groups)``: one write of existing ids, returns when acked;
    ``delete(client, ids)``: one delete, returns when acked (None: the server's adapter has none).
    """

    name: str
    base_url: str
    search_path: str
    search_body: Callable[[F32, int, int | None], bytes]
    search_ids: Callable[[Client, F32, int, int | None], list[int]]
    upsert: Callable[[Client, list[int], F32, list[int]], None]
    delete: Callable[[Client, list[int]], None] | None = None


def groups_of(n: int) -> np.ndarray[Any, Any]:
    return np.arange(n) % GROUPS


def filtered_truth(base: F32, queries: F32, *, k: int) -> I64:
    """Exact top-k row indices among the rows of the chosen group."""
    rows = np.flatnonzero(groups_of(len(base)) == CHOSEN_GROUP)
    local = exact_knn(base[rows], queries, k=k, metric="l2")
    out: I64 = rows[local]
    return out


class Writer:
    """Upserts random existing ids in a thread until stopped, each vector moved a little
    (``move``), deleting them first with ``delete_first`` (churn: the soak); counts vectors
    acknowledged."""

    def __init__(
        self,
        api: MixedApi,
        base: F32,
        *,
        batch: int,
        per_second: float | None,
        move: float = 0.1,
        delete_first: bool = False,
        seed: int = 5,
    ) -> None:
        if delete_first and api.delete is None:
            raise ValueError(f"{api.name}'s adapter cannot delete")
        self.delete_first = delete_first
        self.api, self.base, self.batch, self.per_second = api, base, batch, per_second
        self.scale = move * float(base.std(axis=0).mean())  # noise per dimension
        self.rng = np.random.default_rng(seed)
        self.vectors = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{api.name}")
        self._seconds = 0.0

    def _run(self) -> None:
        client = Client(self.api.base_url)
        groups = groups_of(len(self.base))
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                ids = self.rng.choice(len(self.base), self.batch, replace=False)
                if self.delete_first and self.api.delete is not None:
                    self.api.delete(client, ids.tolist())
                noise = self.rng.normal(0.0, self.scale, (len(ids), self.base.shape[1]))
                moved = (self.base[ids] + noise).astype(np.float32)
                self.api.upsert(client, ids.tolist(), moved, groups[ids].tolist())
                self.vectors += len(ids)
                if self.per_second:
                    due = started + self.vectors / self.per_second
                    self._stop.wait(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # reported by stop(): a failed write voids the row
            self.error = exc
        finally:
            self._seconds = time.monotonic() - started
            client.close()

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    @property
    def rate(self) -> float:
        return self.vectors / self._seconds if self._seconds else 0.0


def _bodies(api: MixedApi, queries: F32, k: int, group: int | None, workdir: Path) -> Path:
    name = f"{api.name}-{'filtered' if group is not None else 'plain'}.bodies"
    return wrk.write_bodies(workdir / name, (api.search_body(q, k, group) for q in queries))


def _recall(api: MixedApi, queries: F32, truth: I64, *, k: int, group: int | None) -> float:
    client = Client(api.base_url)
    try:
        found = [api.search_ids(client, q, k, group) for q in queries]
    finally:
        client.close()
    return recall_at_k(found, truth, k=k)


def measure(
    api: MixedApi,
    base: F32,
    queries: F32,
    cfg: MixedConfig,
    *,
    cpus: frozenset[int] | None,
    progress: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Every mixed row for one server, keyed ``"<kind>_<setting>"`` (e.g. ``filtered_writes``)."""
    recall_q = queries[: cfg.recall_queries]
    truths = {
        "plain": exact_knn(base, recall_q, k=cfg.k, metric="l2"),
        "filtered": filtered_truth(base, recall_q, k=cfg.k),
    }
    group_of = {"plain": None, "filtered": CHOSEN_GROUP}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dvec-mixed-") as tmp:
        bodies = {kind: _bodies(api, queries, cfg.k, group_of[kind], Path(tmp)) for kind in KINDS}
        # Warm-up, as the main bench's phases have: caches, a server's lazily built
        # structures (d-vecDB's graph per filtered value, Qdrant's segment caches).
        for kind in KINDS:
            progress(f"  {api.name} warm-up, {kind}: {cfg.warmup:.0f} s of wrk")
            _wrk(api, bodies[kind], dataclasses.replace(cfg, seconds=cfg.warmup), cpus)
        for setting in SETTINGS:
            per_second = cfg.paced_vectors_per_second if setting == "paced" else None
            for kind in KINDS:
                key = f"{kind}_{setting}"
                progress(f"  {api.name} {key}: {cfg.seconds:.0f} s of wrk")
                if setting == "idle":
                    result = _wrk(api, bodies[kind], cfg, cpus)
                    row: dict[str, Any] = {**result.as_dict(), "writes_per_second": 0.0}
                else:
                    writer = Writer(
                        api, base, batch=cfg.write_batch, per_second=per_second, move=cfg.move
                    )
                    with writer:
                        time.sleep(0.5)  # the writer is under way before the clock starts
                        result = _wrk(api, bodies[kind], cfg, cpus)
                    if writer.error is not None:
                        raise RuntimeError(f"{api.name} writer failed: {writer.error}")
                    row = {**result.as_dict(), "writes_per_second": round(writer.rate, 1)}
                if setting in ("idle", "writes"):
                    if setting == "writes":
                        with Writer(
                            api, base, batch=cfg.write_batch, per_second=None, move=cfg.move
                        ):
                            row["recall"] = _recall(
                                api, recall_q, truths[kind], k=cfg.k, group=group_of[kind]
                            )
                    else:
                        row["recall"] = _recall(
                            api, recall_q, truths[kind], k=cfg.k, group=group_of[kind]
                        )
                rows[key] = row
    return rows


def _wrk(api: MixedApi, bodies: Path, cfg: MixedConfig, cpus: frozenset[int] | None) -> Any:
    return wrk.run(
        url=api.base_url + api.search_path,
        bodies=bodies,
        connections=cfg.connections,
        seconds=cfg.seconds,
        cpus=cpus,
    )


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown: one line per row, one column group per server."""
    servers = list(results)
    head = "| search | " + " | ".join(f"{s} QPS (p50 / p99 ms) · recall" for s in servers) + " |"
    lines = [head, "|---" * (len(servers) + 1) + "|"]
    for setting in SETTINGS:
        for kind in KINDS:
            key = f"{kind}_{setting}"
            cells = []
            for server in servers:
                row = results[server].get(key)
                if row is None:
                    cells.append("—")
                    continue
                recall = f" · {row['recall']:.3f}" if "recall" in row else ""
                writes = (
                    f" · writer {row['writes_per_second']:,.0f} vec/s"
                    if row["writes_per_second"]
                    else ""
                )
                cells.append(
                    f"{row['rps']:,.0f} ({row['p50_ms']:.2f} / {row['p99_ms']:.1f}){recall}{writes}"
                )
            lines.append(f"| {kind}, {setting} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def node_api(base_url: str, collection: str) -> MixedApi:
    """d-vecDB's node: JSON searches, binary bulk upserts (acknowledged by the leader)."""
    import orjson

    from dvecbench.httpc import HttpError
    from dvecdb_client.bulk import CONTENT_TYPE, encode_batch

    search_path = f"/v1/collections/{collection}/search"

    def body(query: F32, k: int, group: int | None) -> bytes:
        doc: dict[str, Any] = {"vector": query.tolist(), "k": k}
        if group is not None:
            doc["filter"] = {"g": group}
        return orjson.dumps(doc)

    def ids(client: Client, query: F32, k: int, group: int | None) -> list[int]:
        status, data = client.request("POST", search_path, body(query, k, group))
        if status != 200:
            raise HttpError("POST", search_path, status, data)
        return [int(hit["id"]) for hit in orjson.loads(data)["results"][0]]

    def upsert(client: Client, row_ids: list[int], vectors: F32, groups: list[int]) -> None:
        path = f"/v1/collections/{collection}/vectors?ack=leader"
        payload = encode_batch([str(i) for i in row_ids], vectors, [{"g": g} for g in groups])
        status, data = client.request("PUT", path, payload, content_type=CONTENT_TYPE)
        if status != 200:
            raise HttpError("PUT", path, status, data)

    def delete(client: Client, row_ids: list[int]) -> None:
        path = f"/v1/collections/{collection}/vectors/delete?ack=leader"
        client.json("POST", path, {"ids": [str(i) for i in row_ids]})

    return MixedApi("d-vecDB", base_url, search_path, body, ids, upsert, delete)


def qdrant_api(base_url: str, collection: str, *, ef: int) -> MixedApi:
    """Qdrant's REST API: payload-indexed ``g``, the same ef, upserts acknowledged once
    applied (``wait=true``, as the node's ``ack=leader``)."""
    import orjson

    from dvecbench.httpc import HttpError

    search_path = f"/collections/{collection}/points/search"

    def body(query: F32, k: int, group: int | None) -> bytes:
        doc: dict[str, Any] = {"vector": query.tolist(), "limit": k, "params": {"hnsw_ef": ef}}
        if group is not None:
            doc["filter"] = {"must": [{"key": "g", "match": {"value": group}}]}
        return orjson.dumps(doc)

    def ids(client: Client, query: F32, k: int, group: int | None) -> list[int]:
        status, data = client.request("POST", search_path, body(query, k, group))
        if status != 200:
            raise HttpError("POST", search_path, status, data)
        return [int(hit["id"]) for hit in orjson.loads(data)["result"]]

    def upsert(client: Client, row_ids: list[int], vectors: F32, groups: list[int]) -> None:
        path = f"/collections/{collection}/points?wait=true"
        payload = orjson.dumps(
            {
                "batch": {
                    "ids": row_ids,
                    "vectors": vectors.tolist(),
                    "payloads": [{"g": g} for g in groups],
                }
            }
        )
        status, data = client.request("PUT", path, payload)
        if status != 200:
            raise HttpError("PUT", path, status, data)

    return MixedApi("Qdrant", base_url, search_path, body, ids, upsert)


def goals(results: dict[str, dict[str, dict[str, Any]]]) -> list[tuple[str, bool]]:
    """The issue's goals for these rows, each with whether this run met it (pure)."""
    ours = results.get("d-vecDB", {})
    peer = results.get("Qdrant", {})
    out: list[tuple[str, bool]] = []

    def qps(rows: dict[str, dict[str, Any]], key: str) -> float | None:
        row = rows.get(key)
        return None if row is None else float(row["rps"])

    plain, filtered = qps(ours, "plain_idle"), qps(ours, "filtered_idle")
    if plain and filtered is not None:
        out.append(
            (f"filtered ≥ 0.5x unfiltered QPS ({filtered / plain:.2f}x)", filtered >= 0.5 * plain)
        )
    for kind in KINDS:
        idle = ours.get(f"{kind}_idle")
        for setting in ("writes", "paced"):
            row = ours.get(f"{kind}_{setting}")
            if idle and row:
                ratio = row["p99_ms"] / max(idle["p99_ms"], 1e-9)
                writer = "an unpaced" if setting == "writes" else "a paced"
                out.append(
                    (f"{kind} p99 beside {writer} writer ≤ 3x idle ({ratio:.1f}x)", ratio <= 3)
                )
    for setting in SETTINGS:
        for kind in KINDS:
            key = f"{kind}_{setting}"
            mine, theirs = qps(ours, key), qps(peer, key)
            if mine is not None and theirs:
                out.append((f"{kind}, {setting} ≥ Qdrant ({mine / theirs:.2f}x)", mine >= theirs))
    return out


def section(results: dict[str, dict[str, dict[str, Any]]], note: str = "") -> list[str]:
    """The mixed rows as a Markdown section of the bench report, goals included."""
    lines = [
        "",
        "## Search under a filter and beside a writer (same run, same cores)",
        "",
        "50,000 clustered 64-d vectors with metadata `{g: i % 7}`; wrk replays held-out "
        "queries with no filter and with `{g: 3}` (1/7 of the points): idle, beside an unpaced "
        "writer upserting 500 random ids a request with moved vectors, and beside the same "
        "writer paced at 2,000 vectors/s; recall@10 against exact (filtered) search.",
        "",
        table(results),
        "",
        "Goals: " + "; ".join(f"{'✅' if met else '❌'} {text}" for text, met in goals(results)),
    ]
    if note:
        lines += ["", note]
    return lines
