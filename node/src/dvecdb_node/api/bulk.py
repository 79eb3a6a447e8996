"""The binary bulk-upsert body, ``application/x-dvec-batch``: vectors without JSON floats.

The node reads it; ``dvecdb_client.bulk`` writes it and defines its header.

Layout (little-endian)::

    b"DVB1" | u32 count | u32 dim | u32 meta_len
    | count x (u16 id_len | id utf-8)
    | count*dim float32
    | meta_len bytes: orjson array of count (object | null), absent when meta_len is 0

Query parameter ``ack`` chooses the acknowledgement level, as ``ack`` does in the JSON form.
"""

from __future__ import annotations

import struct

import numpy as np

from dvecdb_client.bulk import CONTENT_TYPE as CONTENT_TYPE
from dvecdb_client.bulk import HEADER as _HEAD
from dvecdb_client.bulk import ID_LENGTH as _U16
from dvecdb_client.bulk import MAGIC
from dvecdb_node.api import schema, validation
from dvecdb_node.errors import InvalidInput, dimension_mismatch
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.records import Metadata, UpsertBatch


def decode_batch(
    body: bytes, collection: str, dimension: int, settings: NodeSettings
) -> UpsertBatch:
    """Parse and check a bulk body; duplicates are left for the caller's last-wins pass."""
    if len(body) < _HEAD.size:
        raise InvalidInput("bulk body shorter than its header", code="malformed_batch")
    magic, count, dim, meta_len = _HEAD.unpack_from(body)
    if magic != MAGIC:
        raise InvalidInput("bulk body must start with b'DVB1'", code="malformed_batch")
    validation.check_batch_size(count, settings)
    if dim != dimension:
        raise dimension_mismatch(dimension, dim)
    view = memoryview(body)
    pos = _HEAD.size
    ids: list[str] = []
    try:
        for _ in range(count):
            (length,) = _U16.unpack_from(view, pos)
            pos += 2
            if pos + length > len(view):
                raise InvalidInput("bulk body truncated in ids", code="malformed_batch")
            ids.append(validation.check_id(bytes(view[pos : pos + length]).decode()))
            pos += length
    except (struct.error, UnicodeDecodeError) as exc:
        raise InvalidInput(f"bulk body ids are malformed: {exc}", code="malformed_batch") from exc
    need = count * dim * 4
    if len(view) - pos != need + meta_len:
        raise InvalidInput(
            f"bulk body has {len(view) - pos} bytes after the ids, expected {need + meta_len}",
            code="malformed_batch",
        )
    vectors = np.frombuffer(view[pos : pos + need], dtype="<f4").astype(np.float32)
    vectors = vectors.reshape(count, dim)
    validation.check_finite(vectors)
    pos += need
    metadata: list[Metadata | None] = [None] * count
    if meta_len:
        raw = schema.decode(schema.BulkMetadata, bytes(view[pos:]))
        if len(raw) != count:
            raise InvalidInput("bulk metadata must be a list of one entry per id")
        metadata = [validation.check_metadata(m, settings) for m in raw]
    ids, vectors, metadata = validation.dedupe_last_wins(ids, vectors, metadata)
    return UpsertBatch(collection, ids, vectors, metadata)
