"""Binary payloads of log records."""

from __future__ import annotations

import numpy as np
import pytest

from dvecdb_node.storage.records import (
    CollectionConfig,
    CreateCollection,
    DeleteBatch,
    DropCollection,
    HnswParams,
    Noop,
    PayloadError,
    UpsertBatch,
    decode_payload,
    encode_payload,
    op_of,
)

pytestmark = pytest.mark.unit


def test_upsert_payload_is_binary_and_roundtrips() -> None:
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    batch = UpsertBatch("c", ["a", "é", "x" * 256], vectors, [{"k": 1}, None, {"s": "v"}])
    payload = encode_payload(batch)
    assert vectors.tobytes() in payload  # raw float32, not JSON floats
    decoded = decode_payload(op_of(batch), payload)
    assert isinstance(decoded, UpsertBatch)
    assert decoded.ids == batch.ids and decoded.metadata == batch.metadata
    assert np.array_equal(decoded.vectors, vectors)


def test_upsert_without_metadata_stores_none() -> None:
    batch = UpsertBatch("c", ["a"], np.ones((1, 2), np.float32), [None])
    decoded = decode_payload(op_of(batch), encode_payload(batch))
    assert isinstance(decoded, UpsertBatch) and decoded.metadata == [None]


@pytest.mark.parametrize(
    "change",
    [
        CreateCollection(CollectionConfig("c", 8, "cosine", HnswParams(8, 50, 20))),
        DropCollection("c"),
        DeleteBatch("c", ["a", "b"]),
        Noop(),
    ],
)
def test_other_payloads_roundtrip(change: object) -> None:
    assert decode_payload(op_of(change), encode_payload(change)) == change  # type: ignore[arg-type]


def test_malformed_payloads_raise() -> None:
    good = encode_payload(DeleteBatch("c", ["a"]))
    with pytest.raises(PayloadError):
        decode_payload(4, good[:-1])
    with pytest.raises(PayloadError):
        decode_payload(4, good + b"x")
    with pytest.raises(PayloadError):
        decode_payload(99, b"")
    with pytest.raises(PayloadError):
        decode_payload(1, b"{not json")
