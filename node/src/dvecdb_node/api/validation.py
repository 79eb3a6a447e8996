"""Request bodies to store changes: the checks the types of ``schema`` cannot state.

Bodies are decoded and validated against ``schema``'s types (the same ones the OpenAPI
document is made from); what is left here needs the collection or the settings at hand: a
vector's dimension, the metadata's size, a search's cross-field rules, the float32 matrix.

Every parser takes the raw JSON bytes (the handlers' fast path: decoded and validated in
one msgspec pass) or an already decoded value (validated the same way).

Duplicate ids in one batch: the last occurrence wins (as if the batch were applied in order).
"""

from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import orjson
from msgspec import UNSET

from dvecdb_node.api import schema
from dvecdb_node.errors import InvalidInput, PayloadTooLarge, dimension_mismatch
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.filters import Clause, FilterError, parse_filter
from dvecdb_node.storage.records import (
    CollectionConfig,
    Float32Matrix,
    HnswParams,
    Metadata,
    UpdateCollection,
    UpsertBatch,
)

NAME_RE = re.compile(schema.NAME_PATTERN)
ACKS = schema.ACKS
MAX_ID_CHARS = schema.MAX_ID_CHARS
T = TypeVar("T")


def typed(kind: type[T], data: Any) -> T:
    """``data`` (JSON bytes, or a decoded value) as a validated ``kind``."""
    if isinstance(data, bytes | bytearray | memoryview):
        return schema.decode(kind, bytes(data))
    return schema.convert(kind, data)


def parse_json(body: bytes) -> Any:
    """An untyped JSON body (the typed ones go through :func:`typed`)."""
    if not body:
        raise InvalidInput("request body is empty", code="malformed_json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}", code="malformed_json") from exc


def check_name(name: Any) -> str:
    """A collection name from a path (bodies check theirs through ``schema.Name``)."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidInput(schema.NAME_MESSAGE, code="invalid_name")
    return name


def check_id(item_id: Any) -> str:
    """An id from a path or a bulk body (JSON bodies check theirs through ``schema.ItemId``)."""
    if not isinstance(item_id, str) or not 1 <= len(item_id) <= MAX_ID_CHARS:
        raise InvalidInput(f"ids must be strings of 1-{MAX_ID_CHARS} characters", code="invalid_id")
    return item_id


def parse_collection(data: Any, settings: NodeSettings) -> CollectionConfig:
    """``{name, dimension, metric?, hnsw?}``; absent HNSW parameters take the settings'."""
    body = typed(schema.bodies_for(settings).collection, data)
    hnsw = schema.Hnsw() if body.hnsw is UNSET else body.hnsw
    params = HnswParams(
        m=settings.hnsw_m if hnsw.m is UNSET else hnsw.m,
        ef_construction=(
            settings.hnsw_ef_construction if hnsw.ef_construction is UNSET else hnsw.ef_construction
        ),
        ef_search=settings.hnsw_ef_search if hnsw.ef_search is UNSET else hnsw.ef_search,
    )
    return CollectionConfig(body.name, body.dimension, body.metric, params)


def parse_collection_update(name: str, data: bytes) -> tuple[UpdateCollection, str | None]:
    """``{hnsw: {ef_search}, ack?}`` -> (the logged change, ack or None).

    A setting fixed at creation answers 400 ``immutable_setting`` naming it, rather than the
    generic unknown-field error: the caller likely expects it to change.
    """
    try:
        body = typed(schema.CollectionUpdate, data)
    except InvalidInput:
        _refuse_immutable(data)
        raise
    return UpdateCollection(name, ef_search=body.hnsw.ef_search), body.ack


def _refuse_immutable(data: bytes) -> None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    if not isinstance(value, dict):
        return
    fixed = [key for key in schema.IMMUTABLE_SETTINGS if key in value]
    hnsw = value.get("hnsw")
    if isinstance(hnsw, dict):
        fixed += [f"hnsw.{key}" for key in schema.IMMUTABLE_HNSW if key in hnsw]
    if fixed:
        raise InvalidInput(
            f"{', '.join(fixed)} cannot change after creation (they shape the stored index); "
            "only hnsw.ef_search can change live",
            code="immutable_setting",
        )


def to_matrix(rows: list[list[float]], dimension: int) -> Float32Matrix:
    """Validated rows (finite float32 numbers, ``schema.Float32``) to a float32 matrix.

    ``struct`` packs each row: it converts to float32 the way numpy's cast does, for less
    than ``np.asarray`` costs on lists of Python floats.
    """
    packer = _row_packer(dimension)
    packed = bytearray()
    for row in rows:
        if len(row) != dimension:
            raise dimension_mismatch(dimension, len(row))
        packed += packer.pack(*row)
    return np.frombuffer(packed, dtype=np.float32).reshape(len(rows), dimension)


