"""`spec.node.hnsw.efSearch` applied to live collections, with no member restarted.

Semantics (issue #15):

- `efSearch` is the default search ef of collections created without one. Members read it
  from the node-defaults ConfigMap (`builders.nodedefaults`): a change restarts nobody, and
  each member takes the new default at its next start, whatever restarts it.
- Collections that exist when the value changes get it at once: the operator sends
  `PATCH /v1/collections/{name}` (`{"hnsw": {"ef_search": N}}`) for each of them to the
  leader (each shard's leader), a replicated log record that followers, restarts and
  snapshots keep. This sweep runs once per change of the value: a collection tuned by hand
  afterwards keeps its own ef until the cluster's default changes again.
- Until the leader restarts, a collection created without an ef after the change takes the
  default the leader started with; creating it with `hnsw.ef_search` avoids that.
- `status.efSearch` (each shard's own: `status.groups["<i>"].efSearch` for shard i > 0)
  says where this stands: `desired` (the spec's value), `applied` (the
  value the last finished sweep gave every collection), `time` (when), `collections` (how
  many it changed), `message` (why the sweep has not finished, while it has not) and
  `progress` (collections changed so far by a sweep that spans passes: each pass spends at
  most `SWEEP_BUDGET_SECONDS` on it, so failure detection is never held up by it).
  Events: `EfSearchApplied`, or `EfSearchPending` (Warning) when a leader refused or could
  not be reached; the next pass tries again.
- A cluster first seen by this operator (no `status.efSearch`) records the spec's value as
  applied without a sweep: its members were started with that default.

The decision (`plan`) is pure; `sync` does the calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import aiohttp

from dvecdb_client import NodeError
from dvecdb_operator import kube as kube_api
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.members import describe_error
from dvecdb_operator.observation import ClusterObservation, MemberObservation
from dvecdb_operator.upgrade import outdated

STATUS_KEY = "efSearch"
# PATCHes per monitoring pass take at most this long; the next pass goes on.
SWEEP_BUDGET_SECONDS = 1.0
# A leader that does not answer usefully: reported, and the next pass tries again.
EXPECTED = (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError, NodeError)


@dataclass(frozen=True)
class Plan:
    """What a pass does about the default ef: nothing, record a baseline, or sweep."""

    action: str  # "none" | "baseline" | "sweep"
    desired: int


def plan(desired: int, status: Mapping[str, Any] | None) -> Plan:
    """Compare the spec's value with what the status says was applied last."""
    record = (status or {}).get(STATUS_KEY)
    if not isinstance(record, Mapping) or not isinstance(record.get("applied"), int):
        return Plan("baseline", desired)
    if record["applied"] == desired:
        return Plan("none", desired)
    return Plan("sweep", desired)


def applier(cluster: ClusterObservation) -> tuple[MemberObservation | None, str]:
    """The member that may take a sweep's PATCHes now, or None and what the sweep waits for.

    Only the group's serving leader at the current epoch; not while a failover is in flight,
    nor while members run different revisions: an older member cannot read the log record a
    PATCH makes (`UPDATE_COLLECTION`), so the sweep waits for the upgrade to finish."""
    if cluster.failover is not None:
        return None, "the failover to finish"
    if outdated(cluster):
        return None, "the upgrade to finish (an older member cannot read the record it makes)"
    leader = cluster.member(cluster.leader)
    if leader is None or not leader.url or not leader.leads_at(cluster.epoch):
        return None, "a leader"
    return leader, ""


def to_patch(desired: int, collections: Sequence[Mapping[str, Any]]) -> list[str]:
    """The collections of one leader whose default ef is not `desired` (their names)."""
    names = []
    for item in collections:
        hnsw = item.get("hnsw") or {}
        if hnsw.get("ef_search") != desired:
            names.append(str(item["name"]))
    return sorted(names)


