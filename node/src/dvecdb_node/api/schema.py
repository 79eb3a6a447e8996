"""The wire definitions of the node API (v1): every JSON body once, as msgspec types.

The request validation (``validation``, ``querybody``, ``bulk``, the admin and replication
handlers) decodes with these types and the OpenAPI document (``openapi``) is generated from
them, so the two cannot drift: what the document calls valid is what the node accepts.

msgspec rather than pydantic or hand-written checks: it validates while it decodes, in C,
and on the search and upsert paths it costs less than ``orjson.loads`` plus the checks it
replaces (``tests/support/bench_api_bodies.py`` measures the three); it emits JSON Schema
2020-12, the dialect of OpenAPI 3.1.

Limits that are node settings (``max_dimension``, ``max_batch``, ``max_k``,
``max_queries``) are part of the types: :func:`bodies` builds subclasses that carry them, so
each node's document states its own limits and its validation enforces the same numbers.

Each constraint names the error code a violation answers with (``Meta.extra``):
``code`` for a wrong type or value, ``range`` for a number out of its range, ``short`` and
``long`` for a list with too few or too many items (``long`` answers 413). :func:`invalid`
turns a :class:`msgspec.ValidationError` into that error by following its path.
"""

# No ``from __future__ import annotations``: msgspec reads these annotations at class creation.

import functools
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, cast, get_args

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType
from msgspec import inspect as mi

from dvecdb_node.errors import InvalidInput, NodeError, PayloadTooLarge
from dvecdb_node.settings import NodeSettings

T = TypeVar("T")
NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
NAME_MESSAGE = (
    "collection name must be 1-63 characters of letters, digits, '_' or '-', "
    "starting with a letter or digit"
)
MAX_ID_CHARS = 256
MAX_INT64 = 2**63 - 1
# The smallest magnitude a float32 cast rounds to infinity (FLT_MAX plus half an ulp):
# every number strictly inside is a finite float32 (the largest ones round to FLT_MAX).
FLOAT32_BOUND = float(2**128 - 2**103)
Metric = Literal["l2", "cosine", "ip"]
Ack = Literal["leader", "one", "quorum"]
Consistency = Literal["eventual", "strong", "min_seq", "quorum"]
METRICS: tuple[str, ...] = get_args(Metric)
ACKS: tuple[str, ...] = get_args(Ack)
CONSISTENCY: tuple[str, ...] = get_args(Consistency)


def _codes(code: str = "invalid_input", **kinds: str) -> dict[str, str]:
    return {"code": code, **kinds}


Name = Annotated[
    str, Meta(pattern=NAME_PATTERN, description=NAME_MESSAGE, extra=_codes("invalid_name"))
]
ItemId = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=MAX_ID_CHARS,
        description=f"1-{MAX_ID_CHARS} characters",
        extra=_codes("invalid_id"),
    ),
]
Float32 = Annotated[
    float,
    Meta(
        gt=-FLOAT32_BOUND,
        lt=FLOAT32_BOUND,
        description="A finite float32 (a larger magnitude would round to infinity)",
        extra=_codes("invalid_vector", range="non_finite"),
    ),
]
Scalar = str | int | float | bool | None
Metadata = Annotated[
    dict[str, Scalar],
    Meta(
        description="Flat object of string, number, boolean or null values (at most the "
        "node's max_metadata_bytes as compact JSON, else 413 metadata_too_large)",
        extra=_codes("invalid_metadata"),
    ),
]
# The binary bulk form's metadata: one object (or null) per id.
BulkMetadata = list[Metadata | None]
AckLevel = Annotated[Ack, Meta(extra=_codes("invalid_ack"))]
Seq = Annotated[int, Meta(ge=0, le=MAX_INT64)]
Epoch = Annotated[int, Meta(ge=1, le=MAX_INT64, extra=_codes("invalid_epoch"))]
LeaseToken = Annotated[
    int,
    Meta(
        ge=0,
        le=MAX_INT64,
        description="A lease_token of this member's /v1/status: the lease runs from it",
        extra=_codes("invalid_token"),
    ),
]
NodeId = Annotated[str, Meta(min_length=1, max_length=256)]