@functools.lru_cache(maxsize=64)
def _row_packer(dimension: int) -> struct.Struct:
    return struct.Struct(f"={dimension}f")


def check_finite(matrix: Float32Matrix) -> None:
    """The binary forms' check of what ``schema.Float32`` states for JSON numbers."""
    if not np.isfinite(matrix).all():
        raise InvalidInput(
            "vectors must be finite float32 (no NaN, inf or out-of-range values)",
            code="non_finite",
        )


def check_metadata(meta: dict[str, Any] | None, settings: NodeSettings) -> Metadata | None:
    """Validated metadata (``schema.Metadata``) within the size limit; ``{}`` is none."""
    if meta and len(orjson.dumps(meta)) > settings.max_metadata_bytes:
        raise PayloadTooLarge(
            f"metadata larger than {settings.max_metadata_bytes} bytes", code="metadata_too_large"
        )
    return meta or None


def check_batch_size(count: int, settings: NodeSettings) -> None:
    """The binary bulk form's check of what ``schema``'s batch limit states for JSON."""
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
    """An ``ack`` from a query parameter (or a validated body's), ``default`` when absent."""
    ack = default if value is None else value
    if ack not in ACKS:
        raise InvalidInput(f"ack must be one of {list(ACKS)}", code="invalid_ack")
    return str(ack)


def query_ack(value: str | None) -> str | None:
    """The ``ack`` query parameter, checked even where a body's own ``ack`` wins."""
    if value is not None and value not in ACKS:
        raise InvalidInput(f"ack must be one of {list(ACKS)}", code="invalid_ack")
    return value


def parse_upsert_json(
    data: Any, collection: CollectionConfig, settings: NodeSettings
) -> tuple[UpsertBatch, str | None]:
    """``{vectors: [{id, vector, metadata?}], ack?}`` -> (batch, ack or None)."""
    body = typed(schema.bodies_for(settings).upsert, data)
    items = body.vectors
    ids = [item.id for item in items]
    metadata = [check_metadata(item.metadata, settings) for item in items]
    matrix = to_matrix([item.vector for item in items], collection.dimension)
    ids, matrix, metadata = dedupe_last_wins(ids, matrix, metadata)
    return UpsertBatch(collection.name, ids, matrix, metadata), body.ack


def parse_delete(data: Any, settings: NodeSettings) -> tuple[list[str], str | None]:
    """``{ids: [...], ack?}`` -> (unique ids in order, ack or None)."""
    body = typed(schema.bodies_for(settings).delete, data)
    return list(dict.fromkeys(body.ids)), body.ack


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
    """``{vector | vectors, k?, ...}`` (``schema.Search``) against ``collection``."""
    body = typed(schema.bodies_for(settings).search, data)
    if body.vector is not UNSET:
        if body.vectors is not UNSET:
            raise InvalidInput("give either 'vector' or 'vectors', not both")
        queries = to_matrix([body.vector], collection.dimension)
        single = True
    elif body.vectors is not UNSET:
        queries, single = to_matrix(body.vectors, collection.dimension), False
    else:
        raise InvalidInput("'vector' or 'vectors' is required")
    return search_options(body, queries, single, settings)


def search_options(
    body: schema.SearchOptions, queries: Float32Matrix, single: bool, settings: NodeSettings
) -> SearchRequest:
    """The search fields other than the vectors (shared by the JSON and binary forms)."""
    if body.filter is None and body.consistency is None and body.min_seq is body.min_epoch is None:
        # The common call, ``{vector, k?}``: nothing more to check.
        return SearchRequest(queries, single, body.k, body.ef, None, body.include_metadata,
                             "eventual", None, None)  # fmt: skip
    clauses: list[Clause] | None = None
    if body.filter is not None:
        try:
            clauses = parse_filter(_filter_object(body.filter)) or None
        except FilterError as exc:
            raise InvalidInput(str(exc), code="invalid_filter") from exc
    min_seq = body.min_seq
    consistency = body.consistency or ("min_seq" if min_seq is not None else "eventual")
    if consistency == "min_seq" and min_seq is None:
        raise InvalidInput("consistency 'min_seq' needs 'min_seq'")
    if body.min_epoch is not None and min_seq is None:
        raise InvalidInput("'min_epoch' goes with 'min_seq' (the write token's two parts)")
    return SearchRequest(queries, single, body.k, body.ef, clauses, body.include_metadata,
                         consistency, min_seq, body.min_epoch)  # fmt: skip


def _filter_object(value: dict[str, Any]) -> dict[str, Any]:
    """A validated filter back in its JSON shape, for ``parse_filter``."""
    return {
        key: {"in": cond.in_} if isinstance(cond, schema.InFilter) else cond
        for key, cond in value.items()
    }
