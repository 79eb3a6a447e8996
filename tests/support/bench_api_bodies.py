"""Micro-benchmark of the request-body hot paths: decode + validate, µs per request.

    .venv/bin/python -m tests.support.bench_api_bodies [--before REV]

Times, in one run, the node's current parsers, the hand-written ones of git revision ``REV``
(loaded from git into their own modules: default ``b9bf708``, before ``api.schema``), and a
pydantic version of the same bodies (the other candidate: ``TypeAdapter.validate_json`` on
equivalent strict models, then the same float32 packing). Each case is timed in alternating
rounds and the best round is kept, so load from other processes skews all three alike.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from dvecdb_client.bulk import encode_batch
from dvecdb_node.api import bulk, schema, validation
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.records import CollectionConfig, UpsertBatch

ROOT = Path(__file__).resolve().parents[2]
DIM = 128
SETTINGS = NodeSettings()
CONFIG = CollectionConfig("c", DIM, "l2")


def _load(rev: str, path: str, name: str, **inject: Any) -> types.ModuleType:
    """A module's source at ``rev`` as a fresh module (``inject`` replaces imports of it)."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    for key in inject:
        source = source.replace(f"from dvecdb_node.api import {key}\n", "")
    module = types.ModuleType(name)
    module.__dict__.update(inject)
    sys.modules[name] = module
    exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
    return module


# ------------------------------------------------------------------- pydantic
_F32 = Annotated[float, Field(gt=-schema.FLOAT32_BOUND, lt=schema.FLOAT32_BOUND)]
_Vector = Annotated[list[_F32], Field(min_length=1, max_length=SETTINGS.max_dimension)]
_Scalar = str | int | float | bool | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PydanticSearch(_Strict):
    vector: _Vector | None = None
    vectors: Annotated[list[_Vector], Field(min_length=1, max_length=100)] | None = None
    k: Annotated[int, Field(ge=1, le=SETTINGS.max_k)] = 10
    ef: Annotated[int, Field(ge=1, le=4096)] | None = None
    filter: dict[str, _Scalar] | None = None
    include_metadata: bool = False
    consistency: Literal["eventual", "strong", "min_seq", "quorum"] | None = None
    min_seq: Annotated[int, Field(ge=0)] | None = None
    min_epoch: Annotated[int, Field(ge=1)] | None = None


class PydanticItem(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    vector: _Vector
    metadata: dict[str, _Scalar] | None = None


class PydanticUpsert(_Strict):
    vectors: Annotated[list[PydanticItem], Field(min_length=1, max_length=SETTINGS.max_batch)]
    ack: Literal["leader", "one", "quorum"] | None = None


_SEARCH = TypeAdapter(PydanticSearch)
_UPSERT = TypeAdapter(PydanticUpsert)


def pydantic_search(raw: bytes) -> Any:
    """The same result as ``validation.parse_search`` from a pydantic-validated body."""
    body = _SEARCH.validate_json(raw)
    rows = [body.vector] if body.vector is not None else body.vectors or []
    queries = validation.to_matrix(rows, DIM)
    return validation.search_options(body, queries, body.vector is not None, SETTINGS)  # type: ignore[arg-type]


def pydantic_upsert(raw: bytes) -> Any:
    """The same result as ``validation.parse_upsert_json`` from a pydantic-validated body."""
    body = _UPSERT.validate_json(raw)
    items = body.vectors
    metadata = [validation.check_metadata(item.metadata, SETTINGS) for item in items]
    matrix = validation.to_matrix([item.vector for item in items], DIM)
    ids, matrix, metadata = validation.dedupe_last_wins([i.id for i in items], matrix, metadata)
    return UpsertBatch("c", ids, matrix, metadata), body.ack


# --------------------------------------------------------------------- bodies
def bodies() -> dict[str, bytes]:
    rng = np.random.default_rng(7)

    def rows(n: int) -> list[list[float]]:
        return rng.random((n, DIM), dtype=np.float32).tolist()  # as clients send float32

    items = [
        {"id": f"id-{i}", "vector": row, "metadata": {"group": i % 7, "tag": "x"}}
        for i, row in enumerate(rows(100))
    ]
    vectors = rng.random((1000, DIM), dtype=np.float32)
    ids = [f"id-{i}" for i in range(1000)]
    return {
        "search {vector, k} 128-d": orjson.dumps({"vector": rows(1)[0], "k": 10}),
        "search 10x128-d + options": orjson.dumps(
            {"vectors": rows(10), "k": 10, "include_metadata": True, "filter": {"group": 3}}
        ),
        "upsert JSON 100x128-d + metadata": orjson.dumps({"vectors": items}),
        "bulk 1000x128-d + metadata": encode_batch(
            ids, vectors, [{"g": i % 7} for i in range(1000)]
        ),
        "bulk 1000x128-d": encode_batch(ids, vectors),
    }


def candidates(rev: str) -> dict[str, dict[str, Callable[[bytes], Any]]]:
    old = _load(rev, "node/src/dvecdb_node/api/validation.py", "before_validation")
    old_bulk = _load(rev, "node/src/dvecdb_node/api/bulk.py", "before_bulk", validation=old)

    def old_search(raw: bytes) -> Any:
        return old.parse_search(old.parse_json(raw), CONFIG, SETTINGS)

    def old_upsert(raw: bytes) -> Any:
        return old.parse_upsert_json(old.parse_json(raw), CONFIG, SETTINGS)

    def old_bulk_decode(raw: bytes) -> Any:
        return old_bulk.decode_batch(raw, "c", DIM, SETTINGS)

    def new_search(raw: bytes) -> Any:
        return validation.parse_search(raw, CONFIG, SETTINGS)

    def new_upsert(raw: bytes) -> Any:
        return validation.parse_upsert_json(raw, CONFIG, SETTINGS)

    def new_bulk(raw: bytes) -> Any:
        return bulk.decode_batch(raw, "c", DIM, SETTINGS)

    return {
        f"hand-written ({rev})": {
            "search": old_search,
            "upsert": old_upsert,
            "bulk": old_bulk_decode,
        },
        "msgspec (api.schema)": {"search": new_search, "upsert": new_upsert, "bulk": new_bulk},
        "pydantic": {"search": pydantic_search, "upsert": pydantic_upsert},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="b9bf708", help="git revision of the hand-written code")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    impls = candidates(args.before)
    print(f"{'case':34s}" + "".join(f"{name:>26s}" for name in impls) + "   (µs per request)")
    for case, raw in bodies().items():
        kind = case.split()[0]
        fns = {name: table.get(kind) for name, table in impls.items()}
        number = max(1, int(2e5 / len(raw)))
        best = {name: float("inf") for name in fns}
        for _ in range(args.rounds):  # alternate, so drifting load hits every candidate
            for name, fn in fns.items():
                if fn is not None:
                    elapsed = timeit.timeit(lambda fn=fn, raw=raw: fn(raw), number=number)
                    best[name] = min(best[name], elapsed / number * 1e6)
        cells = "".join(f"{best[n]:26.1f}" if fns[n] is not None else f"{'-':>26s}" for n in fns)
        print(f"{case:34s}{cells}")


if __name__ == "__main__":
    main()