Vector = Annotated[
    list[Float32],
    Meta(
        min_length=1,
        description="Exactly the collection's dimension (else 400 dimension_mismatch)",
        extra=_codes("invalid_vector", short="dimension_mismatch", long="dimension_mismatch"),
    ),
]
_BATCH = Meta(
    min_length=1,
    description="Duplicate ids in one batch: the last occurrence wins",
    extra=_codes(short="empty_batch", long="batch_too_large"),
)
_QUERIES = Meta(min_length=1, extra=_codes(long="payload_too_large"))
Queries = Annotated[list[Vector], _QUERIES]
K = Annotated[int, Meta(ge=1)]
# Codes whose violation answers 413 rather than 400.
_TOO_LARGE = frozenset({"batch_too_large", "payload_too_large"})


class _Body(Struct, forbid_unknown_fields=True):
    """A request body: unknown fields are refused."""


# ---------------------------------------------------------------- collections
class Hnsw(_Body, omit_defaults=True):
    """HNSW parameters; an absent one takes the node's setting (``DVECDB_HNSW_*``)."""

    m: Annotated[int, Meta(ge=2, le=128)] | UnsetType = UNSET
    ef_construction: Annotated[int, Meta(ge=1, le=4096)] | UnsetType = UNSET
    ef_search: Annotated[int, Meta(ge=1, le=4096)] | UnsetType = UNSET


class CollectionCreate(_Body):
    name: Name
    dimension: Annotated[int, Meta(ge=1)]
    metric: Annotated[Metric, Meta(extra=_codes("invalid_metric"))] = "l2"
    hnsw: Hnsw | UnsetType = UNSET


class HnswUpdate(_Body):
    """The HNSW settings that change live. ``m`` and ``ef_construction`` shape the built graph
    and are fixed at creation (400 immutable_setting)."""

    ef_search: Annotated[
        int,
        Meta(
            ge=1,
            le=4096,
            description="The collection's default search ef (a search's own ef still wins)",
        ),
    ]


class CollectionUpdate(_Body):
    """A replicated change of a collection's live settings (a log record, like a write)."""

    hnsw: HnswUpdate
    ack: AckLevel | None = None


# Fields that exist on a collection but cannot change after creation (400 immutable_setting).
IMMUTABLE_SETTINGS: tuple[str, ...] = ("name", "dimension", "metric")
IMMUTABLE_HNSW: tuple[str, ...] = ("m", "ef_construction")


# -------------------------------------------------------------------- vectors
class VectorItem(_Body):
    id: ItemId
    vector: Vector
    metadata: Metadata | None = None


class Upsert(_Body):
    vectors: Annotated[list[VectorItem], _BATCH]
    ack: AckLevel | None = None


class Delete(_Body):
    ids: Annotated[list[ItemId], _BATCH]
    ack: AckLevel | None = None


# --------------------------------------------------------------------- search
class InFilter(_Body):
    in_: list[Scalar] = msgspec.field(name="in")


Filter = Annotated[
    dict[Annotated[str, Meta(min_length=1)], Scalar | InFilter],
    Meta(
        description='{"key": value} equality, or {"key": {"in": [values]}}; every key must match',
        extra=_codes("invalid_filter"),
    ),
]


class SearchOptions(_Body):
    """The search fields besides the query vectors (also the binary form's options)."""

    k: K = 10
    ef: Annotated[int, Meta(ge=1, le=4096)] | None = None
    filter: Filter | None = None
    include_metadata: bool = False
    consistency: Consistency | None = None
    min_seq: (
        Annotated[
            int,
            Meta(
                ge=0,
                le=MAX_INT64,
                description="Wait (up to a bound) until this member applied this seq, else "
                "409 stale",
            ),
        ]
        | None
    ) = None
    min_epoch: (
        Annotated[
            int,
            Meta(
                ge=1,
                le=MAX_INT64,
                description="With min_seq: the write token's epoch. 409 stale when this "
                "member's record at min_seq has another epoch (that write was lost here)",
            ),
        ]
        | None
    ) = None


