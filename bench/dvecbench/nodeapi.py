"""d-vecDB's HTTP API as the benchmark uses it: start a node, create, bulk-upsert, search.

Bulk upserts use the node's own binary body (`application/x-dvec-batch`, documented in its
`GET /openapi.json`), encoded by the client's `encode_batch` so the bench can never
drift from the format. Batch searches can likewise go as the binary query body
(`application/x-dvec-queries`, `encode_queries`). Row `i` of the data set is stored under id
`str(i)`.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from dvecbench.datasets import F32, Dataset
from dvecbench.httpc import Client, HttpError
from dvecbench.inprocess import HnswParams
from dvecbench.searchload import SearchApi
from dvecbench.wrk import JSON
from dvecdb_client import querybody
from dvecdb_client.bulk import CONTENT_TYPE, encode_batch

COLLECTION = "bench"


def node_binary() -> str:
    """The `dvecdb-node` console script of the project venv."""
    beside = Path(sys.executable).with_name("dvecdb-node")
    if beside.exists():
        return str(beside)
    found = shutil.which("dvecdb-node")
    if found is None:
        raise RuntimeError("dvecdb-node is not installed: run `make dev`")
    return found


def server_argv(
    *, port: int, data_dir: Path, node_id: str = "bench-0", standalone: bool = True
) -> list[str]:
    argv = [
        node_binary(),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--node-id",
        node_id,
        "--fsync",
        "batch",
    ]
    return [*argv, "--standalone"] if standalone else argv


def create_collection(
    client: Client, ds: Dataset, params: HnswParams, *, name: str = COLLECTION, ack: str = "leader"
) -> None:
    client.json(
        "POST",
        f"/v1/collections?ack={ack}",
        {
            "name": name,
            "dimension": ds.dimension,
            "metric": ds.metric,
            "hnsw": {
                "m": params.m,
                "ef_construction": params.ef_construction,
                "ef_search": params.ef_search,
            },
        },
    )


def upsert_bodies(base: F32, *, batch: int, first_id: int = 0) -> Iterator[bytes]:
    for start in range(0, len(base), batch):
        rows = base[start : start + batch]
        ids = [str(first_id + start + j) for j in range(len(rows))]
        yield encode_batch(ids, rows)


def upsert_path(ack: str, collection: str = COLLECTION) -> str:
    return f"/v1/collections/{collection}/vectors?ack={ack}"


def upsert(client: Client, body: bytes, *, ack: str, collection: str = COLLECTION) -> int:
    """Send one bulk body; returns the write's seq."""
    path = upsert_path(ack, collection)
    status, data = client.request("PUT", path, body, content_type=CONTENT_TYPE)
    if status != 200:
        raise HttpError("PUT", path, status, data)
    seq: int = orjson.loads(data)["seq"]
    return seq


def search_path(collection: str = COLLECTION) -> str:
    return f"/v1/collections/{collection}/search"


def search_body(queries: F32, k: int) -> bytes:
    """One query as `vector`, several as `vectors` (the batch form)."""
    if len(queries) == 1:
        return orjson.dumps({"vector": queries[0].tolist(), "k": k})
    return orjson.dumps({"vectors": queries.tolist(), "k": k})


def binary_search_body(queries: F32, k: int) -> bytes:
    """The same search as `search_body` in the binary query form (one list of hits per row)."""
    body: bytes = querybody.encode_queries(queries, {"k": k})
    return body


def search_ids(
    client: Client, queries: F32, k: int, *, collection: str = COLLECTION, binary: bool = False
) -> list[list[int]]:
    path = search_path(collection)
    if binary:
        body, content_type = binary_search_body(queries, k), querybody.CONTENT_TYPE
    else:
        body, content_type = search_body(queries, k), JSON
    status, data = client.request("POST", path, body, content_type=content_type)
    if status != 200:
        raise HttpError("POST", path, status, data)
    results: list[list[dict[str, Any]]] = orjson.loads(data)["results"]
    return [[int(hit["id"]) for hit in row] for row in results]


def search_api(base_url: str, *, binary: bool = False) -> SearchApi:
    """How the load phases search a node (or the JSON-only floor and transport servers)."""
    if not binary:
        return SearchApi(base_url, search_path(), search_body, search_ids)
    return SearchApi(
        base_url,
        search_path(),
        binary_search_body,
        lambda c, q, k: search_ids(c, q, k, binary=True),
        content_type=querybody.CONTENT_TYPE,
    )


def status(client: Client) -> dict[str, Any]:
    body: dict[str, Any] = client.json("GET", "/v1/status")
    return body


def count(client: Client) -> int:
    return int(client.json("GET", f"/v1/collections/{COLLECTION}")["count"])


def self_match(
    client: Client, vectors: F32, ids: list[int], *, collection: str = COLLECTION
) -> bool:
    """Every probe vector is searchable: it comes back among its own top 10."""
    found = search_ids(client, np.ascontiguousarray(vectors), 10, collection=collection)
    return each_found(found, ids)


def each_found(found: list[list[int]], ids: list[int]) -> bool:
    """Row i of the answers contains ids[i] (top-1 alone would trip over near-duplicates)."""
    return len(found) == len(ids) and all(i in row for row, i in zip(found, ids, strict=True))
