"""The binary search body, ``application/x-dvec-queries``: query vectors without JSON floats.

Layout (little-endian)::

    b"DVQ1" | u32 count | u32 dim | u32 options_len
    | count*dim float32
    | options_len bytes: a JSON object of the JSON form's other fields (``k``, ``ef``,
      ``filter``, ``include_metadata``, ``consistency``, ``min_seq``, ``min_epoch``); none
      when 0

The answer is the JSON form's, one list of hits per query vector. The client writes this
body; the node (``dvecdb_node.api.querybody``) and the router read it with
:func:`read_header` and :func:`sections`, the router writes it again with :func:`join`.
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


class QueryBodyError(ValueError):
    """A binary search body that does not follow its layout (the message says how)."""


def encode_queries(vectors: npt.ArrayLike, options: Mapping[str, Any] | None = None) -> bytes:
    """Build a binary search body (the bench and tests use this)."""
    matrix = np.ascontiguousarray(vectors, dtype="<f4")
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    extra = orjson.dumps(dict(options)) if options else b""
    return join(matrix.shape[0], matrix.shape[1], matrix.tobytes(), extra)


def join(count: int, dim: int, matrix: bytes, options: bytes) -> bytes:
    """A body from its parts: ``matrix`` holds ``count * dim`` little-endian float32s,
    ``options`` a JSON object's bytes or nothing."""
    return HEADER.pack(MAGIC, count, dim, len(options)) + matrix + options


def read_header(body: bytes) -> tuple[int, int, int]:
    """``(count, dim, options_len)`` of a body, once its header is there and right."""
    if len(body) < HEADER.size:
        raise QueryBodyError("query body shorter than its header")
    magic, count, dim, options_len = HEADER.unpack_from(body)
    if magic != MAGIC:
        raise QueryBodyError("query body must start with b'DVQ1'")
    return count, dim, options_len


def sections(body: bytes, count: int, dim: int, options_len: int) -> tuple[bytes, bytes]:
    """The matrix's and the options' bytes of a body whose header said these sizes."""
    need = count * dim * 4
    if len(body) - HEADER.size != need + options_len:
        raise QueryBodyError(
            f"query body has {len(body) - HEADER.size} bytes after its header, "
            f"expected {need + options_len}"
        )
    end = HEADER.size + need
    return body[HEADER.size : end], body[end:]