class Search(SearchOptions):
    """Exactly one of ``vector`` and ``vectors``."""

    vector: Vector | UnsetType = UNSET
    vectors: Queries | UnsetType = UNSET


# The rules across fields, as the document states them (``validation`` checks them).
SEARCH_RULES: dict[str, Any] = {
    "oneOf": [{"required": ["vector"]}, {"required": ["vectors"]}],
    "allOf": [
        {
            "if": {
                "properties": {"consistency": {"const": "min_seq"}},
                "required": ["consistency"],
            },
            "then": {"properties": {"min_seq": {"type": "integer"}}, "required": ["min_seq"]},
        },
        {
            "if": {"properties": {"min_epoch": {"type": "integer"}}, "required": ["min_epoch"]},
            "then": {"properties": {"min_seq": {"type": "integer"}}, "required": ["min_seq"]},
        },
    ],
}
OPTIONS_RULES: dict[str, Any] = {"allOf": SEARCH_RULES["allOf"]}


# ---------------------------------------------------------- admin, replication
class Promote(_Body):
    epoch: Epoch
    members: Annotated[int, Meta(ge=1, le=1000)] | None = None
    lease_token: LeaseToken | None = None


class Follow(_Body):
    leader: Annotated[
        str,
        Meta(
            pattern="^https?://[^/]",
            description="The leader's http(s) URL (not this member's own: 400 invalid_leader)",
            extra=_codes("invalid_leader"),
        ),
    ]
    epoch: Epoch


class Fence(_Body):
    epoch: Epoch


class Confirm(_Body):
    epoch: Epoch
    lease_token: LeaseToken | None = None


class FollowerAck(_Body):
    node_id: NodeId
    epoch: Seq
    received_seq: Seq
    applied_seq: Seq
    lease_token: Seq | None = None


# ---------------------------------------------------------------- resharding
# One slot, 0-4095, in decimal without leading zeros.
_SLOT = "(?:409[0-5]|40[0-8][0-9]|[1-3][0-9]{3}|[1-9][0-9]{0,2}|0)"
SLOT_RANGE_PATTERN = f"^{_SLOT}(?:-{_SLOT})?$"
SLOT_RANGES_PATTERN = f"^{_SLOT}(?:-{_SLOT})?(?:,{_SLOT}(?:-{_SLOT})?)*$"
SLOT_RANGE_HELP = "A slot N or an inclusive range N-M of slots (0-4095; a reversed M-N is N-M)"
SlotRange = Annotated[
    str,
    Meta(pattern=SLOT_RANGE_PATTERN, description=SLOT_RANGE_HELP, extra=_codes("invalid_slots")),
]
SlotRanges = Annotated[
    list[SlotRange], Meta(min_length=1, extra=_codes("invalid_slots", short="invalid_slots"))
]


class SlotFenceChange(_Body):
    """Fence or unfence slots (a log record: followers, restarts and snapshots keep it)."""

    slots: SlotRanges
    fenced: bool
    owner: Annotated[int, Meta(ge=0, le=63, description="The shard the slots go to")] | None = None
    map_version: Annotated[int, Meta(ge=0, le=MAX_INT64)] | None = None


class SlotPurge(_Body):
    slots: SlotRanges
    collection: Name | None = None


# The import's lists may be empty; too long answers 413 as an upsert's batch does.
_IMPORT = Meta(extra=_codes(long="batch_too_large"))
_EMPTY: Any = msgspec.field(default_factory=list)


class SlotApply(_Body):
    """Resharding's import: upserts, then deletes, whatever the fence."""

    collection: Name
    upserts: list[VectorItem] = msgspec.field(default_factory=list)
    deletes: list[ItemId] = msgspec.field(default_factory=list)


ADMIN_BODIES: tuple[type[Struct], ...] = (
    Promote,
    Follow,
    Fence,
    Confirm,
    FollowerAck,
    SlotFenceChange,
    SlotPurge,
)


# ------------------------------------------------------------------ responses
class ErrorDetail(Struct):
    code: str
    message: str


