"""The binary bulk-upsert body, ``application/x-dvec-batch``: vectors without JSON floats.

Layout (little-endian)::

    b"DVB1" | u32 count | u32 dim | u32 meta_len
    | count x (u16 id_len | id utf-8)
    | count*dim float32
    | meta_len bytes: orjson array of count (object | null), absent when meta_len is 0

Query parameter ``ack`` chooses the acknowledgement level, as ``ack`` does in the JSON form.
The client writes this body; the node (``dvecdb_node.api.bulk``) reads it with the same
``HEADER``, ``MAGIC`` and ``CONTENT_TYPE``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

CONTENT_TYPE = "application/x-dvec-batch"
MAGIC = b"DVB1"
HEADER = struct.Struct("<4sIII")
ID_LENGTH = struct.Struct("<H")


def encode_batch(
    ids: Sequence[str],
    vectors: npt.ArrayLike,
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
) -> bytes:
    """Build a bulk body (the client, the demo, the bench and tests use this)."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    meta = orjson.dumps(list(metadata)) if metadata is not None else b""
    out = [HEADER.pack(MAGIC, len(ids), matrix.shape[1], len(meta))]
    for item in ids:
        raw = item.encode()
        out.append(ID_LENGTH.pack(len(raw)))
        out.append(raw)
    out.append(matrix.tobytes())
    out.append(meta)
    return b"".join(out)
