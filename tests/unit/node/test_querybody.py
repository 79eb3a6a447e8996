"""The binary search body: the JSON form's answer without JSON floats, and its own errors."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from dvecdb_client.querybody import encode_queries
from dvecdb_node.api.querybody import decode_queries
from dvecdb_node.errors import NodeError
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.records import CollectionConfig

pytestmark = pytest.mark.unit
SETTINGS = NodeSettings(max_queries=4)
CONFIG = CollectionConfig("c", 3, "l2")
ROWS = np.asarray([[1, 2, 3], [0.5, -1, 1e-3]], dtype=np.float32)


def _code(body: bytes) -> str:
    with pytest.raises(NodeError) as info:
        decode_queries(body, CONFIG, SETTINGS)
    return info.value.code


def test_round_trip_with_options() -> None:
    options = {"k": 3, "filter": {"g": 1}, "include_metadata": True, "consistency": "strong"}
    req = decode_queries(encode_queries(ROWS, options), CONFIG, SETTINGS)
    assert np.array_equal(req.queries, ROWS) and req.queries.flags.writeable
    assert (req.single, req.k, req.include_metadata, req.consistency) == (False, 3, True, "strong")
    assert req.clauses


def test_defaults_without_options() -> None:
    req = decode_queries(encode_queries(ROWS[0]), CONFIG, SETTINGS)
    assert req.queries.shape == (1, 3)
    assert (req.k, req.ef, req.clauses, req.consistency, req.min_seq) == (
        10,
        None,
        None,
        "eventual",
        None,
    )


def _raw(
    count: int, dim: int, payload: bytes, options: bytes = b"", magic: bytes = b"DVQ1"
) -> bytes:
    return struct.pack("<4sIII", magic, count, dim, len(options)) + payload + options


GOOD = ROWS.tobytes()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"DVQ1", "malformed_queries"),
        (_raw(2, 3, GOOD, magic=b"DVB1"), "malformed_queries"),
        (_raw(0, 3, b""), "malformed_queries"),
        (_raw(5, 3, np.zeros((5, 3), np.float32).tobytes()), "payload_too_large"),
        (_raw(2, 4, np.zeros((2, 4), np.float32).tobytes()), "dimension_mismatch"),
        (_raw(2, 3, GOOD[:-4]), "malformed_queries"),
        (_raw(2, 3, GOOD + b"xx"), "malformed_queries"),
        (_raw(1, 3, np.asarray([1, np.nan, 0], np.float32).tobytes()), "non_finite"),
        (_raw(1, 3, np.asarray([1, np.inf, 0], np.float32).tobytes()), "non_finite"),
        (_raw(2, 3, GOOD, b"[1]"), "invalid_input"),
        (_raw(2, 3, GOOD, b"{nope"), "malformed_json"),
        (_raw(2, 3, GOOD, b'{"vector": [1, 2, 3]}'), "invalid_input"),
        (_raw(2, 3, GOOD, b'{"k": 0}'), "invalid_input"),
        (_raw(2, 3, GOOD, b'{"filter": {"g": {"lt": 1}}}'), "invalid_filter"),
    ],
)
def test_bad_bodies(body: bytes, code: str) -> None:
    assert _code(body) == code


def test_options_must_not_repeat_vectors() -> None:
    options: Any = {"vectors": [[1, 2, 3]]}
    assert _code(encode_queries(ROWS, options)) == "invalid_input"
