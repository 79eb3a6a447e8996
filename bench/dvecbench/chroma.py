"""The peer: a Chroma server (`chroma run`) on the same data and HNSW parameters.

Chroma is installed only for the benchmark, in its own venv (`.venv-bench-chroma/` at the repo
root, git-ignored), so its dependency pins never touch the project's. The bench talks to its
v2 HTTP API directly, with the same encodings Chroma's own client uses (base64 float32 for
adds, JSON for queries), and drives its searches with the same wrk script as d-vecDB's.
Chroma acknowledges an add before indexing it, so ingest is timed until `indexing_status`
reports nothing left unindexed.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from dvecbench.datasets import F32, Dataset
from dvecbench.httpc import Client
from dvecbench.inprocess import HnswParams

VERSION = "1.5.9"
API = "/api/v2/tenants/default_tenant/databases/default_database"


def ensure_installed(repo: Path) -> Path:
    """Path of the `chroma` CLI, creating its private venv on first use."""
    venv = repo / ".venv-bench-chroma"
    cli = venv / "bin" / "chroma"
    python = venv / "bin" / "python"
    if cli.exists() and _installed_version(python) == VERSION:
        return cli
    print(f"[bench] installing chromadb {VERSION} into {venv} (once)", flush=True)
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-I", "-m", "pip", "install", "-q", f"chromadb=={VERSION}"],
        check=True,
        timeout=1800,
    )
    return cli


def _installed_version(python: Path) -> str | None:
    proc = subprocess.run(
        [str(python), "-I", "-c", "import importlib.metadata as m; print(m.version('chromadb'))"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def server_argv(cli: Path, *, data_dir: Path, port: int) -> list[str]:
    return [str(cli), "run", "--path", str(data_dir), "--host", "127.0.0.1", "--port", str(port)]


def create_collection(client: Client, ds: Dataset, params: HnswParams) -> str:
    """Create the collection with the run's HNSW parameters; returns its id."""
    body = {
        "name": ds.name,
        "configuration": {
            "hnsw": {
                "space": ds.metric,
                "max_neighbors": params.m,
                "ef_construction": params.ef_construction,
                "ef_search": params.ef_search,
            }
        },
    }
    created: dict[str, Any] = client.json("POST", f"{API}/collections", body)
    return str(created["id"])


def max_batch(client: Client) -> int:
    checks: dict[str, Any] = client.json("GET", "/api/v2/pre-flight-checks")
    return int(checks.get("max_batch_size", 1000))


def add_bodies(base: F32, *, batch: int, first_id: int = 0) -> Iterator[bytes]:
    """`/add` bodies with base64 little-endian float32 embeddings, as Chroma's client sends."""
    le = base.astype("<f4", copy=False)
    for start in range(0, len(le), batch):
        rows = le[start : start + batch]
        yield orjson.dumps(
            {
                "ids": [str(first_id + start + j) for j in range(len(rows))],
                "embeddings": [base64.b64encode(r.tobytes()).decode("ascii") for r in rows],
            }
        )


def add_path(collection_id: str) -> str:
    return f"{API}/collections/{collection_id}/add"


def query_path(collection_id: str) -> str:
    return f"{API}/collections/{collection_id}/query"


def query_body(queries: F32, k: int) -> bytes:
    return orjson.dumps(
        {"query_embeddings": queries.tolist(), "n_results": k, "include": ["distances"]}
    )


def unindexed(client: Client, collection_id: str) -> int | None:
    """Operations not yet indexed, or None where the server cannot tell.

    Chroma's single-node server answers 500 "not implemented" here: it applies adds to its
    local HNSW segment on the write path, so a search probe for the last vectors decides.
    """
    path = f"{API}/collections/{collection_id}/indexing_status"
    status, data = client.request("GET", path)
    if status != 200:
        return None
    return int(orjson.loads(data)["num_unindexed_ops"])


def search_ids(client: Client, collection_id: str, queries: F32, k: int) -> list[list[int]]:
    """Top-k row indices for each query (the ids are the rows' decimal strings)."""
    status, data = client.request("POST", query_path(collection_id), query_body(queries, k))
    if status != 200:
        raise RuntimeError(f"Chroma query failed {status}: {data[:300]!r}")
    result: dict[str, Any] = orjson.loads(data)
    return [[int(i) for i in row] for row in result["ids"]]


def count(client: Client, collection_id: str) -> int:
    return int(client.json("GET", f"{API}/collections/{collection_id}/count"))
