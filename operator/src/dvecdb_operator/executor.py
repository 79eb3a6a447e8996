"""Carries out the steps `decisions.decide` returns: the pass's only side effects.

Every write of the epoch, the leader or `status.failover` is a compare-and-swap on the
resourceVersion the pass read (then the one each write returned): of two operator replicas,
exactly one proceeds, and a pass that lost the race stops and re-reads next time. A step
records what it learnt (fenced positions, a promote, a repoint) in the pass's observation,
so the next decision in the same pass needs no second read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.decisions import (
    Adopt,
    Begin,
    Blocked,
    Choose,
    ClearRequest,
    Fence,
    Finish,
    Hold,
    Promote,
    Reepoch,
    Repoint,
    Steady,
    Step,
    group_size,
)
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.members import AdminError, Members
from dvecdb_operator.observation import ClusterObservation, LeaderPod
from dvecdb_operator.status import PassReport, in_flight_phase

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PassState:
    """What one pass knows and has done so far (the executor updates it step by step)."""

    body: Mapping[str, Any]  # the object as read (for Events)
    cluster: ClusterObservation
    resource_version: str
    status: dict[str, Any] = field(default_factory=dict)  # the status as last read/written
    message: str = ""
    failed: bool = False
    blocked: str | None = None
    acted: bool = False
    leader_changed: bool = False
    switchover_aborted: bool = False
    waiting: str | None = None  # the planned operation that waits for its target

    def report(self) -> PassReport:
        return PassReport(message=self.message, failed=self.failed, blocked=self.blocked)


class Executor:
    """The steps' I/O for one cluster: node calls through `members`, API calls through
    `kube`, an Event per step that changes something."""

    def __init__(
        self,
        kube: kube_api.Kube,
        members: Members,
        ref: ClusterRef,
        scope: GroupScope | None = None,
    ) -> None:
        self.kube = kube
        self.members = members
        self.ref = ref
        # Which group's part of the status the steps read and write (`groups`).
        self.scope = scope or GroupScope()
        self._logged: dict[tuple[str, str], float] = {}

    def event(self, state: PassState, reason: str, message: str, *, warning: bool = False) -> None:
        """An Event (deduplicated by `kube`) and a log line; a condition that persists, such
        as a blocked failover, is logged again only after `kube.EVENT_DEDUP_SECONDS`."""
        now = time.monotonic()
        if now - self._logged.get((reason, message), -kube_api.EVENT_DEDUP_SECONDS) >= (
            kube_api.EVENT_DEDUP_SECONDS
        ):
            window = kube_api.EVENT_DEDUP_SECONDS
            self._logged = {k: t for k, t in self._logged.items() if now - t < window}
            self._logged[(reason, message)] = now
            log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, message)
        kube_api.post_event(state.body, reason=reason, message=message, warning=warning)

    async def run(self, step: Step, state: PassState) -> bool:
        """Carry out `step`; True when the pass should decide again (it made progress)."""
        if isinstance(step, Hold):
            state.message, state.failed = step.reason, step.failed
            return False
        if isinstance(step, Steady):
            await self.steady(step, state)
            return False
        if isinstance(step, Blocked):
            await self.blocked(step, state)
            return False
        state.acted = True
        if isinstance(step, Adopt):
            return await self.adopt(step, state)
        if isinstance(step, Begin):
            return await self.begin(step, state)
        if isinstance(step, Reepoch):
            return await self.reepoch(step, state)
        if isinstance(step, Fence):
            return await self.fence(step, state)
        if isinstance(step, Choose):
            return await self.choose(step, state)
        if isinstance(step, Promote):
            return await self.promote(step, state)
        if isinstance(step, Repoint):
            return await self.repoint(step.record.candidate or "", step.targets, state)
        if isinstance(step, Finish):
            return await self.finish(step, state)
        return await self.clear_request(step, state)

    # --- status writes ----------------------------------------------------------------------

    async def write(self, state: PassState, patch: Mapping[str, Any]) -> bool:
        """Patch the status only if the object is unchanged since the pass read or wrote it."""
        try:
            result = await self.kube.patch_cluster_status(
                self.ref.namespace,
                self.ref.name,
                self.scope.wrap(patch),
                resource_version=state.resource_version,
            )
        except kube_api.ConflictError:
            state.message = "the cluster changed under this pass; re-reading it"
            log.info("%s/%s: %s", self.ref.namespace, self.ref.name, state.message)
            return False
        self._took(state, result)
        return True

    def _took(self, state: PassState, result: Mapping[str, Any]) -> None:
        version = (result.get("metadata") or {}).get("resourceVersion")
        if version:
            state.resource_version = str(version)
        state.status = self.scope.view(result.get("status"))

    # --- steps ------------------------------------------------------------------------------

    async def adopt(self, step: Adopt, state: PassState) -> bool:
        if not await self.write(state, {"leader": step.leader, "epoch": step.epoch}):
            return False
        state.cluster = replace(state.cluster, leader=step.leader, epoch=step.epoch)
        self.event(state, "LeaderAdopted", f"{step.leader} already leads at epoch {step.epoch}")
        return True

    async def begin(self, step: Begin, state: PassState) -> bool:
        record, before = step.record, state.cluster.epoch
        # The epoch and the leader are written together: no leader at the new epoch until
        # one is promoted at it (a watcher never sees the new epoch beside the old leader).
        patch = {
            "epoch": record.epoch,
            "leader": None,
            "failover": record.to_status(),
            "phase": in_flight_phase(state.cluster, record),
        }
        if not await self.write(state, patch):
            return False
        state.cluster = replace(state.cluster, epoch=record.epoch, leader=None, failover=record)
        if step.replaces is not None:
            self.event(
                state,
                "FailoverRestarted",
                f"{step.replaces.kind} at epoch {step.replaces.epoch} restarted at"
                f" {record.epoch}: {record.reason}",
                warning=True,
            )
        if record.kind == "bootstrap":
            return True
        if record.kind == "failover":
            self.event(
                state,
                "FailoverStarted",
                f"{record.reason}: fencing every reachable member at epoch {record.epoch}",
                warning=True,
            )
        elif record.kind == "switchover":
            self.event(
                state, "SwitchoverStarted", f"{record.reason}: {record.from_} -> {record.target}"
            )
        else:
            self.event(
                state,
                "ForcedPromotion",
                f"{record.reason}: promoting {record.target} at epoch {record.epoch} from"
                " whatever is reachable; acknowledged writes may be lost",
                warning=True,
            )
        self.event(state, "EpochBumped", f"epoch {before} -> {record.epoch}")
        return True

    async def reepoch(self, step: Reepoch, state: PassState) -> bool:
        record, before = step.record, state.cluster.epoch
        if not await self.write(state, {"epoch": record.epoch, "failover": record.to_status()}):
            return False
        state.cluster = replace(state.cluster, epoch=record.epoch, failover=record)
        self.event(state, "EpochBumped", f"epoch {before} -> {record.epoch}: {step.reason}")
        return True

    async def fence(self, step: Fence, state: PassState) -> bool:
        """Fence the targets (a leader first, alone: it stops acknowledging soonest)."""
        epoch = step.record.epoch
        order = list(step.targets)
        first = [order.pop(0)] if order and order[0] == step.record.from_ else []
        done: list[str] = []
        failed: list[str] = []
        for batch in (first, order):
            members = [m for n in batch if (m := state.cluster.member(n)) is not None]
            answers = await asyncio.gather(*(self.members.fence(m, epoch) for m in members))
            for member, answer in zip(members, answers, strict=True):
                if isinstance(answer, AdminError):
                    failed.append(f"{member.name} ({answer})")
                    answer = replace(member, reachable=False, error=f"fence: {answer}")
                else:
                    done.append(member.name)
                state.cluster = state.cluster.with_member(answer)
        if done:
            self.event(state, "MembersFenced", f"{', '.join(done)} fenced at epoch {epoch}")
        if failed:
            self.event(state, "FenceFailed", "; ".join(failed), warning=True)
        return True

    async def blocked(self, step: Blocked, state: PassState) -> None:
        current = state.cluster.failover
        if current is not None and current.fenced != step.record.fenced:
            if await self.write(state, {"failover": {"fenced": list(step.record.fenced)}}):
                state.cluster = replace(state.cluster, failover=step.record)
        state.message = state.blocked = step.reason
        self.event(state, "FailoverBlocked", step.reason, warning=True)

    async def choose(self, step: Choose, state: PassState) -> bool:
        if not await self.write(state, {"failover": step.record.to_status()}):
            return False
        state.cluster = replace(state.cluster, failover=step.record)
        self.event(
            state,
            "CandidateChosen",
            f"promoting {step.record.candidate} at epoch {step.record.epoch}: {step.note}",
            warning=step.record.kind == "forced",
        )
        return True

    async def promote(self, step: Promote, state: PassState) -> bool:
        record = step.record
        candidate = state.cluster.member(record.candidate)
        assert candidate is not None and candidate.url is not None
        error = await self.members.promote(
            candidate.url, record.epoch, members=group_size(state.cluster)
        )
        if error is not None:
            self.event(
                state,
                "PromoteFailed",
                f"{candidate.name} at epoch {record.epoch}: {error}",
                warning=True,
            )
            if error.epoch_refused:  # the epoch is used up for it: a fresh one next
                state.cluster = replace(state.cluster, failover=replace(record, refused=True))
                return True
            state.message = (
                f"promoting {candidate.name} at epoch {record.epoch} failed ({error});"
                f" retrying at epoch {record.epoch}"
            )
            return False
        moved = record.at("repointing")
        patch = {"leader": candidate.name, "epoch": record.epoch, "failover": moved.to_status()}
        if not await self.write(state, patch):
            return False
        # No lease token of its leadership is known yet: a renewal in this pass reads one.
        leader = replace(
            candidate, role=c.ROLE_LEADER, epoch=record.epoch, leader_url=None, lease_token=None
        )
        state.cluster = replace(
            state.cluster.with_member(leader), leader=candidate.name, failover=moved
        )
        state.leader_changed = True
        self.event(state, "Promoted", f"{candidate.name} leads at epoch {record.epoch}")
        return True

    async def repoint(self, leader_name: str, names: tuple[str, ...], state: PassState) -> bool:
        """Tell `names` to follow `leader_name` at the cluster's epoch."""
        leader = state.cluster.member(leader_name)
        assert leader is not None and leader.url is not None
        epoch = state.cluster.epoch
        targets = [m for n in names if (m := state.cluster.member(n)) and m.url]
        errors = await asyncio.gather(
            *(self.members.follow(m.url or "", leader.url, epoch) for m in targets)
        )
        ok, bad = [], []
        for member, error in zip(targets, errors, strict=True):
            if error is None:
                ok.append(member.name)
                learnt = replace(member, role=c.ROLE_FOLLOWER, epoch=epoch, leader_url=leader.url)
            else:
                bad.append(f"{member.name} ({error})")
                learnt = replace(member, reachable=False, error=f"follow: {error}")
            state.cluster = state.cluster.with_member(learnt)
        if ok:
            self.event(
                state,
                "FollowersRepointed",
                f"{', '.join(ok)} follow {leader_name} at epoch {epoch}",
            )
        if bad:
            self.event(state, "RepointFailed", "; ".join(bad), warning=True)
        return True

    async def finish(self, step: Finish, state: PassState) -> bool:
        record = step.record
        to = record.candidate or ""
        member = state.cluster.member(to)
        baseline = LeaderPod(
            to, member.pod_uid if member else None, member.restarts if member else None
        )
        patch: dict[str, Any] = {"failover": None, "leaderPod": baseline.to_status()}
        # A leader that took over again (a planned change that found it most advanced) is
        # no failover to report; a forced promotion always is, with what it may have lost.
        if record.kind == "forced" or (record.kind != "bootstrap" and to != record.from_):
            patch["lastFailover"] = {
                "time": now_iso(),
                "from": record.from_,
                "to": to,
                "fromSeq": record.from_seq,
                "toSeq": record.to_seq,
                "reason": record.reason,
                "kind": record.kind,
                "fenced": list(record.fenced),
                "forced": record.kind == "forced",
            }
        if not await self.write(state, patch):
            return False
        state.cluster = replace(state.cluster, failover=None, leader_pod=baseline)
        state.leader_changed = True
        epoch = record.epoch
        if record.kind == "bootstrap":
            self.event(state, "Bootstrapped", f"{to} promoted at epoch {epoch}")
        elif record.kind == "failover":
            self.event(state, "FailoverCompleted", f"{record.from_} -> {to} at epoch {epoch}")
        elif record.kind == "forced":
            self.event(
                state,
                "ForcedPromotion",
                f"{to} leads at epoch {epoch} by request (fenced: {', '.join(record.fenced)});"
                " acknowledged writes may be lost",
                warning=True,
            )
            await self._clear(state, c.ANNOTATION_FORCE_PROMOTE)
        elif to == record.target:
            self.event(state, "SwitchoverCompleted", f"{record.from_} -> {to} at epoch {epoch}")
            await self._clear(state, c.ANNOTATION_SWITCHOVER)
        else:
            self.event(
                state,
                "SwitchoverAborted",
                f"{record.target} held less than {to} when fenced: {to} leads at epoch"
                f" {epoch}; planned operations wait before trying again",
                warning=True,
            )
            state.switchover_aborted = True
        return True

    async def clear_request(self, step: ClearRequest, state: PassState) -> bool:
        self.event(state, step.reason, step.message, warning=step.warning)
        await self._clear(state, step.annotation)
        return True

    async def _clear(self, state: PassState, annotation: str) -> None:
        """Remove a request annotation (it is done, or cannot be honoured)."""
        current = (state.body.get("metadata", {}).get("annotations") or {}).get(annotation)
        if current is not None:
            result = await self.kube.patch_cluster_annotations(
                self.ref.namespace, self.ref.name, {annotation: None}
            )
            version = (result.get("metadata") or {}).get("resourceVersion")
            if version:
                state.resource_version = str(version)
        if annotation == c.ANNOTATION_SWITCHOVER:
            state.cluster = replace(state.cluster, switchover_to=None)
        else:
            state.cluster = replace(state.cluster, force_promote=None)

    async def steady(self, step: Steady, state: PassState) -> None:
        """Renew the leader's lease, repoint strays, restart one pod of a rolling upgrade."""
        cluster = state.cluster
        leader = cluster.member(step.leader)
        assert leader is not None and leader.url is not None
        error = await self.members.confirm(
            leader.url, cluster.epoch, lease_token=leader.lease_token
        )
        if error is not None:
            log.warning(
                "lease of %s at epoch %d not renewed: %s", leader.name, cluster.epoch, error
            )
        if step.follow:
            standby = [
                n for n in step.follow if (m := cluster.member(n)) and m.role == c.ROLE_STANDBY
            ]
            if standby:
                self.event(
                    state, "MemberRejoining", f"{', '.join(standby)} told to follow {leader.name}"
                )
            state.acted = True
            await self.repoint(leader.name, step.follow, state)
        if step.restart is not None:
            self.event(state, "RollingRestart", step.restart.reason)
            await self.kube.delete_pod(self.ref.namespace, step.restart.name)
            state.acted = True
        state.message = step.message or "; ".join(step.notes)
        state.waiting = step.waiting
