"""Resharding online, the pure half: what the next step is and how the status says it.

A changed `spec.shards` starts a resharding, recorded in `status.resharding` and carried out
by `resharder` (the I/O) one step at a time, each step decided here from the status alone, so
an operator that restarts resumes where the record says:

1. **Growing** (more shards): the new shards' objects are created (the groups to run are
   `max(from, to)`, see `running_shards`); the moves wait until every new shard has a leader.
2. **Moving**: the planned moves (fixed at the start and kept in the record) run one at a
   time, each from the phase the record names: `copy` (the mover's fence, copy and catch-up),
   `publish` (the new map is written), `purge` (the source drops the moved items). The map is
   published with the record's phase set to `purge` in the same status write: after that the
   move is never copied again. A failed move is tried again after a growing backoff.
3. **Shrinking** (fewer shards): every slot has left the removed shards; their objects go.

A `spec.shards` changed again while one runs is taken up after it (from the map it left),
except while growing, before any slot moved: then the record is planned afresh at once (a
new shard that never got a leader does not hold a cluster whose owner set the count back).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dvecdb_client.slots import MAX_SHARDS, SlotMap, format_ranges, parse_ranges
from dvecdb_operator.decisions import PHASE_UPGRADING
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.slotmap import map_from_status

PHASE_GROWING = "Growing"
PHASE_MOVING = "Moving"
PHASE_SHRINKING = "Shrinking"

MOVE_COPY = "copy"
MOVE_PUBLISH = "publish"
MOVE_PURGE = "purge"
MOVE_PHASES = (MOVE_COPY, MOVE_PUBLISH, MOVE_PURGE)

# A failed move is tried again after 5 s, doubling up to 5 minutes.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0
ERROR_CHARS = 300


@dataclass(frozen=True)
class PlannedMove:
    """Slots `ranges` (inclusive pairs) go from shard `source` to shard `target`."""

    source: int
    target: int
    ranges: tuple[tuple[int, int], ...]

    @property
    def slots(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    def to_status(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "slots": format_ranges(self.ranges)}

    @classmethod
    def from_status(cls, raw: Mapping[str, Any]) -> PlannedMove:
        return cls(
            int(raw["source"]), int(raw["target"]), tuple(parse_ranges(raw.get("slots") or []))
        )

    def label(self) -> str:
        slots = ",".join(format_ranges(self.ranges))
        return f"slots {slots} ({self.slots}) from shard {self.source} to {self.target}"


Planner = Callable[[SlotMap, int], Sequence[PlannedMove]]


def apply_move(slot_map: SlotMap, move: PlannedMove) -> SlotMap:
    """The map once `move` is done: its slots owned by the target, the version one up."""
    owners = list(slot_map.owners)
    for first, last in move.ranges:
        for slot in range(first, last + 1):
            owners[slot] = move.target
    return SlotMap(slot_map.version + 1, tuple(owners))


def parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Record:
    """`status.resharding`: the resharding in flight."""

    from_: int
    to: int
    phase: str
    moves: tuple[PlannedMove, ...]
    started_at: str
    index: int = 0  # the move under way (0-based); len(moves) once all are done
    move_phase: str = MOVE_COPY
    slots_moved: int = 0
    items_copied: int = 0  # by the finished moves
    move_items: int = 0  # by the move under way (its last progress report)
    attempts: int = 0  # failed tries of the move under way
    retry_at: str | None = None
    last_error: str | None = None
    eta_seconds: int | None = None

    @property
    def slots_total(self) -> int:
        return sum(m.slots for m in self.moves)

    @property
    def current(self) -> PlannedMove | None:
        return self.moves[self.index] if self.index < len(self.moves) else None

    @property
    def shown_phase(self) -> str:
        """The move's phase as shown: `done` once the last move is."""
        return self.move_phase if self.current is not None else "done"

    def summary(self) -> str:
        """The printer column: short enough for `kubectl get dvc`."""
        if self.phase == PHASE_MOVING and self.moves:
            step = min(self.index + 1, len(self.moves))
            text = f"{self.from_}->{self.to} {step}/{len(self.moves)} {self.shown_phase}"
        else:
            text = f"{self.from_}->{self.to} {self.phase.lower()}"
        return text + (" (retrying)" if self.last_error else "")

    def to_status(self) -> dict[str, Any]:
        step = min(self.index + 1, len(self.moves)) if self.moves else 0
        return {
            "from": self.from_,
            "to": self.to,
            "phase": self.phase,
            "move": f"{step}/{len(self.moves)}",
            "movePhase": self.shown_phase,
            "slotsMoved": self.slots_moved,
            "slotsTotal": self.slots_total,
            "itemsCopied": self.items_copied + self.move_items,
            "startedAt": self.started_at,
            "etaSeconds": self.eta_seconds,
            "attempts": self.attempts,
            "retryAt": self.retry_at,
            "lastError": self.last_error,
            "summary": self.summary(),
            "index": self.index,
            "moveItems": self.move_items,
            "moves": [m.to_status() for m in self.moves],
        }

    @classmethod
    def from_status(cls, raw: object) -> Record | None:
        """The record, or None when there is none (or it cannot be read: see `next_step`)."""
        if not isinstance(raw, Mapping) or not raw:
            return None
        try:
            moves = tuple(PlannedMove.from_status(m) for m in raw.get("moves") or [])
            phase = str(raw["phase"])
            move_phase = str(raw.get("movePhase") or MOVE_COPY)
            if phase not in (PHASE_GROWING, PHASE_MOVING, PHASE_SHRINKING):
                return None
            items = int(raw.get("itemsCopied") or 0)
            move_items = int(raw.get("moveItems") or 0)
            return cls(
                from_=int(raw["from"]),
                to=int(raw["to"]),
                phase=phase,
                moves=moves,
                started_at=str(raw.get("startedAt") or ""),
                index=int(raw.get("index") or 0),
                move_phase=move_phase if move_phase in MOVE_PHASES else MOVE_COPY,
                slots_moved=int(raw.get("slotsMoved") or 0),
                items_copied=max(0, items - move_items),
                move_items=move_items,
                attempts=int(raw.get("attempts") or 0),
                retry_at=raw.get("retryAt") or None,
                last_error=raw.get("lastError") or None,
                eta_seconds=raw.get("etaSeconds"),
            )
        except (KeyError, TypeError, ValueError):
            return None


