"""Log record payloads: one compact binary encoding per kind of change.

Every change to the store is one record. The payload formats are the WAL's and the replication
stream's, so they are versioned by the ``Op`` code alone and must only ever grow new ops.

Vectors travel as raw little-endian float32, never as JSON floats: an upsert payload is

    u16 name_len | name utf-8 | u32 count | u32 dim | count x (u16 id_len | id utf-8)
    | count*dim float32 LE | u32 meta_len | orjson array of count (object | null)

A delete payload is ``u16 name_len | name | u32 count | count x (u16 id_len | id)``; a
create-collection payload is the orjson of the collection config; a drop is the name. An
update-collection payload is the orjson of ``{"name", "hnsw": {"ef_search"}}``: the settings
that may change after creation (the others shape the stored graph). A slot-fence payload is the
orjson of ``{"ranges": [[first, last], ...], "fenced", "owner", "map_version"}`` (resharding:
ordinary writes to fenced slots are refused, see :mod:`.slotfence`).
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

Metadata = dict[str, Any]
Float32Matrix = npt.NDArray[np.float32]

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_COUNT_DIM = struct.Struct("<II")


class Op(enum.IntEnum):
    """The kind of change a record carries (u8 on the wire)."""

    CREATE_COLLECTION = 1
    DROP_COLLECTION = 2
    UPSERT = 3
    DELETE = 4
    # Changes nothing; a new leader may write one to open its epoch in the log.
    NOOP = 5
    # Changes a collection's live settings (today the default ef_search).
    UPDATE_COLLECTION = 6
    # Fences or unfences hash slots (resharding moves them to another shard).
    SLOT_FENCE = 7


class PayloadError(ValueError):
    """A payload does not decode: the record is corrupt or of an unknown op."""


@dataclass(frozen=True, slots=True)
class HnswParams:
    """HNSW build and search parameters of one collection."""

    m: int = 16
    ef_construction: int = 200
    ef_search: int = 64


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    """What a collection is: fixed at creation."""

    name: str
    dimension: int
    metric: str  # "l2" | "cosine" | "ip"
    hnsw: HnswParams = field(default_factory=HnswParams)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dimension": self.dimension,
            "metric": self.metric,
            "hnsw": {
                "m": self.hnsw.m,
                "ef_construction": self.hnsw.ef_construction,
                "ef_search": self.hnsw.ef_search,
            },
        }

    def with_ef_search(self, ef: int) -> CollectionConfig:
        """This config with another default search ef (the one setting that changes live)."""
        return dataclasses.replace(self, hnsw=dataclasses.replace(self.hnsw, ef_search=ef))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionConfig:
        hnsw = data.get("hnsw") or {}
        return cls(
            name=str(data["name"]),
            dimension=int(data["dimension"]),
            metric=str(data["metric"]),
            hnsw=HnswParams(
                m=int(hnsw.get("m", 16)),
                ef_construction=int(hnsw.get("ef_construction", 200)),
                ef_search=int(hnsw.get("ef_search", 64)),
            ),
        )


@dataclass(frozen=True, slots=True)
class CreateCollection:
    config: CollectionConfig


@dataclass(frozen=True, slots=True)
class DropCollection:
    name: str


@dataclass(frozen=True, slots=True)
class UpdateCollection:
    """New values of the settings that can change live (None: left as it is)."""

    name: str
    ef_search: int | None = None

    def to_dict(self) -> dict[str, Any]:
        hnsw = {} if self.ef_search is None else {"ef_search": self.ef_search}
        return {"name": self.name, "hnsw": hnsw}

    @classmethod
    def from_dict(cls, data: Any) -> UpdateCollection:
        if not isinstance(data, dict) or not isinstance(data.get("hnsw", {}), dict):
            raise ValueError("not an object")
        ef = data.get("hnsw", {}).get("ef_search")
        if ef is not None and (not isinstance(ef, int) or ef < 1):
            raise ValueError(f"ef_search {ef!r} is not a positive integer")
        return cls(name=str(data["name"]), ef_search=ef)


@dataclass(frozen=True, slots=True)
class UpsertBatch:
    """Ids are unique within a batch (the API keeps the last of duplicates)."""

    collection: str
    ids: list[str]
    vectors: Float32Matrix  # shape (len(ids), dim), float32, C-contiguous
    metadata: list[Metadata | None]


@dataclass(frozen=True, slots=True)
class DeleteBatch:
    collection: str
    ids: list[str]


@dataclass(frozen=True, slots=True)
class Noop:
    pass


@dataclass(frozen=True, slots=True)
class SlotFence:
    """Fence (or lift the fence of) these inclusive slot ranges; ``owner`` and
    ``map_version`` say where the slots went (told to a refused writer; None: unknown)."""

    ranges: tuple[tuple[int, int], ...]
    fenced: bool
    owner: int | None = None
    map_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ranges": [list(r) for r in self.ranges],
            "fenced": self.fenced,
            "owner": self.owner,
            "map_version": self.map_version,
        }

    @classmethod
    def from_dict(cls, data: Any) -> SlotFence:
        if not isinstance(data, dict):
            raise ValueError("not an object")
        ranges = tuple((int(first), int(last)) for first, last in data["ranges"])
        owner, version = data.get("owner"), data.get("map_version")
        return cls(
            ranges=ranges,
            fenced=bool(data["fenced"]),
            owner=None if owner is None else int(owner),
            map_version=None if version is None else int(version),
        )


Change = (
    CreateCollection | DropCollection | UpsertBatch | DeleteBatch | Noop | UpdateCollection
    | SlotFence
)  # fmt: skip


def op_of(change: Change) -> Op:
    """The op code that a change is logged under."""
    match change:
        case CreateCollection():
            return Op.CREATE_COLLECTION
        case DropCollection():
            return Op.DROP_COLLECTION
        case UpsertBatch():
            return Op.UPSERT
        case DeleteBatch():
            return Op.DELETE
        case Noop():
            return Op.NOOP
        case UpdateCollection():
            return Op.UPDATE_COLLECTION
        case SlotFence():
            return Op.SLOT_FENCE


def _put_str(out: list[bytes], text: str) -> None:
    raw = text.encode()
    out.append(_U16.pack(len(raw)))
    out.append(raw)


def encode_ids(ids: list[str]) -> bytes:
    """``count x (u16 len | utf-8)``: the id list of upsert, delete and bulk bodies."""
    out: list[bytes] = []
    for item in ids:
        _put_str(out, item)
    return b"".join(out)


def encode_payload(change: Change) -> bytes:
    """The binary payload of a change (see the module docstring)."""
    match change:
        case CreateCollection(config):
            return orjson.dumps(config.to_dict())
        case DropCollection(name):
            return name.encode()
        case UpsertBatch(collection, ids, vectors, metadata):
            out: list[bytes] = []
            _put_str(out, collection)
            out.append(_COUNT_DIM.pack(len(ids), int(vectors.shape[1])))
            out.append(encode_ids(ids))
            out.append(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            meta = orjson.dumps(metadata) if any(m is not None for m in metadata) else b""
            out.append(_U32.pack(len(meta)))
            out.append(meta)
            return b"".join(out)
        case DeleteBatch(collection, ids):
            out = []
            _put_str(out, collection)
            out.append(_U32.pack(len(ids)))
            out.append(encode_ids(ids))
            return b"".join(out)
        case Noop():
            return b""
        case UpdateCollection() | SlotFence():
            return orjson.dumps(change.to_dict())


class _Reader:
    """Bounds-checked cursor over a payload."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise PayloadError("payload truncated")
        view = self.data[self.pos : end]
        self.pos = end
        return view

    def u16(self) -> int:
        return int(_U16.unpack(self.take(2))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def text(self) -> str:
        try:
            return bytes(self.take(self.u16())).decode()
        except UnicodeDecodeError as exc:
            raise PayloadError("invalid utf-8 in payload") from exc

    def done(self) -> None:
        if self.pos != len(self.data):
            raise PayloadError("trailing bytes in payload")


def decode_ids(reader: _Reader, count: int) -> list[str]:
    return [reader.text() for _ in range(count)]


def decode_payload(op: int, payload: bytes | memoryview) -> Change:
    """Inverse of :func:`encode_payload`; raises :class:`PayloadError` on anything malformed."""
    try:
        kind = Op(op)
    except ValueError as exc:
        raise PayloadError(f"unknown op {op}") from exc
    reader = _Reader(payload)
    try:
        match kind:
            case Op.CREATE_COLLECTION:
                return CreateCollection(CollectionConfig.from_dict(orjson.loads(payload)))
            case Op.DROP_COLLECTION:
                return DropCollection(bytes(payload).decode())
            case Op.UPSERT:
                name = reader.text()
                count, dim = _COUNT_DIM.unpack(reader.take(_COUNT_DIM.size))
                ids = decode_ids(reader, count)
                raw = reader.take(count * dim * 4)
                vectors = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(count, dim)
                meta_raw = reader.take(reader.u32())
                reader.done()
                metadata: list[Metadata | None] = (
                    list(orjson.loads(meta_raw)) if len(meta_raw) else [None] * count
                )
                if len(metadata) != count:
                    raise PayloadError("metadata count does not match ids")
                return UpsertBatch(name, ids, vectors, metadata)
            case Op.DELETE:
                name = reader.text()
                ids = decode_ids(reader, reader.u32())
                reader.done()
                return DeleteBatch(name, ids)
            case Op.NOOP:
                reader.done()
                return Noop()
            case Op.UPDATE_COLLECTION:
                return UpdateCollection.from_dict(orjson.loads(payload))
            case Op.SLOT_FENCE:
                return SlotFence.from_dict(orjson.loads(payload))
    except (KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
        if isinstance(exc, PayloadError):
            raise
        raise PayloadError(f"malformed {kind.name} payload: {exc}") from exc