class Error(Struct):
    error: ErrorDetail
    leader: str | UnsetType | None = UNSET


class HnswParams(Struct):
    m: int
    ef_construction: int
    ef_search: int


class Collection(Struct):
    name: str
    dimension: int
    metric: Metric
    hnsw: HnswParams
    count: int


class Created(Collection):
    seq: int
    epoch: int


class Updated(Collection):
    """The collection as the update left it, with the update's write token."""

    seq: int
    epoch: int


class Collections(Struct):
    collections: list[Collection]


class Dropped(Struct):
    name: str
    dropped: bool
    seq: int
    epoch: int


class WriteResult(Struct):
    """The write token is (epoch, seq): pass both to a search as min_seq and min_epoch to
    read this write on any member."""

    seq: int
    epoch: Annotated[int, Meta(description="The leader's epoch the write was made at")]
    count: int


class StoredVector(Struct):
    id: str
    vector: list[float]
    metadata: dict[str, Scalar]


class StoredVectorOrNull(Struct):
    """An item as resharding copies it (null metadata: none)."""

    id: str
    vector: list[float]
    metadata: dict[str, Scalar] | None


class Hit(Struct):
    id: str
    distance: Annotated[
        float | None,
        Meta(description="null where the float32 distance overflowed (inf or NaN)"),
    ]
    metadata: dict[str, Scalar] | UnsetType = UNSET


class SearchResult(Struct):
    results: Annotated[list[list[Hit]], Meta(description="One list of hits per query vector")]
    seq: int


class Lease(Struct):
    valid: bool
    expires_in_seconds: Annotated[float | None, Meta(description="null: never lapses")]
    token: int


class Status(Struct):
    node_id: str
    role: Literal["leader", "follower", "standby"]
    epoch: Annotated[int, Meta(description="Highest epoch this member has seen")]
    ready: bool
    last_epoch: Annotated[int, Meta(description="Epoch of the last log record")]
    last_seq: Annotated[int, Meta(description="Seq of the last log record")]
    received_seq: Annotated[
        int, Meta(description="Log end held durably (the failover compares positions)")
    ]
    applied_seq: int
    durable_seq: Annotated[int, Meta(description="Same as received_seq")]
    checkpoint_seq: int
    first_seq: int | None
    leader: str | None
    url: str | None
    fsync: str
    storage_error: Annotated[
        str | None, Meta(description="Why the store cannot serve (corrupt log, failed fsync)")
    ]
    lease_token: Annotated[
        int,
        Meta(
            description="This member's clock (ms): pass it to /v1/admin/promote or "
            "/v1/admin/confirm, whose lease then runs from this moment"
        ),
    ]
    fenced_slots: Annotated[
        list[str],
        Meta(description="Slots refusing ordinary writes (resharding moves them): N or N-M"),
    ]
    followers: list[dict[str, Any]] | UnsetType = UNSET
    lease: Lease | UnsetType = UNSET
    last_ack_seconds: (
        Annotated[
            float | None,
            Meta(
                description="On a non-leader: seconds since it last acked a leader with a lease "
                "token (null: never since start)"
            ),
        ]
        | UnsetType
    ) = UNSET


class SlotWritten(Struct):
    seq: int
    epoch: int


class SlotApplied(SlotWritten):
    count: int


class SlotPurged(SlotWritten):
    count: int


class SlotLogOp(Struct):
    seq: int
    collection: str
    op: Literal["upsert", "delete"]
    items: list[StoredVectorOrNull] | UnsetType = UNSET
    ids: list[str] | UnsetType = UNSET


class SlotLog(Struct):
    ops: list[SlotLogOp]
    next_seq: int
    commit_seq: Annotated[int, Meta(description="The highest seq durable on a majority")]


class Probe(Struct):
    status: str
    role: str | UnsetType = UNSET


RESPONSES: tuple[type[Struct], ...] = (
    Error,
    Collection,
    Created,
    Updated,
    Collections,
    Dropped,
    WriteResult,
    StoredVector,
    SearchResult,
    Status,
    Probe,
    SlotWritten,
    SlotApplied,
    SlotPurged,
    SlotLog,
)


