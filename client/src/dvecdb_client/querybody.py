"""The binary search body, ``application/x-dvec-queries``: query vectors without JSON floats.

Layout (little-endian)::

    b"DVQ1" | u32 count | u32 dim | u32 options_len
    | count*dim float32
    | options_len bytes: a JSON object of the JSON form's other fields (``k``, ``ef``,
      ``filter``, ``include_metadata``, ``consistency``, ``min_seq``, ``min_epoch``); none
      when 0

The answer is the JSON form's, one list of hits per query vector. The client writes this
body; the node (``dvecdb_node.api.querybody``) reads it with the same ``HEADER``, ``MAGIC``
and ``CONTENT_TYPE``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

CONTENT_TYPE = "application/x-dvec-queries"
MAGIC = b"DVQ1"
HEADER = struct.Struct("<4sIII")


def encode_queries(vectors: npt.ArrayLike, options: Mapping[str, Any] | None = None) -> bytes:
    """Build a binary search body (the bench and tests use this)."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    extra = orjson.dumps(dict(options)) if options else b""
    return (
        HEADER.pack(MAGIC, matrix.shape[0], matrix.shape[1], len(extra)) + matrix.tobytes() + extra
    )