# --- the groups to run --------------------------------------------------------------------


def running_shards(spec_shards: int, status: Mapping[str, Any] | None) -> int:
    """How many groups run: every shard that owns slots or will own them.

    While growing or moving, `max(from, to)`; once shrinking, `to` (the rest are emptied and
    go). With no resharding in flight, a larger `spec.shards` is run at once (the new groups
    are created before the resharding starts), a smaller one not before its slots moved.
    """
    record = Record.from_status((status or {}).get("resharding"))
    if record is not None:
        return record.to if record.phase == PHASE_SHRINKING else max(record.from_, record.to)
    owning = map_from_status(status, spec_shards).shards
    return max(spec_shards, owning)


# --- steps --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Idle:
    """Nothing to do; `note` (if any) says why a changed spec waits."""

    note: str | None = None


@dataclass(frozen=True)
class Start:
    record: Record


@dataclass(frozen=True)
class Wait:
    """Nothing to do for `seconds` (at most): `reason` goes in the log."""

    record: Record
    reason: str
    seconds: float = 2.0


@dataclass(frozen=True)
class Advance:
    """Write `record` (the next phase) and decide again."""

    record: Record
    reason: str


@dataclass(frozen=True)
class RunMove:
    """Run `move` from `phase`; `map_version`: the version its map is published at (the
    source's fence carries it)."""

    record: Record
    move: PlannedMove
    phase: str
    map_version: int


@dataclass(frozen=True)
class RemoveShards:
    """Delete the objects of the emptied shards `shards`, then finish."""

    record: Record
    shards: tuple[int, ...]


