"""Write-ahead log: segmented files of CRC32-framed records.

Frame layout (little-endian), identical on disk and on the replication stream::

    u32 length | u32 crc32 | u64 seq | u64 epoch | u8 op | payload
    \\-------/   \\------/   \\--------------- length bytes ----------/
                  crc32 covers these ``length`` bytes (seq .. end of payload)

``length`` is ``17 + len(payload)``. Seqs are dense from 1: record ``n`` is followed by
``n + 1``. Segments are files ``<first_seq:020d>.wal``; a segment is rolled once it passes
``segment_bytes``, so old segments can be deleted whole once a checkpoint covers them.

Recovery (:meth:`WriteAheadLog.open`) cuts only what a crash can leave: a torn or corrupt
tail of the LAST segment with no valid frame after it (a write that never finished, so never
acknowledged: every acknowledged record was fsynced first). Anything else (a bad frame in an
earlier segment, a valid frame after the bad one, a seq out of order, a gap between segments)
is damage to acknowledged data: opening refuses with :class:`WalCorruptError`, naming the file
and byte offset, and deletes nothing (etcd's ``wal.Repair`` rule).

Thread model: appends, rolls and truncation happen on one thread (the engine's event loop);
:meth:`WriteAheadLog.sync` may run in a worker thread at the same time (group commit). An
appended record counts (``last_seq``) only once its bytes are written, so a sync never reports
durable a record whose write had not finished when its fsync began.

Failures: a failed write is cut back to the last good offset (:class:`WalWriteError`; the log
goes on once space returns); a failed fsync poisons the log for good (:class:`WalFailedError`:
the kernel may have dropped the dirty pages, so a later fsync that succeeds proves nothing).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import struct
import threading
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

_PREFIX = struct.Struct("<II")  # length, crc32
_BODY_HEAD = struct.Struct("<QQB")  # seq, epoch, op
HEADER_SIZE = _PREFIX.size + _BODY_HEAD.size  # 25
MAX_FRAME_BYTES = 1 << 30  # a length above this is corruption, not a record
DEFAULT_SEGMENT_BYTES = 64 << 20
_SUFFIX = ".wal"


class FrameError(ValueError):
    """A frame fails its CRC or has an impossible length."""


class WalCorruptError(Exception):
    """The log is damaged where a crash cannot have torn it: recovery must not cut it."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"WAL corrupt: {path} at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class WalWriteError(Exception):
    """A write failed (e.g. ENOSPC) and the segment was cut back to its last good offset.

    The log is exactly as it was before the failed append, so later appends may succeed.
    """

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(message)
        self.errno = errno


class WalFailedError(Exception):
    """The log can no longer be trusted (an fsync failed, or a failed write could not be cut
    back); every later append and sync raises this. Only reopening (a restart) clears it."""


class SeqNotRetainedError(LookupError):
    """The requested seq is older than the oldest retained record (a snapshot is needed)."""


class SeqGapError(ValueError):
    """An appended record's seq does not follow the log's last seq."""


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded log record; ``frame`` holds its exact bytes as they lie on disk."""

    seq: int
    epoch: int
    op: int
    frame: bytes

    @property
    def payload(self) -> memoryview:
        return memoryview(self.frame)[HEADER_SIZE:]


def encode_frame(seq: int, epoch: int, op: int, payload: bytes) -> bytes:
    """Frame one record (see the module docstring)."""
    body = _BODY_HEAD.pack(seq, epoch, op) + payload
    return _PREFIX.pack(len(body), zlib.crc32(body)) + body


def encode_record(seq: int, epoch: int, op: int, payload: bytes) -> Record:
    return Record(seq, epoch, op, encode_frame(seq, epoch, op, payload))


def _parse_at(buf: bytes | bytearray | memoryview, pos: int) -> tuple[Record | None, int]:
    """Decode the frame at ``pos``: (record, next pos), or (None, pos) if it is incomplete.

    Raises :class:`FrameError` if the frame is complete but corrupt.
    """
    if len(buf) - pos < _PREFIX.size:
        return None, pos
    length, crc = _PREFIX.unpack_from(buf, pos)
    if length < _BODY_HEAD.size or length > MAX_FRAME_BYTES:
        raise FrameError(f"impossible frame length {length}")
    end = pos + _PREFIX.size + length
    if end > len(buf):
        return None, pos
    body = memoryview(buf)[pos + _PREFIX.size : end]
    if zlib.crc32(body) != crc:
        raise FrameError("frame crc32 mismatch")
    seq, epoch, op = _BODY_HEAD.unpack_from(body)
    return Record(seq, epoch, op, bytes(memoryview(buf)[pos:end])), end


class FrameDecoder:
    """Incremental decoder for a chunked byte stream of frames (the replication stream)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back until more arrive."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Record]:
        """Add bytes; return every record completed by them. Raises FrameError on corruption."""
        self._buf += data
        records: list[Record] = []
        pos = 0
        while True:
            record, nxt = _parse_at(self._buf, pos)
            if record is None:
                break
            records.append(record)
            pos = nxt
        if pos:
            del self._buf[:pos]
        return records


