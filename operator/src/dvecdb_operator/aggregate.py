"""The whole cluster's status from its groups' (pure): phase, conditions, the shard lines.

`phase` is Healthy only when every shard is; otherwise the phase of the shard that matters
most to a user (Failed, then a change in flight, then Degraded, then Creating), with every
shard that is not Healthy named in `message`. A condition is True only when it is True in
every shard. A one-shard cluster's group already is the cluster: only the shard line, the
slot map and the printer fields are added.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dvecdb_client.slots import SlotMap, format_ranges
from dvecdb_operator import resharding
from dvecdb_operator.decisions import (
    PHASE_CREATING,
    PHASE_DEGRADED,
    PHASE_FAILED,
    PHASE_FAILING_OVER,
    PHASE_HEALTHY,
    PHASE_SCALING,
    PHASE_SWITCHING,
    PHASE_UPGRADING,
)
from dvecdb_operator.slotmap import slot_map_status

# Every shard is Healthy and slots are moving between them.
PHASE_RESHARDING = "Resharding"

# The first that some shard is in names the cluster's phase.
PHASE_ORDER = (
    PHASE_FAILED,
    PHASE_FAILING_OVER,
    PHASE_SWITCHING,
    PHASE_UPGRADING,
    PHASE_SCALING,
    PHASE_DEGRADED,
    PHASE_CREATING,
    PHASE_HEALTHY,
)


def cluster_phase(phases: Sequence[str | None]) -> str:
    known = [p if p in PHASE_ORDER else PHASE_CREATING for p in phases]
    return next(p for p in PHASE_ORDER if p in known) if known else PHASE_CREATING


def shard_lines(
    statefulsets: Sequence[str],
    groups: Sequence[Mapping[str, Any]],
    slot_map: SlotMap | None = None,
) -> list[dict[str, Any]]:
    """One line per running group; `slots`: what it owns in the map (none: a new shard before
    its moves, or an emptied one before it goes)."""
    slot_map = slot_map or SlotMap.even(len(groups))
    lines = []
    for index, (name, group) in enumerate(zip(statefulsets, groups, strict=True)):
        line: dict[str, Any] = {
            "shard": index,
            "statefulSet": name,
            "phase": group.get("phase") or PHASE_CREATING,
            "leader": group.get("leader") or "",
            "epoch": int(group.get("epoch") or 0),
            "readyMembers": group.get("readyMembers") or "",
            "slots": format_ranges(slot_map.ranges(index)),
            "message": group.get("message") or "",
        }
        lines.append(line)
    return lines


def merge_conditions(groups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per type (in shard 0's order): True only if True everywhere; else the first shard's
    that is not, its message prefixed with the shard."""
    order: list[str] = []
    by_type: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for index, group in enumerate(groups):
        for cond in group.get("conditions") or []:
            kind = str(cond.get("type"))
            if kind not in by_type:
                order.append(kind)
            by_type.setdefault(kind, []).append((index, cond))
    merged = []
    for kind in order:
        entries = by_type[kind]
        missing = len(entries) < len(groups)
        off = [(i, cond) for i, cond in entries if cond.get("status") != "True"]
        if not off and not missing:
            merged.append(dict(entries[0][1]))
            continue
        if off:
            index, cond = off[0]
            merged.append(
                {**cond, "status": cond.get("status") or "False",
                 "message": f"shard {index}: {cond.get('message') or ''}".rstrip()}
            )  # fmt: skip
        else:
            first = dict(entries[0][1])
            merged.append({**first, "status": "Unknown", "reason": "ShardNotReporting",
                           "message": "a shard has not reported this condition yet"})  # fmt: skip
    return merged


def aggregate_status(
    statefulsets: Sequence[str],
    groups: Sequence[Mapping[str, Any]],
    *,
    slot_map: SlotMap | None = None,
    status: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The cluster-level fields, from every group's status (as `GroupScope.view` gives it).

    `slot_map`: the published map (default: the even map of the groups); `status`: the
    cluster's, for its resharding record: while one is in flight a cluster whose shards are
    all Healthy is `Resharding`, and the `Resharding` condition says how far it is. The
    patch carries `slotMap` only when there is no record: during a resharding only the
    resharder writes the map (a pass that read the status before a move was published must
    not write the older map back).
    """
    shards = len(groups)
    slot_map = slot_map or SlotMap.even(shards)
    lines = shard_lines(statefulsets, groups, slot_map)
    record = resharding.Record.from_status((status or {}).get("resharding"))
    patch: dict[str, Any] = {
        "shards": lines,
        "readyShards": f"{sum(line['phase'] == PHASE_HEALTHY for line in lines)}/{shards}",
        "leaders": ",".join(line["leader"] for line in lines),
    }
    if record is None:
        patch["slotMap"] = slot_map_status(slot_map)
    if shards > 1:
        phase = cluster_phase([line["phase"] for line in lines])
        problems = [
            f"shard {line['shard']} {line['phase']}"
            + (f": {line['message']}" if line["message"] else "")
            for line in lines
            if line["phase"] != PHASE_HEALTHY
        ]
        if record is not None:
            problems.insert(0, f"resharding {record.summary()}")
            if phase == PHASE_HEALTHY:
                phase = PHASE_RESHARDING
        patch["phase"] = phase
        patch["message"] = "; ".join(problems)
        conditions = merge_conditions(groups)
        extra = resharding.condition(status)
        if extra is not None:
            conditions.append(extra)
        patch["conditions"] = conditions
    return patch