@dataclass(frozen=True)
class Finish:
    record: Record


Step = Idle | Start | Wait | Advance | RunMove | RemoveShards | Finish


@dataclass(frozen=True)
class Inputs:
    """What a decision reads: the spec's count, the status, the time (epoch seconds)."""

    spec_shards: int
    status: Mapping[str, Any] = field(default_factory=dict)
    now: float = 0.0


def group_leader(status: Mapping[str, Any] | None, shard: int, shards: int) -> str | None:
    view = GroupScope(shard, shards).view(status)
    leader = view.get("leader")
    return leader if isinstance(leader, str) and leader and not view.get("failover") else None


def upgrading_shards(status: Mapping[str, Any]) -> list[int]:
    """Shards whose group is rolling to a new image (their line's phase says Upgrading)."""
    return [
        int(line.get("shard", index))
        for index, line in enumerate(status.get("shards") or [])
        if isinstance(line, Mapping) and line.get("phase") == PHASE_UPGRADING
    ]


def next_step(inputs: Inputs, plan: Planner) -> Step:
    status = inputs.status or {}
    record = Record.from_status(status.get("resharding"))
    current = map_from_status(status, inputs.spec_shards)
    if record is None:
        if not 1 <= inputs.spec_shards <= MAX_SHARDS or current.shards == inputs.spec_shards:
            return Idle()
        moves = tuple(plan(current, inputs.spec_shards))
        growing = inputs.spec_shards > current.shards
        return Start(
            Record(
                from_=current.shards,
                to=inputs.spec_shards,
                phase=PHASE_GROWING if growing else PHASE_MOVING,
                moves=moves,
                started_at=iso(inputs.now),
            )
        )
    if record.phase == PHASE_GROWING and inputs.spec_shards != record.to:
        # Set again before any slot moved: plan afresh from the groups that run now (a
        # shard made for the old count and not wanted now is removed by the shrink).
        running = max(record.from_, record.to)
        return Advance(
            Record(
                from_=running,
                to=inputs.spec_shards,
                phase=PHASE_GROWING if inputs.spec_shards > running else PHASE_MOVING,
                moves=tuple(plan(current, inputs.spec_shards)),
                started_at=record.started_at,
            ),
            f"spec.shards changed to {inputs.spec_shards} while growing to {record.to}",
        )
    if record.phase == PHASE_GROWING:
        running = max(record.from_, record.to)
        missing = [
            s for s in range(current.shards, record.to) if group_leader(status, s, running) is None
        ]
        if missing:
            names = ", ".join(str(s) for s in missing)
            return Wait(record, f"waiting for a leader in new shard(s) {names}")
        return Advance(replace(record, phase=PHASE_MOVING), "every new shard has a leader")
    if record.phase == PHASE_MOVING:
        move = record.current
        if move is None:
            if record.to < record.from_:
                return Advance(
                    replace(record, phase=PHASE_SHRINKING),
                    f"shards {record.to}..{record.from_ - 1} hold no slots",
                )
            return Finish(record)
        upgrading = upgrading_shards(status)
        if upgrading and record.move_phase == MOVE_COPY:
            names = ", ".join(str(s) for s in upgrading)
            return Wait(
                record,
                f"shard(s) {names} are upgrading: a member of the older version could not "
                "replay a slot fence, so no move starts until the roll is done",
            )
        retry = parse_time(record.retry_at)
        if retry is not None and retry > inputs.now:
            return Wait(
                record, f"move {record.index + 1} retries at {record.retry_at}", retry - inputs.now
            )
        return RunMove(record, move, record.move_phase, current.version + 1)
    if record.phase == PHASE_SHRINKING:
        return RemoveShards(record, tuple(range(record.to, record.from_)))
    return Idle()


# --- what each step leaves in the record --------------------------------------------------


def published(record: Record, new_map: SlotMap) -> Record:
    """The move's map is out: from here it is only purged, never copied again."""
    del new_map
    return replace(record, move_phase=MOVE_PURGE)


