"""WAL framing, segments, torn/corrupt tails, and the raw-frame reads replication relies on."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dvecdb_node.storage import wal as wal_module
from dvecdb_node.storage.wal import (
    HEADER_SIZE,
    FrameDecoder,
    FrameError,
    SeqGapError,
    SeqNotRetainedError,
    WalCorruptError,
    WriteAheadLog,
    decode_frames,
    encode_frame,
    encode_record,
)

pytestmark = pytest.mark.unit


def _fill(wal: WriteAheadLog, first: int, last: int, epoch: int = 1, size: int = 10) -> None:
    for seq in range(first, last + 1):
        wal.append([encode_record(seq, epoch, 3, bytes([seq % 256]) * size)])


def test_frame_layout_roundtrips() -> None:
    frame = encode_frame(7, 3, 4, b"payload")
    assert len(frame) == HEADER_SIZE + len(b"payload")
    [record] = decode_frames(frame)
    assert (record.seq, record.epoch, record.op, bytes(record.payload)) == (7, 3, 4, b"payload")
    assert record.frame == frame


def test_crc_mismatch_is_detected() -> None:
    frame = bytearray(encode_frame(1, 1, 3, b"abcdef"))
    frame[-1] ^= 0xFF
    with pytest.raises(FrameError):
        decode_frames(bytes(frame))


def test_decoder_handles_arbitrary_chunking() -> None:
    stream = b"".join(encode_frame(s, 1, 3, b"x" * s) for s in range(1, 20))
    decoder = FrameDecoder()
    seqs: list[int] = []
    for i in range(0, len(stream), 7):
        seqs.extend(r.seq for r in decoder.feed(stream[i : i + 7]))
    assert seqs == list(range(1, 20))
    assert decoder.pending == 0


def test_decoder_rejects_impossible_length() -> None:
    with pytest.raises(FrameError):
        FrameDecoder().feed(b"\xff\xff\xff\xff" + b"\x00" * 30)


def test_append_reopen_keeps_records(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 50)
    wal.close()
    wal, report = WriteAheadLog.open(tmp_path)
    assert report.reason is None
    assert (wal.first_seq, wal.last_seq) == (1, 50)
    assert [r.seq for r in wal.iter_records(10)] == list(range(10, 51))


def test_append_requires_dense_seqs(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 3)
    with pytest.raises(SeqGapError):
        wal.append([encode_record(5, 1, 3, b"")])
    assert wal.last_seq == 3


def test_torn_tail_is_dropped(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 10)
    wal.close()
    [segment] = sorted(tmp_path.glob("*.wal"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # the last frame loses its end
    wal, report = WriteAheadLog.open(tmp_path)
    assert wal.last_seq == 9
    assert report.reason is not None and "torn" in report.reason
    assert segment.stat().st_size == len(data) - len(encode_frame(10, 1, 3, b"\n" * 10))
    _fill(wal, 10, 12)  # the log continues cleanly after the cut
    wal.close()
    wal, report = WriteAheadLog.open(tmp_path)
    assert wal.last_seq == 12 and report.reason is None


def test_corrupt_record_in_an_earlier_segment_refuses_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=200)
    _fill(wal, 1, 30)
    wal.close()
    segments = sorted(tmp_path.glob("*.wal"))
    assert len(segments) > 3
    victim = segments[1]
    data = bytearray(victim.read_bytes())
    data[HEADER_SIZE + 2] ^= 0x55  # payload byte of the segment's first record
    victim.write_bytes(bytes(data))
    before = {p: p.read_bytes() for p in segments}
    with pytest.raises(WalCorruptError) as caught:
        WriteAheadLog.open(tmp_path, segment_bytes=200)
    assert caught.value.path == victim and caught.value.offset == 0
    assert victim.name in str(caught.value) and "offset 0" in str(caught.value)
    assert {p: p.read_bytes() for p in sorted(tmp_path.glob("*.wal"))} == before


def test_corrupt_record_with_valid_records_after_it_in_the_last_segment_refuses(
    tmp_path: Path,
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 10)
    wal.close()
    [segment] = sorted(tmp_path.glob("*.wal"))
    frame = len(encode_frame(1, 1, 3, b"x" * 10))
    data = bytearray(segment.read_bytes())
    data[4 * frame + HEADER_SIZE] ^= 0x01  # record 5 of 10
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError) as caught:
        WriteAheadLog.open(tmp_path)
    assert caught.value.offset == 4 * frame and "seq 6" in str(caught.value)
    assert segment.read_bytes() == bytes(data)


def test_flipped_length_field_mid_segment_is_not_taken_for_a_torn_tail(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 10)
    wal.close()
    [segment] = sorted(tmp_path.glob("*.wal"))
    frame = len(encode_frame(1, 1, 3, b"x" * 10))
    data = bytearray(segment.read_bytes())
    data[3 * frame + 1] ^= 0x10  # record 4 now claims to run past the end of the file
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruptError):
        WriteAheadLog.open(tmp_path)


@pytest.mark.parametrize("damage", ["zeros", "flip_last"])
def test_corrupt_tail_of_the_last_segment_is_cut(tmp_path: Path, damage: str) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=200)
    _fill(wal, 1, 20)
    wal.close()
    last = sorted(tmp_path.glob("*.wal"))[-1]
    data = bytearray(last.read_bytes())
    size = len(data)
    if damage == "zeros":  # a crash after the size grew but before the data reached the disk
        data += b"\x00" * 700
    else:  # the final record garbled, nothing after it
        data[-1] ^= 0xFF
    last.write_bytes(bytes(data))
    wal, report = WriteAheadLog.open(tmp_path, segment_bytes=200)
    assert report.reason is not None
    frame = len(encode_frame(1, 1, 3, b"x" * 10))
    assert wal.last_seq == (20 if damage == "zeros" else 19)
    assert last.stat().st_size == (size if damage == "zeros" else size - frame)


def test_gap_between_segments_refuses(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=200)
    _fill(wal, 1, 30)
    wal.close()
    segments = sorted(tmp_path.glob("*.wal"))
    segments[1].unlink()
    with pytest.raises(WalCorruptError) as caught:
        WriteAheadLog.open(tmp_path, segment_bytes=200)
    assert caught.value.path == segments[2]
    assert sorted(tmp_path.glob("*.wal")) == [segments[0], *segments[2:]]


def test_segments_roll_and_drop_before(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=100)
    _fill(wal, 1, 20)
    count = len(list(tmp_path.glob("*.wal")))
    assert count > 2
    dropped = wal.drop_before(10)
    assert dropped > 0
    assert wal.first_seq <= 10
    with pytest.raises(SeqNotRetainedError):
        wal.read_frames(wal.first_seq - 1)
    assert decode_frames(wal.read_frames(10, max_bytes=10_000))[0].seq == 10


def test_read_frames_respects_bounds(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 10, size=100)
    frame_len = HEADER_SIZE + 100
    chunk = decode_frames(wal.read_frames(3, max_bytes=frame_len * 3))
    assert [r.seq for r in chunk] == [3, 4, 5]
    assert [r.seq for r in decode_frames(wal.read_frames(3, max_bytes=1))] == [3]
    assert [r.seq for r in decode_frames(wal.read_frames(3, upto_seq=4))] == [3, 4]
    assert wal.read_frames(11) == b""
    spans = wal.frame_spans(2, 5)
    assert sum(length for _, _, length in spans) == 4 * frame_len


def test_raw_frames_append_to_a_follower_log_unchanged(tmp_path: Path) -> None:
    leader, _ = WriteAheadLog.open(tmp_path / "leader")
    _fill(leader, 1, 5, epoch=4)
    follower, _ = WriteAheadLog.open(tmp_path / "follower")
    follower.append(FrameDecoder().feed(leader.read_frames(1)))
    assert follower.read_frames(1) == leader.read_frames(1)
    assert {r.epoch for r in follower.iter_records(1)} == {4}


def test_truncate_after_across_segments(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=120)
    _fill(wal, 1, 20)
    wal.truncate_after(7)
    assert wal.last_seq == 7
    _fill(wal, 8, 9, epoch=2)
    wal.close()
    wal, report = WriteAheadLog.open(tmp_path, segment_bytes=120)
    assert report.reason is None
    assert [(r.seq, r.epoch) for r in wal.iter_records(6)] == [(6, 1), (7, 1), (8, 2), (9, 2)]


def test_reset_starts_after_a_snapshot(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 5)
    wal.reset(101)
    assert (wal.first_seq, wal.last_seq, wal.durable_seq) == (101, 100, 100)
    _fill(wal, 101, 102)
    wal.close()
    wal, _ = WriteAheadLog.open(tmp_path)
    assert (wal.first_seq, wal.last_seq) == (101, 102)


def test_sync_advances_durable_seq(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 3)
    assert wal.durable_seq == 0
    assert wal.sync() == 3
    assert wal.durable_seq == 3


class _RacingOs:
    """``os`` for the WAL module whose ``write`` first runs ``before_write`` (an injected race)."""

    def __init__(self, before_write: Callable[[], None]) -> None:
        self._before_write = before_write

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        self._before_write()
        return os.write(fd, data)


def test_sync_during_a_write_covers_only_bytes_written_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = WriteAheadLog.open(tmp_path)
    _fill(wal, 1, 3)
    wal.sync()
    synced: list[int] = []
    # A group-commit fsync (a worker thread) runs while the append's write is still pending.
    monkeypatch.setattr(wal_module, "os", _RacingOs(lambda: synced.append(wal.sync())))
    wal.append([encode_record(4, 1, 3, b"not yet on disk")])
    monkeypatch.undo()
    assert synced == [3]
    assert wal.durable_seq == 3 and wal.last_seq == 4
    assert wal.sync() == 4


def test_epoch_at_follows_appends_truncation_reopen_and_reset(tmp_path: Path) -> None:
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=120)
    _fill(wal, 1, 5, epoch=1)
    _fill(wal, 6, 8, epoch=3)
    _fill(wal, 9, 12, epoch=4)
    assert [wal.epoch_at(s) for s in (0, 1, 5, 6, 8, 9, 12, 13)] == [
        None, 1, 1, 3, 3, 4, 4, None
    ]  # fmt: skip
    wal.truncate_after(7)
    _fill(wal, 8, 9, epoch=5)
    assert [wal.epoch_at(s) for s in (5, 7, 8, 9, 10)] == [1, 3, 5, 5, None]
    wal.close()
    wal, _ = WriteAheadLog.open(tmp_path, segment_bytes=120)
    assert [wal.epoch_at(s) for s in range(1, 11)] == [1] * 5 + [3, 3, 5, 5, None]
    assert wal.drop_before(7) > 0
    assert wal.epoch_at(wal.first_seq - 1) is None and wal.epoch_at(9) == 5
    wal.reset(101)
    assert wal.epoch_at(9) is None
    _fill(wal, 101, 101, epoch=6)
    assert wal.epoch_at(101) == 6