def decode_frames(data: bytes) -> list[Record]:
    """Decode a buffer of whole frames; raises FrameError if anything is torn or corrupt."""
    decoder = FrameDecoder()
    records = decoder.feed(data)
    if decoder.pending:
        raise FrameError("trailing partial frame")
    return records


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's fsync makes its entries' creation durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Segment:
    path: Path
    first_seq: int
    size: int = 0
    offsets: array[int] = field(default_factory=lambda: array("q"))

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.offsets) - 1

    def offset_of(self, seq: int) -> int:
        return self.offsets[seq - self.first_seq]

    def end_of(self, index: int) -> int:
        """Byte offset just past the record at position ``index`` of this segment."""
        return self.offsets[index + 1] if index + 1 < len(self.offsets) else self.size


class EpochRuns:
    """The epoch of every retained record, kept as runs: epochs change rarely, so this costs
    a few entries for the whole log and answers :meth:`at` with one bisect, no disk read."""

    __slots__ = ("_epochs", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []  # first seq of each run, ascending
        self._epochs: list[int] = []

    def note(self, seq: int, epoch: int) -> None:
        """Record ``seq`` (the next seq after every one noted so far) at ``epoch``."""
        if not self._epochs or self._epochs[-1] != epoch:
            self._starts.append(seq)
            self._epochs.append(epoch)

    def at(self, seq: int) -> int | None:
        """Epoch of ``seq``; the caller checks that ``seq`` is retained."""
        index = bisect.bisect_right(self._starts, seq) - 1
        return self._epochs[index] if index >= 0 else None

    def cut_after(self, seq: int) -> None:
        """Forget every seq after ``seq``."""
        index = bisect.bisect_right(self._starts, seq)
        del self._starts[index:], self._epochs[index:]

    def drop_before(self, seq: int) -> None:
        """Forget runs that end before ``seq`` (kept: the run holding ``seq``)."""
        index = bisect.bisect_right(self._starts, seq) - 1
        if index > 0:
            del self._starts[:index], self._epochs[:index]

    def clear(self) -> None:
        self._starts.clear()
        self._epochs.clear()


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{_SUFFIX}"


@dataclass(frozen=True, slots=True)
class OpenReport:
    """What recovery found: how many bytes of torn tail it cut from the last segment, and why."""

    dropped_bytes: int
    reason: str | None


class WriteAheadLog:
    """Append-only segmented log; see the module docstring for format and recovery."""

    def __init__(
        self,
        directory: Path,
        segments: list[_Segment],
        segment_bytes: int,
        epochs: EpochRuns | None = None,
    ) -> None:
        self._dir = directory
        self._segments = segments
        self._epochs = epochs if epochs is not None else EpochRuns()
        self._segment_bytes = segment_bytes
        self._fd = os.open(segments[-1].path, os.O_WRONLY | os.O_APPEND)
        self._fd_lock = threading.Lock()
        self._durable_seq = segments[-1].last_seq
        self.bytes_written = 0
        self.failed: str | None = None  # set once; see WalFailedError

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        start_seq: int = 1,
    ) -> tuple[WriteAheadLog, OpenReport]:
        """Open (or create) the log, cutting a torn tail of the last segment only.

        ``start_seq`` is the first seq of a brand-new, empty log. Raises
        :class:`WalCorruptError` (and changes nothing) on damage a crash cannot explain.
        """
        directory.mkdir(parents=True, exist_ok=True)
        named: list[tuple[int, Path]] = []
        for path in sorted(p for p in directory.iterdir() if p.name.endswith(_SUFFIX)):
            try:
                named.append((int(path.name.removesuffix(_SUFFIX)), path))
            except ValueError:
                continue
        segments: list[_Segment] = []
        epochs = EpochRuns()
        dropped_bytes = 0
        reason: str | None = None
        for index, (first_seq, path) in enumerate(named):
            if segments and first_seq != segments[-1].last_seq + 1:
                raise WalCorruptError(
                    path, 0, f"segment starts at seq {first_seq}, not {segments[-1].last_seq + 1}"
                )
            segment, data, cut, why, whole = _scan_segment(path, first_seq, epochs)
            if cut is not None:
                if index != len(named) - 1:
                    raise WalCorruptError(path, cut, f"{why} (later segments follow)")
                if whole:  # a whole, CRC-valid frame out of order is no torn write
                    raise WalCorruptError(path, cut, why)
                found = _next_valid_frame(data, cut, segment.last_seq + 1)
                if found is not None:
                    raise WalCorruptError(
                        path,
                        cut,
                        f"{why}, yet a valid record (seq {found[1]}) follows at {found[0]}",
                    )
                reason = f"{path.name}@{cut}: {why}"
                dropped_bytes = len(data) - cut
                with open(path, "r+b") as fh:
                    fh.truncate(cut)
                    fh.flush()
                    os.fsync(fh.fileno())
            segments.append(segment)
        if not segments:
            segments.append(_create_segment(directory, start_seq))
        wal = cls(directory, segments, segment_bytes, epochs)
        return wal, OpenReport(dropped_bytes, reason)

    # -------------------------------------------------------------- positions
    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def first_seq(self) -> int:
        """Oldest retained seq (``last_seq + 1`` when the log holds no record)."""
        return self._segments[0].first_seq

    @property
    def last_seq(self) -> int:
        """Newest appended seq (``first_seq - 1`` when empty)."""
        return self._segments[-1].last_seq

    @property
    def next_seq(self) -> int:
        return self.last_seq + 1

    @property
    def durable_seq(self) -> int:
        """Newest seq known fsynced."""
        return self._durable_seq

    def epoch_at(self, seq: int) -> int | None:
        """Epoch of record ``seq`` (from memory), or None if the log does not hold it."""
        if seq < self.first_seq or seq > self.last_seq:
            return None
        return self._epochs.at(seq)

    def size_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    # ---------------------------------------------------------------- writing
    def append(self, records: list[Record]) -> None:
        """Append framed records whose seqs continue the log (epochs kept as given)."""
        if not records:
            return
        if self.failed is not None:
            raise WalFailedError(self.failed)
        expected = self.last_seq + 1
        for record in records:
            if record.seq != expected:
                raise SeqGapError(f"record seq {record.seq} does not follow {expected - 1}")
            expected += 1
        if self._segments[-1].size >= self._segment_bytes:
            self.roll()
        segment = self._segments[-1]
        data = b"".join(r.frame for r in records)
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self._cut_failed_write(segment, exc)
        # Only now do the records count (last_seq): a sync() running in a worker thread must
        # never mark durable a record whose bytes were not yet written when its fsync began.
        offset = segment.size
        epochs = self._epochs
        for record in records:
            segment.offsets.append(offset)
            offset += len(record.frame)
            epochs.note(record.seq, record.epoch)
        segment.size = offset
        self.bytes_written += len(data)

    def _cut_failed_write(self, segment: _Segment, exc: OSError) -> NoReturn:
        """Undo a partly written append so no torn record sits before later ones."""
        where = f"{segment.path} at byte offset {segment.size}"
        try:
            os.ftruncate(self._fd, segment.size)
        except OSError as cut_exc:
            self.failed = f"write to {where} failed ({exc}) and could not be cut back ({cut_exc})"
            raise WalFailedError(self.failed) from exc
        raise WalWriteError(exc.errno, f"write to {where} failed: {exc}") from exc

    def _fsync_or_fail(self) -> None:
        """fsync the active segment; a failure poisons the log (PostgreSQL's fsyncgate lesson:
        after a failed fsync the kernel may have dropped the dirty pages, and a retry that
        succeeds proves nothing)."""
        if self.failed is not None:
            raise WalFailedError(self.failed)
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self.failed = f"fsync of {self._segments[-1].path} failed: {exc}"
            raise WalFailedError(self.failed) from exc

    def sync(self) -> int:
        """fsync the active segment; returns the seq now durable. Safe from a worker thread.

        Covers the records whose bytes :meth:`append` had finished writing when the fsync
        began (append counts a record only after its write), and nothing after them.
        """
        with self._fd_lock:
            seq = self.last_seq
            self._fsync_or_fail()
            if seq > self._durable_seq:  # under the lock: a truncation may lower it meanwhile
                self._durable_seq = seq
            return self._durable_seq

    def mark_durable(self, seq: int) -> None:
        """Record durability established elsewhere (``fsync=none`` counts written as durable)."""
        if seq > self._durable_seq:
            self._durable_seq = min(seq, self.last_seq)

    def roll(self) -> None:
        """Start a new segment at ``next_seq`` (the old one is fsynced first)."""
        if not self._segments[-1].offsets:
            return
        if self.failed is not None:
            raise WalFailedError(self.failed)
        try:
            segment = _create_segment(self._dir, self.next_seq)
        except OSError as exc:
            # Nothing changed: the log goes on in the current segment. A half-made file must
            # not stay, since records of the current segment will pass its first seq.
            with contextlib.suppress(OSError):
                (self._dir / _segment_name(self.next_seq)).unlink(missing_ok=True)
            raise WalWriteError(exc.errno, f"cannot start segment {self.next_seq}: {exc}") from exc
        with self._fd_lock:
            self._fsync_or_fail()
            self._durable_seq = max(self._durable_seq, self.last_seq)
            os.close(self._fd)
            self._fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
        self._segments.append(segment)

    def truncate_after(self, seq: int) -> None:
        """Drop every record after ``seq`` (a follower whose log diverged after failover)."""
        if seq >= self.last_seq:
            return
        if seq < self.first_seq - 1:
            raise SeqNotRetainedError(f"seq {seq} is older than the retained log")
        with self._fd_lock:
            os.close(self._fd)
            unlinked = False
            while len(self._segments) > 1 and self._segments[-1].first_seq > seq + 1:
                self._segments.pop().path.unlink()
                unlinked = True
            if unlinked:
                # Before the cut below: a crash must not leave a cut segment and a later one
                # (a gap that recovery refuses); without the cut the log is merely longer.
                fsync_path(self._dir)
            segment = self._segments[-1]
            keep = seq - segment.first_seq + 1
            cut = segment.offsets[keep] if keep < len(segment.offsets) else segment.size
            del segment.offsets[keep:]
            self._epochs.cut_after(seq)
            segment.size = cut
            with open(segment.path, "r+b") as fh:
                fh.truncate(cut)
                fh.flush()
                os.fsync(fh.fileno())
            self._fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND)
            self._durable_seq = min(self._durable_seq, seq)

    def drop_before(self, seq: int) -> int:
        """Delete whole segments whose records all precede ``seq``; returns how many."""
        dropped = 0
        while len(self._segments) > 1 and self._segments[0].last_seq < seq:
            if self._segments[1].first_seq > seq:
                break
            self._segments.pop(0).path.unlink()
            dropped += 1
        if dropped:
            fsync_path(self._dir)
            self._epochs.drop_before(self.first_seq)
        return dropped

    def reset(self, next_seq: int) -> None:
        """Discard the whole log; the next record appended must be ``next_seq``.

        Used after installing a snapshot that covers ``next_seq - 1``.
        """
        with self._fd_lock:
            os.close(self._fd)
            for segment in self._segments:
                segment.path.unlink(missing_ok=True)
            # Old segments must be gone for good before the new one appears: an old one
            # surviving a crash next to it would be a gap, which recovery refuses.
            fsync_path(self._dir)
            fresh = _create_segment(self._dir, next_seq)
            self._segments = [fresh]
            self._epochs.clear()
            self._fd = os.open(fresh.path, os.O_WRONLY | os.O_APPEND)
            self._durable_seq = next_seq - 1

    def close(self) -> None:
        with self._fd_lock:
            if self._fd >= 0:
                try:
                    if self.failed is None:
                        self._fsync_or_fail()
                finally:
                    os.close(self._fd)
                    self._fd = -1

    # ---------------------------------------------------------------- reading
    def _locate(self, seq: int) -> tuple[int, int]:
        if seq < self.first_seq:
            raise SeqNotRetainedError(f"seq {seq} is older than first retained {self.first_seq}")
        lo, hi = 0, len(self._segments) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._segments[mid].first_seq <= seq:
                lo = mid
            else:
                hi = mid - 1
        return lo, self._segments[lo].offset_of(seq)

    def frame_spans(
        self, from_seq: int, upto_seq: int | None = None
    ) -> list[tuple[Path, int, int]]:
        """(path, offset, length) byte ranges holding records ``from_seq..upto_seq``.

        For sending log bytes as they lie on disk (``sendfile``). Raises
        :class:`SeqNotRetainedError` if ``from_seq`` is no longer retained.
        """
        last = self.last_seq if upto_seq is None else min(upto_seq, self.last_seq)
        if from_seq > last:
            return []
        index, offset = self._locate(from_seq)
        spans: list[tuple[Path, int, int]] = []
        while index < len(self._segments):
            segment = self._segments[index]
            if segment.first_seq > last:
                break
            if segment.offsets:
                end = segment.size if last >= segment.last_seq else segment.offset_of(last + 1)
                if end > offset:
                    spans.append((segment.path, offset, end - offset))
            index += 1
            offset = 0
        return spans

    def read_frames(
        self, from_seq: int, *, max_bytes: int = 4 << 20, upto_seq: int | None = None
    ) -> bytes:
        """Raw frame bytes from ``from_seq`` on (whole frames, at least one if any exist).

        Stops at ``upto_seq``, at ``max_bytes`` (after the first frame) or at a segment end.
        """
        spans = self.frame_spans(from_seq, upto_seq)
        if not spans:
            return b""
        path, offset, length = spans[0]
        index, _ = self._locate(from_seq)
        segment = self._segments[index]
        if length > max_bytes:
            # Cut at the last frame boundary within max_bytes, keeping at least one frame.
            first = from_seq - segment.first_seq
            last = segment.last_seq if upto_seq is None else min(upto_seq, segment.last_seq)
            last_index = last - segment.first_seq
            stop = first
            while stop < last_index and segment.end_of(stop + 1) - offset <= max_bytes:
                stop += 1
            length = segment.end_of(stop) - offset
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def iter_records(self, from_seq: int) -> Iterator[Record]:
        """Every record from ``from_seq`` on, read from the segment files."""
        if from_seq > self.last_seq:
            return
        index, offset = self._locate(max(from_seq, self.first_seq))
        for segment in self._segments[index:]:
            if not segment.offsets:
                continue
            with open(segment.path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(segment.size - offset)
            yield from decode_frames(data)
            offset = 0


def _create_segment(directory: Path, first_seq: int) -> _Segment:
    path = directory / _segment_name(first_seq)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_path(directory)
    return _Segment(path=path, first_seq=first_seq)


def _scan_segment(
    path: Path, first_seq: int, epochs: EpochRuns
) -> tuple[_Segment, bytes, int | None, str, bool]:
    """Index a segment's valid prefix (offsets; epochs go into ``epochs``).

    Returns (segment, file bytes, offset of the first bad frame or None, why, whether that
    frame is whole and CRC-valid but out of seq order).
    """
    data = path.read_bytes()
    segment = _Segment(path=path, first_seq=first_seq)
    pos = 0
    expected = first_seq
    while pos < len(data):
        try:
            record, nxt = _parse_at(data, pos)
        except FrameError as exc:
            segment.size = pos
            return segment, data, pos, str(exc), False
        if record is None:
            segment.size = pos
            return segment, data, pos, "torn frame", False
        if record.seq != expected:
            segment.size = pos
            return segment, data, pos, f"frame of seq {record.seq}, expected {expected}", True
        segment.offsets.append(pos)
        epochs.note(record.seq, record.epoch)
        expected += 1
        pos = nxt
    segment.size = pos
    return segment, data, None, "", False


def _next_valid_frame(data: bytes, start: int, min_seq: int) -> tuple[int, int] | None:
    """(offset, seq) of a whole, CRC-valid frame at or after ``start`` with seq >= ``min_seq``.

    A torn write leaves a short or garbled tail and nothing valid after it. Candidates are
    found with numpy (a seq field in range at some offset) and then CRC-checked, so a 64 MiB
    segment is searched in well under a second.
    """
    last_seq = min_seq + (len(data) - start) // HEADER_SIZE
    candidates: list[int] = []
    for align in range(8):
        first = start + _PREFIX.size + align  # the seq field of a frame at start + align
        count = (len(data) - first) // 8
        if count <= 0:
            continue
        seqs = np.frombuffer(data, dtype="<u8", count=count, offset=first)
        hits = np.nonzero((seqs >= min_seq) & (seqs <= last_seq))[0]
        candidates.extend(int(first + 8 * i - _PREFIX.size) for i in hits)
    for pos in sorted(candidates):
        try:
            record, _ = _parse_at(data, pos)
        except FrameError:
            continue
        if record is not None:
            return pos, record.seq
    return None