def progressed(record: Record, phase: str, items: int) -> Record:
    """A progress report of the move under way (a phase never goes back past `purge`)."""
    if record.move_phase == MOVE_PURGE or phase not in MOVE_PHASES:
        phase = record.move_phase
    return replace(record, move_phase=phase, move_items=max(record.move_items, items))


def moved(record: Record, now: float) -> Record:
    """The move under way is done: the next one starts from `copy`."""
    move = record.current
    assert move is not None
    done = replace(
        record,
        index=record.index + 1,
        move_phase=MOVE_COPY,
        slots_moved=record.slots_moved + move.slots,
        items_copied=record.items_copied + record.move_items,
        move_items=0,
        attempts=0,
        retry_at=None,
        last_error=None,
    )
    return replace(done, eta_seconds=eta(done, now))


def eta(record: Record, now: float) -> int | None:
    """Seconds left at the rate of the slots moved so far (None before the first is done)."""
    started = parse_time(record.started_at)
    if started is None or record.slots_moved <= 0:
        return None
    left = record.slots_total - record.slots_moved
    return max(0, round((now - started) / record.slots_moved * left))


def backoff(attempts: int) -> float:
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0 ** max(0, attempts - 1)))


def failed(record: Record, error: str, now: float) -> Record:
    """The move failed: try it again (from its recorded phase) after the backoff."""
    attempts = record.attempts + 1
    return replace(
        record,
        attempts=attempts,
        retry_at=iso(now + backoff(attempts)),
        last_error=describe_error(error),
    )


def describe_error(error: str) -> str:
    """One line, bounded: never a stack trace in the status."""
    line = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), "error")
    return line[:ERROR_CHARS]


def finished_status(record: Record, now: float) -> dict[str, Any]:
    """`status.lastResharding`, kept once the record goes."""
    started = parse_time(record.started_at)
    return {
        "from": record.from_,
        "to": record.to,
        "startedAt": record.started_at,
        "finishedAt": iso(now),
        "seconds": None if started is None else round(now - started, 1),
        "slotsMoved": record.slots_moved,
        "itemsCopied": record.items_copied,
    }


def removed_groups_patch(record: Record) -> dict[str, Any]:
    """The status patch that drops the removed shards' group entries (all on a single shard:
    its group is the top level again)."""
    if record.to == 1:
        return {"groups": None}
    return {"groups": {str(s): None for s in range(record.to, record.from_)}}


def shard_objects(name: str, shard: int) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of one group's own objects: its StatefulSet and its rw/ro
    Services (the headless Service, the PDB, the NetworkPolicy and the monitoring objects
    are the cluster's and select by the cluster's label)."""
    sts = name if shard == 0 else f"{name}-s{shard}"
    return [
        ("apps/v1", "StatefulSet", sts),
        ("v1", "Service", f"{sts}-rw"),
        ("v1", "Service", f"{sts}-ro"),
    ]


# --- the condition the aggregate shows ----------------------------------------------------


def condition(status: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """`Resharding`: True while one is in flight (reason: its phase), False once one finished."""
    status = status or {}
    record = Record.from_status(status.get("resharding"))
    if record is not None:
        message = f"shards {record.from_} -> {record.to}: {record.phase.lower()}"
        if record.phase == PHASE_MOVING and record.current is not None:
            message += f", move {record.index + 1}/{len(record.moves)} ({record.move_phase})"
        if record.last_error:
            message += f"; retrying after: {record.last_error}"
        return {
            "type": "Resharding",
            "status": "True",
            "reason": "MoveFailing" if record.last_error else record.phase,
            "message": message,
            "lastTransitionTime": record.started_at,
        }
    last = status.get("lastResharding")
    if isinstance(last, Mapping) and last.get("finishedAt"):
        return {
            "type": "Resharding",
            "status": "False",
            "reason": "Finished",
            "message": f"shards {last.get('from')} -> {last.get('to')} in {last.get('seconds')}s",
            "lastTransitionTime": last.get("finishedAt"),
        }
    return None
