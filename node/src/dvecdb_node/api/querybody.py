"""The binary search body, ``application/x-dvec-queries``: query vectors without JSON floats.

The node reads it; ``dvecdb_client.querybody`` writes it and defines its header.

Layout (little-endian)::

    b"DVQ1" | u32 count | u32 dim | u32 options_len
    | count*dim float32
    | options_len bytes: a JSON object of the JSON form's other fields (``k``, ``ef``,
      ``filter``, ``include_metadata``, ``consistency``, ``min_seq``, ``min_epoch``); none
      when 0

The answer is the JSON form's, one list of hits per query vector. Why: reading a hundred
128-d query vectors from JSON costs the node about a millisecond of Python (number parsing,
type checks, float32 conversion), as much as searching ten of them; this form costs a copy.
"""

from __future__ import annotations

import struct

import numpy as np
import orjson

from dvecdb_client.querybody import CONTENT_TYPE as CONTENT_TYPE
from dvecdb_client.querybody import HEADER as _HEAD
from dvecdb_client.querybody import QueryBodyError, read_header, sections
from dvecdb_node.api import schema, validation
from dvecdb_node.errors import InvalidInput, PayloadTooLarge, dimension_mismatch
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.records import CollectionConfig


def decode_queries(
    body: bytes, collection: CollectionConfig, settings: NodeSettings
) -> validation.SearchRequest:
    """Parse and check a binary search body, with the JSON form's checks on its options."""
    try:
        count, dim, options_len = read_header(body)
    except QueryBodyError as exc:
        raise InvalidInput(str(exc), code="malformed_queries") from exc
    if count == 0:
        raise InvalidInput("the query body holds no vectors", code="malformed_queries")
    if count > settings.max_queries:
        raise PayloadTooLarge(f"at most {settings.max_queries} query vectors per request")
    if dim != collection.dimension:
        raise dimension_mismatch(collection.dimension, dim)
    try:
        matrix, extra = sections(body, count, dim, options_len)
    except QueryBodyError as exc:
        raise InvalidInput(str(exc), code="malformed_queries") from exc
    queries = np.frombuffer(matrix, dtype="<f4").astype(np.float32)  # native, writable
    queries = queries.reshape(count, dim)
    validation.check_finite(queries)
    kind = schema.bodies_for(settings).options  # the JSON form's fields but the vectors
    options = validation.typed(kind, extra) if options_len else kind()
    return validation.search_options(options, queries, single=False, settings=settings)


def wants_leader(raw: bytes, content_type: str | None) -> bool:
    """Whether a search body (JSON or binary) asks for a ``strong`` or ``quorum`` read.

    Lenient: a malformed body is not a leader read (validation reports it later).
    """
    try:
        if content_type == CONTENT_TYPE:
            _, count, dim, options_len = _HEAD.unpack_from(raw)
            if not options_len:
                return False
            body = orjson.loads(raw[_HEAD.size + count * dim * 4 :])
        else:
            body = orjson.loads(raw)
    except (struct.error, orjson.JSONDecodeError):
        return False
    return isinstance(body, dict) and body.get("consistency") in ("strong", "quorum")