# ------------------------------------------------------------- node limits
@dataclass(frozen=True, slots=True)
class Limits:
    """The settings that bound request bodies."""

    max_dimension: int
    max_batch: int
    max_k: int
    max_queries: int

    @classmethod
    def of(cls, settings: NodeSettings) -> "Limits":
        return cls(settings.max_dimension, settings.max_batch, settings.max_k, settings.max_queries)


# Typing's forms, to build types from values at run time (a checker reads them as Any).
_ANNOTATED: Any = Annotated
_LIST: Any = list


def _most(base: Any, limit: int) -> Any:
    """``base`` with at most ``limit`` items."""
    return _ANNOTATED[base, Meta(max_length=limit)]


@dataclass(frozen=True, slots=True)
class Bodies:
    """One node's request types: subclasses of the above that carry its limits."""

    collection: type[CollectionCreate]
    upsert: type[Upsert]
    delete: type[Delete]
    search: type[Search]
    options: type[SearchOptions]
    slot_apply: type[SlotApply]

    def types(self) -> list[type[Struct]]:
        return [
            self.collection,
            self.upsert,
            self.delete,
            self.search,
            self.options,
            self.slot_apply,
        ]


def _limited(base: type[Struct], fields: list[tuple[str, Any] | tuple[str, Any, Any]]) -> Any:
    return msgspec.defstruct(
        base.__name__, fields, bases=(base,), forbid_unknown_fields=True, module=__name__
    )


@functools.cache
def bodies(limits: Limits) -> Bodies:
    """The request types with ``limits`` in their constraints (built once per limits)."""
    vector = _most(Vector, limits.max_dimension)
    queries = _most(_ANNOTATED[_LIST[vector], _QUERIES], limits.max_queries)
    item = _limited(VectorItem, [("vector", vector)])
    items = _most(_ANNOTATED[_LIST[item], _BATCH], limits.max_batch)
    ids = _most(Annotated[list[ItemId], _BATCH], limits.max_batch)
    k = ("k", Annotated[K, Meta(le=limits.max_k)], 10)
    dimension = Annotated[int, Meta(ge=1, le=limits.max_dimension)]
    return Bodies(
        collection=_limited(CollectionCreate, [("dimension", dimension)]),
        upsert=_limited(Upsert, [("vectors", items)]),
        delete=_limited(Delete, [("ids", ids)]),
        search=_limited(
            Search,
            [k, ("vector", vector | UnsetType, UNSET), ("vectors", queries | UnsetType, UNSET)],
        ),
        options=_limited(SearchOptions, [k]),
        slot_apply=_limited(
            SlotApply,
            [
                ("upserts", _most(_ANNOTATED[_LIST[item], _IMPORT], limits.max_batch), _EMPTY),
                ("deletes", _most(_ANNOTATED[_LIST[ItemId], _IMPORT], limits.max_batch), _EMPTY),
            ],
        ),
    )


def bodies_for(settings: NodeSettings) -> Bodies:
    """:func:`bodies` for these settings (remembered per settings object: a hot path)."""
    known = _BY_SETTINGS.get(id(settings))
    if known is None or known[0] is not settings:
        known = _BY_SETTINGS[id(settings)] = (settings, bodies(Limits.of(settings)))
    return known[1]


_BY_SETTINGS: dict[int, tuple[NodeSettings, Bodies]] = {}