class CollectionsClient(Protocol):
    async def list_collections(self) -> list[dict[str, Any]]: ...
    async def update_collection(
        self, name: str, *, ef_search: int, ack: str | None = None
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SweepResult:
    changed: tuple[str, ...]  # "leader/collection" for each PATCH that was acknowledged
    error: str | None  # the first failure, if any (the sweep stops there; the next retries)
    unfinished: bool = False  # the pass's time budget ran out first (the next goes on)


async def sweep(
    leaders: Mapping[str, Any],
    desired: int,
    *,
    budget: float | None = None,
    clock: Callable[[], float] | None = None,
) -> SweepResult:
    """PATCH every collection that lacks `desired` on each leader (name -> client).

    At most `budget` seconds of PATCHes per call: the sweep runs inside a monitoring pass,
    which must not be held up (failure detection) by a leader with many collections.
    """
    changed: list[str] = []
    clock = clock or time.monotonic
    deadline = clock() + (SWEEP_BUDGET_SECONDS if budget is None else budget)
    for leader, client in leaders.items():
        node = cast(CollectionsClient, client)
        try:
            for name in to_patch(desired, await node.list_collections()):
                if clock() > deadline:
                    return SweepResult(tuple(changed), None, unfinished=True)
                await node.update_collection(name, ef_search=desired)
                changed.append(f"{leader}/{name}")
        except EXPECTED as exc:
            return SweepResult(tuple(changed), f"{leader}: {describe_error(exc)}")
    return SweepResult(tuple(changed), None)


async def sync(
    kube: kube_api.Kube,
    body: Mapping[str, Any],
    desired: int,
    leaders: Mapping[str, Any],
    *,
    now: str,
    scope: GroupScope | None = None,
    waits_for: str = "a leader",
) -> bool:
    """Apply `desired` to live collections when it changed; True when it wrote anything.

    `leaders` maps the group's leader (name) to a node client; empty while the group has no
    serving leader, in which case a sweep waits. Each group (shard) keeps its own record, in
    its part of the status (`groups.GroupScope`): one group's finished sweep says nothing of
    another's collections.
    """
    scope = scope or GroupScope()
    meta = body.get("metadata") or {}
    status = scope.view(body.get("status"))
    step = plan(desired, status)
    if step.action == "none":
        return False
    if step.action == "baseline":
        baseline = {"desired": desired, "applied": desired, "time": now, "collections": 0}
        baseline["message"] = ""
        await kube.patch_cluster_status(
            meta["namespace"], meta["name"], scope.wrap({STATUS_KEY: baseline})
        )
        return True
    previous = status.get(STATUS_KEY) or {}
    if not leaders:
        message = f"efSearch {desired}: waiting for {waits_for} to apply it to live collections"
        if previous.get("message") != message or previous.get("desired") != desired:
            pending = {**previous, "desired": desired, "message": message}
            await kube.patch_cluster_status(
                meta["namespace"], meta["name"], scope.wrap({STATUS_KEY: pending})
            )
        return False
    result = await sweep(leaders, desired)
    # Collections changed for this value by earlier passes (a sweep spans passes).
    earlier = previous.get("progress") if previous.get("desired") == desired else 0
    done = (earlier if isinstance(earlier, int) else 0) + len(result.changed)
    if result.unfinished or result.error is not None:
        if result.error is not None:
            message = f"efSearch {desired} not yet applied to every collection: {result.error}"
            kube_api.post_event(body, reason="EfSearchPending", message=message, warning=True)
        else:
            message = f"efSearch {desired}: applied to {done} collection(s) so far, going on"
        pending = {**previous, "desired": desired, "message": message, "progress": done}
        await kube.patch_cluster_status(
            meta["namespace"], meta["name"], scope.wrap({STATUS_KEY: pending})
        )
        return bool(result.changed)
    shown = ", ".join(result.changed[:20]) + (" ..." if len(result.changed) > 20 else "")
    kube_api.post_event(
        body,
        reason="EfSearchApplied",
        message=(
            f"efSearch {desired} applied without restarts to {len(result.changed)} "
            f"collection(s){': ' + shown if shown else ''}; new collections take it as "
            "their default on members started since"
        ),
    )
    record: dict[str, Any] = {
        "desired": desired,
        "applied": desired,
        "time": now,
        "collections": done,
        "message": "",
        "progress": None,
    }
    await kube.patch_cluster_status(
        meta["namespace"], meta["name"], scope.wrap({STATUS_KEY: record})
    )
    return True
