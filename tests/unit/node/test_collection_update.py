"""A collection's live settings (``PATCH /v1/collections/{name}``): the UPDATE_COLLECTION
record, its validation, and that every path that rebuilds state (restart, checkpoint,
replication, snapshot install, rewind) keeps the new ef_search."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dvecdb_node.api.auth import check_access
from dvecdb_node.api.validation import parse_collection_update
from dvecdb_node.credentials import Credentials
from dvecdb_node.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from dvecdb_node.storage.engine import Engine
from dvecdb_node.storage.records import (
    CollectionConfig,
    CreateCollection,
    HnswParams,
    Op,
    PayloadError,
    UpdateCollection,
    decode_payload,
    encode_payload,
    op_of,
)
from dvecdb_node.storage.wal import FrameDecoder
from tests.support.engines import follow, make_batch, open_engine

pytestmark = pytest.mark.unit

DIM = 4


def _ef(engine: Engine, name: str = "c") -> tuple[int, int]:
    """(the config's default ef, the ef the hnswlib index searches with)."""
    collection = engine.collection(name)
    return collection.config.hnsw.ef_search, int(collection._index.ef)


async def _seeded(path: Path) -> Engine:
    engine = await open_engine(path)
    config = CollectionConfig("c", DIM, "l2", HnswParams(ef_search=16))
    await engine.submit(CreateCollection(config), epoch=1)
    await engine.submit(make_batch([str(i) for i in range(30)]), epoch=1)
    return engine


def test_the_record_roundtrips_under_its_own_op() -> None:
    change = UpdateCollection("c", ef_search=300)
    assert op_of(change) is Op.UPDATE_COLLECTION == 6
    assert decode_payload(6, encode_payload(change)) == change
    assert decode_payload(6, b'{"name": "c", "hnsw": {}}') == UpdateCollection("c")


@pytest.mark.parametrize(
    "payload",
    [b"[]", b'{"hnsw": {}}', b'{"name": "c", "hnsw": {"ef_search": 0}}', b'{"name": "c",'],
)
def test_a_malformed_record_is_a_payload_error(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_payload(6, payload)


async def test_an_update_changes_the_default_ef_and_survives_a_restart(tmp_path: Path) -> None:
    engine = await _seeded(tmp_path)
    assert _ef(engine) == (16, 16)
    result = await engine.submit(UpdateCollection("c", ef_search=123), epoch=1)
    assert result.seq == 3 and _ef(engine) == (123, 123)
    with pytest.raises(NotFound):
        await engine.submit(UpdateCollection("nope", ef_search=5), epoch=1)
    await engine.close()
    engine = await open_engine(tmp_path)  # replayed from the log
    assert _ef(engine) == (123, 123)
    assert engine.collection("c").count == 30
    await engine.close()


async def test_a_checkpoint_carries_the_new_ef(tmp_path: Path) -> None:
    engine = await _seeded(tmp_path)
    await engine.submit(UpdateCollection("c", ef_search=77), epoch=1)
    assert await engine.checkpoint() == 3
    await engine.close()
    shutil.rmtree(tmp_path / "wal")  # only the checkpoint can tell the ef now
    engine = await open_engine(tmp_path)
    assert engine.checkpoint_seq == 3 and _ef(engine) == (77, 77)
    await engine.close()


async def test_a_follower_applies_it_and_a_snapshot_install_carries_it(tmp_path: Path) -> None:
    leader = await _seeded(tmp_path / "leader")
    await leader.submit(UpdateCollection("c", ef_search=90), epoch=1)
    streamed = await open_engine(tmp_path / "streamed")
    assert await follow(streamed, FrameDecoder().feed(leader.wal.read_frames(1))) == 3
    assert _ef(streamed) == (90, 90)
    installed = await open_engine(tmp_path / "installed")
    async with leader.snapshot() as (archive, seq):
        copy = tmp_path / "snap.tar"
        shutil.copy(archive, copy)
    assert await installed.install_snapshot(copy) == seq == 3
    assert _ef(installed) == (90, 90)
    await leader.submit(UpdateCollection("c", ef_search=45), epoch=1)
    await follow(installed, FrameDecoder().feed(leader.wal.read_frames(4)))
    assert _ef(installed) == (45, 45)
    for engine in (leader, streamed, installed):
        await engine.close()


async def test_a_rewind_before_the_update_restores_the_old_ef(tmp_path: Path) -> None:
    engine = await _seeded(tmp_path)
    await engine.submit(UpdateCollection("c", ef_search=200), epoch=1)
    assert await engine.truncate_after(2)
    assert _ef(engine) == (16, 16)
    await engine.close()


async def test_a_narrow_search_after_the_update_restores_the_new_default(tmp_path: Path) -> None:
    engine = await _seeded(tmp_path)
    await engine.submit(UpdateCollection("c", ef_search=64), epoch=1)
    collection = engine.collection("c")
    query = make_batch(["q"], 9).vectors
    collection.search(query, 3, ef=8)  # below the default: set and put back
    assert _ef(engine) == (64, 64)
    await engine.close()


def test_the_body_takes_ef_search_and_an_ack() -> None:
    change, ack = parse_collection_update("c", b'{"hnsw": {"ef_search": 128}, "ack": "quorum"}')
    assert change == UpdateCollection("c", ef_search=128) and ack == "quorum"


@pytest.mark.parametrize(
    ("body", "code", "names"),
    [
        (b'{"hnsw": {"m": 8}}', "immutable_setting", "hnsw.m"),
        (b'{"hnsw": {"ef_search": 10, "ef_construction": 9}}', "immutable_setting", "hnsw.ef_c"),
        (b'{"dimension": 3, "hnsw": {"ef_search": 10}}', "immutable_setting", "dimension"),
        (b'{"metric": "ip"}', "immutable_setting", "metric"),
        (b'{"hnsw": {"ef_search": 0}}', "invalid_input", "ef_search"),
        (b'{"hnsw": {"ef_search": 5000}}', "invalid_input", "ef_search"),
        (b'{"hnsw": {}}', "invalid_input", "ef_search"),
        (b"{}", "invalid_input", "hnsw"),
        (b'{"hnsw": {"ef_search": 10}, "other": 1}', "invalid_input", "other"),
        (b"", "malformed_json", "empty"),
    ],
)
def test_anything_but_a_live_setting_is_refused_plainly(body: bytes, code: str, names: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_collection_update("c", body)
    assert caught.value.code == code and names in str(caught.value)


def test_an_update_is_a_write_for_access() -> None:
    creds = Credentials(api_keys=("key",), read_only_keys=("ro",), cluster_tokens=("tok",))
    path = "/v1/collections/c"
    check_access("PATCH", path, "key", creds)
    check_access("PATCH", path, "tok", creds)
    with pytest.raises(Forbidden) as caught:
        check_access("PATCH", path, "ro", creds)
    assert caught.value.code == "read_only"
    with pytest.raises(Unauthorized):
        check_access("PATCH", path, None, creds)
