"""Request bodies to store changes: every check a bad input must fail, as pure functions.

Hand-written rather than pydantic on the vector paths: a batch of 10,000 vectors would cost a
model object per element, and the checks that matter (finite float32 of the right dimension,
numbers not strings or booleans) are a few numpy calls.

Duplicate ids in one batch: the last occurrence wins (as if the batch were applied in order).
"""

from __future__ import annotations

import functools
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from dvecdb_node.errors import InvalidInput, PayloadTooLarge, dimension_mismatch
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.filters import Clause, FilterError, is_scalar, parse_filter
from dvecdb_node.storage.records import (
    CollectionConfig,
    Float32Matrix,
    HnswParams,
    Metadata,
    UpsertBatch,
)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
METRICS = ("l2", "cosine", "ip")
ACKS = ("leader", "one", "quorum")
CONSISTENCY = ("eventual", "strong", "min_seq", "quorum")
_PLAIN_SEARCH = frozenset({"vector", "k"})
MAX_ID_CHARS = 256
_NUMBER = frozenset({int, float})


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("request body is empty", code="malformed_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", code="malformed_json") from exc


def require_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    return data


def _int_field(data: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidInput(f"{key!r} must be an integer in [{lo}, {hi}]")
    return value


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(
            "collection name must be 1-63 characters of letters, digits, '_' or '-', "
            "starting with a letter or digit",
            code="invalid_name",
        )
    return name


def check_id(item_id: Any) -> str:
    if not isinstance(item_id, str) or not 1 <= len(item_id) <= MAX_ID_CHARS:
        raise InvalidInput(f"ids must be strings of 1-{MAX_ID_CHARS} characters", code="invalid_id")
    if len(item_id.encode()) > 65535:
        raise InvalidInput("id too long in bytes", code="invalid_id")
    return item_id


def parse_collection(data: Any, settings: NodeSettings) -> CollectionConfig:
    body = require_object(data)
    unknown = set(body) - {"name", "dimension", "metric", "hnsw"}
    if unknown:
        raise InvalidInput(f"unknown fields: {sorted(unknown)}")
    name = check_name(body.get("name"))
    dimension = _int_field(body, "dimension", 0, 1, settings.max_dimension)
    metric = body.get("metric", "l2")
    if metric not in METRICS:
        raise InvalidInput(f"metric must be one of {list(METRICS)}", code="invalid_metric")
    hnsw_raw = body.get("hnsw") or {}
    if not isinstance(hnsw_raw, dict) or set(hnsw_raw) - {"m", "ef_construction", "ef_search"}:
        raise InvalidInput("hnsw takes {m, ef_construction, ef_search}")
    hnsw = HnswParams(
        m=_int_field(hnsw_raw, "m", settings.hnsw_m, 2, 128),
        ef_construction=_int_field(
            hnsw_raw, "ef_construction", settings.hnsw_ef_construction, 1, 4096
        ),
        ef_search=_int_field(hnsw_raw, "ef_search", settings.hnsw_ef_search, 1, 4096),
    )
    return CollectionConfig(name=name, dimension=dimension, metric=metric, hnsw=hnsw)


def to_matrix(rows: Any, dimension: int) -> Float32Matrix:
    """JSON number lists to a finite float32 matrix of ``dimension`` columns.

    ``struct`` packs each row: it converts to float32 the way numpy's cast does and raises
    OverflowError where that cast would give inf, for less than ``np.asarray`` plus a finite
    scan costs on lists of Python floats. A row's sum is inf or NaN exactly when one of its
    numbers is.
    """
    packer = _row_packer(dimension)
    packed = bytearray()
    for row in rows:
        if not isinstance(row, list):
            raise InvalidInput("a vector must be a list of numbers", code="invalid_vector")
        if len(row) != dimension:
            raise dimension_mismatch(dimension, len(row))
        if not _NUMBER.issuperset(map(type, row)):  # bool and str are not numbers here
            raise InvalidInput("vectors must hold only numbers", code="invalid_vector")
        try:
            packed += packer.pack(*row)
            finite = math.isfinite(sum(row))
        except (OverflowError, struct.error):  # beyond float32, or an int beyond float
            finite = False
        if not finite:
            raise _non_finite()
    return np.frombuffer(packed, dtype=np.float32).reshape(len(rows), dimension)


@functools.lru_cache(maxsize=64)
def _row_packer(dimension: int) -> struct.Struct:
    return struct.Struct(f"={dimension}f")


def _non_finite() -> InvalidInput:
    return InvalidInput(
        "vectors must be finite float32 (no NaN, inf or out-of-range values)",
        code="non_finite",
    )


def check_finite(matrix: Float32Matrix) -> None:
    if not np.isfinite(matrix).all():
        raise _non_finite()


def check_metadata(meta: Any, settings: NodeSettings) -> Metadata | None:
    if meta is None:
        return None
    if not isinstance(meta, dict):
        raise InvalidInput("metadata must be a flat JSON object", code="invalid_metadata")
    for key, value in meta.items():
        if not is_scalar(value) or (isinstance(value, float) and not math.isfinite(value)):
            raise InvalidInput(
                f"metadata {key!r}: values must be strings, numbers, booleans or null",
                code="invalid_metadata",
            )
    if len(orjson.dumps(meta)) > settings.max_metadata_bytes:
        raise PayloadTooLarge(
            f"metadata larger than {settings.max_metadata_bytes} bytes", code="metadata_too_large"
        )
    return meta or None


def check_batch_size(count: int, settings: NodeSettings) -> None:
    if count == 0:
        raise InvalidInput("the batch is empty", code="empty_batch")
    if count > settings.max_batch:
        raise PayloadTooLarge(
            f"batch of {count} exceeds the limit of {settings.max_batch}", code="batch_too_large"
        )


def dedupe_last_wins(
    ids: list[str], vectors: Float32Matrix, metadata: list[Metadata | None]
) -> tuple[list[str], Float32Matrix, list[Metadata | None]]:
    """Keep the last occurrence of each id, in order of those last occurrences."""
    last = {item_id: index for index, item_id in enumerate(ids)}
    if len(last) == len(ids):
        return ids, vectors, metadata
    keep = sorted(last.values())
    return [ids[i] for i in keep], vectors[keep], [metadata[i] for i in keep]


def parse_ack(value: Any, default: str) -> str:
    ack = default if value is None else value
    if ack not in ACKS:
        raise InvalidInput(f"ack must be one of {list(ACKS)}", code="invalid_ack")
    return str(ack)


def parse_upsert_json(
    data: Any, collection: CollectionConfig, settings: NodeSettings
) -> tuple[UpsertBatch, Any]:
    """``{vectors: [{id, vector, metadata?}], ack?}`` -> (batch, raw ack)."""
    body = require_object(data)
    items = body.get("vectors")
    if not isinstance(items, list):
        raise InvalidInput("'vectors' must be a list of {id, vector, metadata?}")
    check_batch_size(len(items), settings)
    ids: list[str] = []
    rows: list[Any] = []
    metadata: list[Metadata | None] = []
    for item in items:
        if not isinstance(item, dict) or "id" not in item or "vector" not in item:
            raise InvalidInput("each item needs 'id' and 'vector'")
        ids.append(check_id(item["id"]))
        rows.append(item["vector"])
        metadata.append(check_metadata(item.get("metadata"), settings))
    matrix = to_matrix(rows, collection.dimension)
    ids, matrix, metadata = dedupe_last_wins(ids, matrix, metadata)
    return UpsertBatch(collection.name, ids, matrix, metadata), body.get("ack")


def parse_delete(data: Any, settings: NodeSettings) -> tuple[list[str], Any]:
    body = require_object(data)
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise InvalidInput("'ids' must be a list of strings")
    check_batch_size(len(ids), settings)
    unique = list(dict.fromkeys(check_id(i) for i in ids))
    return unique, body.get("ack")


@dataclass(frozen=True, slots=True)
class SearchRequest:
    queries: Float32Matrix
    single: bool
    k: int
    ef: int | None
    clauses: list[Clause] | None
    include_metadata: bool
    consistency: str
    min_seq: int | None
    # With min_seq, a write token: the epoch the write at min_seq was made at.
    min_epoch: int | None = None


def parse_search(data: Any, collection: CollectionConfig, settings: NodeSettings) -> SearchRequest:
    body = require_object(data)
    if "vector" in body and body.keys() <= _PLAIN_SEARCH:
        # The common call, ``{vector, k?}``: the same checks, without the option lookups.
        queries = to_matrix([body["vector"]], collection.dimension)
        k = _int_field(body, "k", 10, 1, settings.max_k)
        return SearchRequest(queries, True, k, None, None, False, "eventual", None)
    if "vector" in body and "vectors" in body:
        raise InvalidInput("give either 'vector' or 'vectors', not both")
    if "vector" in body:
        rows, single = [body["vector"]], True
    elif "vectors" in body:
        rows, single = body["vectors"], False
        if not isinstance(rows, list) or not rows:
            raise InvalidInput("'vectors' must be a non-empty list of vectors")
        if len(rows) > settings.max_queries:
            raise PayloadTooLarge(f"at most {settings.max_queries} query vectors per request")
    else:
        raise InvalidInput("'vector' or 'vectors' is required")
    return search_options(body, to_matrix(rows, collection.dimension), single, settings)


def search_options(
    body: dict[str, Any], queries: Float32Matrix, single: bool, settings: NodeSettings
) -> SearchRequest:
    """The search fields other than the vectors (shared by the JSON and binary forms)."""
    k = _int_field(body, "k", 10, 1, settings.max_k)
    ef_raw = body.get("ef")
    ef = None if ef_raw is None else _int_field(body, "ef", 0, 1, 4096)
    clauses: list[Clause] | None = None
    if body.get("filter") is not None:
        try:
            clauses = parse_filter(body["filter"]) or None
        except FilterError as exc:
            raise InvalidInput(str(exc), code="invalid_filter") from exc
    include = body.get("include_metadata", False)
    if not isinstance(include, bool):
        raise InvalidInput("'include_metadata' must be a boolean")
    min_seq_raw = body.get("min_seq")
    min_seq = None if min_seq_raw is None else _int_field(body, "min_seq", 0, 0, 2**63 - 1)
    consistency = body.get("consistency") or ("min_seq" if min_seq is not None else "eventual")
    if consistency not in CONSISTENCY:
        raise InvalidInput(f"consistency must be one of {list(CONSISTENCY)}")
    if consistency == "min_seq" and min_seq is None:
        raise InvalidInput("consistency 'min_seq' needs 'min_seq'")
    min_epoch = None
    if body.get("min_epoch") is not None:
        if min_seq is None:
            raise InvalidInput("'min_epoch' goes with 'min_seq' (the write token's two parts)")
        min_epoch = _int_field(body, "min_epoch", 0, 1, 2**63 - 1)
    return SearchRequest(queries, single, k, ef, clauses, include, consistency, min_seq, min_epoch)