@functools.cache
def _decoder(kind: type[Any]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


def decode(kind: type[T], raw: bytes) -> T:
    """Decode and validate a JSON body (raises a 4xx :class:`NodeError`)."""
    try:
        return cast(T, _decoder(cast(Any, kind)).decode(raw))
    except msgspec.ValidationError as exc:
        if not _INT_AS_FLOAT.match(str(exc)):
            raise invalid(exc, kind) from None
    except msgspec.DecodeError as exc:
        message = "request body is empty" if not raw else f"not JSON: {exc}"
        raise InvalidInput(message, code="malformed_json") from None
    return convert(kind, msgspec.json.decode(raw))  # rare: an integer written as 3.0


# JSON Schema's integers include 3.0 (a number with no fraction); msgspec's take only 3.
_INT_AS_FLOAT = re.compile(r"Expected `int(?: \| null)?`, got `float`")


def convert(kind: type[T], data: Any) -> T:
    """Validate an already decoded JSON value as :func:`decode` validates bytes.

    An integer field given a float with no fraction (``3.0``) takes it as that integer, as
    JSON Schema counts it; one such field is mended per try.
    """
    while True:
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as exc:
            if not (_INT_AS_FLOAT.match(str(exc)) and _mend_integer(data, str(exc))):
                raise invalid(exc, kind) from None


def _mend_integer(data: Any, message: str) -> bool:
    """Replace the integral float the message points at by its int; False if it cannot."""
    match = _AT.search(message)
    steps = _steps(match.group("path") if match else "")
    if not steps:
        return False
    parent = data
    for step in steps[:-1]:
        try:
            parent = parent[step]
        except (KeyError, IndexError, TypeError):
            return False
    last = steps[-1]
    try:
        value = parent[last]
    except (KeyError, IndexError, TypeError):
        return False
    if not (isinstance(value, float) and value.is_integer()):
        return False
    parent[last] = int(value)
    return True


# ------------------------------------------------------------------ errors
_AT = re.compile(r" - at (?:`key` in )?`\$(?P<path>[^`]*)`$")
_STEP = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")


def invalid(exc: msgspec.ValidationError, kind: type[Any]) -> NodeError:
    """The node error of a validation failure: the code its constraint names (``Meta.extra``)."""
    message = str(exc)
    match = _AT.search(message)
    path = match.group("path") if match else ""
    what = message[: match.start()] if match else message
    if "of length <=" in what:
        violation = "long"
    elif "of length >=" in what:
        violation = "short"
    elif ", got `" in what or what.startswith("Object"):
        violation = "code"  # a wrong type, a missing or unknown field
    else:
        violation = "range"  # a bound, a pattern or an enum
    codes = _codes_along(mi.type_info(kind), path)
    code = codes.get(violation) or codes.get("code", "invalid_input")
    text = f"{what} (at {path.lstrip('.') or 'the body'})"
    return PayloadTooLarge(text, code=code) if code in _TOO_LARGE else InvalidInput(text, code=code)


def _codes_along(node: mi.Type, path: str) -> dict[str, str]:
    """The codes of the innermost constraint along ``path`` that names any."""
    found: dict[str, str] = {}
    steps = _steps(path)
    current: mi.Type | None = node
    while current is not None:
        current, codes = _unwrap(current)
        found = codes or found
        if not steps:
            break
        current = _child(current, steps.pop(0))
    return found


def _steps(path: str) -> list[str | int]:
    """``.name[3].other[...]`` as ``["name", 3, "other", ""]`` (``""``: a dict value)."""
    return [
        m.group(1) if m.group(1) is not None else (int(m.group(2)) if m.group(2) != "..." else "")
        for m in _STEP.finditer(path)
    ]


def _unwrap(node: mi.Type) -> tuple[mi.Type, dict[str, str]]:
    """Through constraints and optional unions to the type they hold, with the codes met."""
    codes: dict[str, str] = {}
    while True:
        if isinstance(node, mi.Metadata):
            codes = dict(node.extra or {}) or codes
            node = node.type
        elif isinstance(node, mi.UnionType):
            held = [t for t in node.types if not isinstance(t, mi.NoneType)]
            if len(held) != 1:
                return node, codes
            node = held[0]
        else:
            return node, codes


def _child(node: mi.Type, step: str | int) -> mi.Type | None:
    """The type at one step of a path: a field (by name), a list item (by index), a value."""
    if isinstance(node, mi.StructType) and isinstance(step, str):
        return next((f.type for f in node.fields if f.encode_name == step), None)
    if isinstance(node, mi.ListType) and isinstance(step, int):
        return node.item_type
    if isinstance(node, mi.DictType) and step == "":
        return node.value_type
    return None
