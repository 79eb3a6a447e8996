"""Role procedures the monitor runs: bootstrap, adopt, failover, switchover, repointing and
rolling restarts.

Each is a short script of admin calls (through `members`) and status writes (through
`kube`), with a Kubernetes Event per step. Whatever changes the epoch first writes it to
the status with a resourceVersion precondition (`bump_epoch`), so of two operator replicas
racing, exactly one proceeds; the loser re-observes on its next pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.decisions import Adopt, Bootstrap, Steady
from dvecdb_operator.failover import FailoverPlan
from dvecdb_operator.members import AdminError, Members, PodView
from dvecdb_operator.observation import ClusterObservation, MemberObservation
from dvecdb_operator.promotion import next_epoch
from dvecdb_operator.upgrade import RestartPod, SwitchoverTo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 2.0
    catchup_timeout: float = 30.0
    catchup_poll: float = 0.2
    # A switchover fences the leader only once the target is this close (in log records).
    switchover_slack: int = 64
    # After the fence, how long frames already in flight get to reach the target.
    fenced_catchup_timeout: float = 3.0
    # After a deferred or aborted switchover, planned operations wait this long.
    operation_backoff: float = 30.0
    # A failed promote is retried after this, doubling per attempt up to the cap.
    promote_retry_first: float = 2.0
    promote_retry_cap: float = 30.0


@dataclass(frozen=True)
class PromoteFailure:
    """A promote that did not succeed: `refused` when the member refused the epoch."""

    candidate: str
    epoch: int
    error: str
    refused: bool

    @classmethod
    def of(cls, candidate: str, epoch: int, error: AdminError) -> PromoteFailure:
        return cls(candidate, epoch, error.text, error.epoch_refused)


@dataclass
class Outcome:
    """What this pass's action means for the status written after it."""

    acted: bool = False
    failing_over: bool = False
    failed: bool = False
    message: str | None = None
    leader_changed: bool = False  # restart the failure-detection timer
    leader_seq: int | None = None  # the new leader's position, for the next lastFailover
    switchover_failed: bool = False  # hold planned operations back for a while
    promote_failed: PromoteFailure | None = None  # to retry after a backoff


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RoleActions:
    """The procedures for one cluster; holds no state between calls."""

    def __init__(
        self,
        kube: kube_api.Kube,
        members: Members,
        ref: ClusterRef,
        settings: MonitorSettings,
        clock: Callable[[], float],
    ) -> None:
        self.kube = kube
        self.members = members
        self.ref = ref
        self.settings = settings
        self.clock = clock

    def event(
        self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        log.log(logging.WARNING if warning else logging.INFO, "%s: %s", reason, message)
        kube_api.post_event(body, reason=reason, message=message, warning=warning)

    async def bump_epoch(
        self, cluster: ClusterObservation, new_epoch: int, extra: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any] | None:
        """Write `new_epoch` only if the cluster is still as observed; None when we lost."""
        fresh = await self.kube.get_cluster(self.ref.namespace, self.ref.name)
        status = fresh.get("status") or {}
        if int(status.get("epoch") or 0) != cluster.epoch or (status.get("leader") or None) != (
            cluster.leader
        ):
            return None
        try:
            return await self.kube.patch_cluster_status(
                self.ref.namespace,
                self.ref.name,
                {"epoch": new_epoch, **(extra or {})},
                resource_version=fresh["metadata"]["resourceVersion"],
            )
        except kube_api.ConflictError:
            return None

    async def adopt(self, body: Mapping[str, Any], adopt: Adopt) -> Outcome:
        await self.kube.patch_cluster_status(
            self.ref.namespace, self.ref.name, {"leader": adopt.leader, "epoch": adopt.epoch}
        )
        self.event(body, "LeaderAdopted", f"{adopt.leader} already leads at epoch {adopt.epoch}")
        return Outcome(acted=True)

    async def bootstrap(
        self, body: Mapping[str, Any], cluster: ClusterObservation, boot: Bootstrap
    ) -> Outcome:
        leader = cluster.member(boot.leader)
        assert leader is not None and leader.url is not None
        if await self.bump_epoch(cluster, boot.epoch) is None:
            return Outcome(message="bootstrap raced with another writer; retrying")
        error = await self.members.promote(leader.url, boot.epoch, members=cluster.replicas)
        if error is not None:
            self.event(
                body, "PromoteFailed", f"{boot.leader} at epoch {boot.epoch}: {error}", warning=True
            )
            return Outcome(
                acted=True,
                message=f"bootstrap promote failed: {error}",
                promote_failed=PromoteFailure.of(boot.leader, boot.epoch, error),
            )
        await self.kube.patch_cluster_status(
            self.ref.namespace, self.ref.name, {"leader": boot.leader, "epoch": boot.epoch}
        )
        self.event(body, "Bootstrapped", f"{boot.leader} promoted at epoch {boot.epoch}")
        led = replace(cluster, leader=boot.leader, epoch=boot.epoch)
        await self.repoint(
            body, led, leader.url, [m.name for m in cluster.members if m.name != boot.leader]
        )
        await self.move_leader_label(cluster, boot.leader)
        return Outcome(acted=True)

    async def repoint(
        self,
        body: Mapping[str, Any],
        cluster: ClusterObservation,
        leader_url: str,
        names: list[str],
    ) -> list[str]:
        """Tell `names` to follow `leader_url` at the cluster's epoch; returns who refused."""
        targets = [m for m in cluster.members if m.name in names and m.url and m.reachable]
        errors = await asyncio.gather(
            *(self.members.follow(m.url or "", leader_url, cluster.epoch) for m in targets)
        )
        ok = [m.name for m, err in zip(targets, errors, strict=True) if err is None]
        bad = [f"{m.name} ({err})" for m, err in zip(targets, errors, strict=True) if err]
        if ok:
            self.event(
                body,
                "FollowersRepointed",
                f"{', '.join(ok)} follow {cluster.leader} at epoch {cluster.epoch}",
            )
        if bad:
            self.event(body, "RepointFailed", "; ".join(bad), warning=True)
        return bad

    async def move_leader_label(self, cluster: ClusterObservation, new_leader: str) -> None:
        for m in cluster.members:
            want = (
                c.ROLE_LEADER
                if m.name == new_leader
                else (None if m.role_label == c.ROLE_LEADER else m.role_label)
            )
            if want != m.role_label or m.name == new_leader:
                await self.label(m.name, want)

    async def label(self, pod: str, role: str | None) -> None:
        try:
            await self.kube.patch_pod_labels(self.ref.namespace, pod, {c.LABEL_ROLE: role})
        except kube_api.NotFoundError:
            pass

    async def _fence(
        self, body: Mapping[str, Any], member: MemberObservation, epoch: int, done: str
    ) -> None:
        """Fence `member` at `epoch`; a `LeaderFenced` ("<name> <done>") or `FenceFailed` event."""
        assert member.url is not None
        error = await self.members.fence(member.url, epoch)
        if error is None:
            self.event(body, "LeaderFenced", f"{member.name} {done}")
        else:
            self.event(body, "FenceFailed", f"{member.name}: {error}", warning=True)

    async def failover(
        self, body: Mapping[str, Any], cluster: ClusterObservation, plan: FailoverPlan
    ) -> Outcome:
        """Bump the epoch (unless retrying at it), stop the old leader, promote, repoint.

        The old leader is first fenced at the epoch it already has: that stops its writes
        without handing the new epoch to followers that still stream from it (they would then
        refuse a promote at it). Once the candidate leads, the old leader is fenced at the new
        epoch, so it refuses anything older from then on.
        """
        candidate = cluster.member(plan.candidate)
        assert candidate is not None and candidate.url is not None
        step = f"retry {plan.attempt}: " if plan.retry else ""
        self.event(
            body,
            "FailoverStarted",
            f"{step}{plan.reason}: promoting {plan.candidate} (seq {plan.to_seq})"
            f" at epoch {plan.new_epoch}",
            warning=True,
        )
        # On a retry this rewrites the same epoch: still a compare-and-swap on the status.
        if await self.bump_epoch(cluster, plan.new_epoch, {"phase": "FailingOver"}) is None:
            self.event(body, "FailoverSkipped", "the cluster changed under us; re-observing")
            return Outcome(acted=True)
        if not plan.retry:
            self.event(body, "EpochBumped", f"epoch {plan.epoch} -> {plan.new_epoch}")
        old = cluster.member(plan.old_leader)
        fence = old if plan.fence_old and old is not None and old.url else None
        if fence is not None:
            held = max(fence.epoch, 1)
            await self._fence(body, fence, held, f"stopped taking writes at epoch {held}")
        error = await self.members.promote(candidate.url, plan.new_epoch, members=cluster.replicas)
        if error is not None:
            self.event(
                body,
                "PromoteFailed",
                f"{plan.candidate} at epoch {plan.new_epoch}: {error}",
                warning=True,
            )
            return Outcome(
                acted=True,
                failing_over=True,
                message=f"promote failed: {error}",
                promote_failed=PromoteFailure.of(plan.candidate, plan.new_epoch, error),
            )
        if fence is not None:
            await self._fence(body, fence, plan.new_epoch, f"fenced at epoch {plan.new_epoch}")
        self.event(body, "Promoted", f"{plan.candidate} leads at epoch {plan.new_epoch}")
        await self.kube.patch_cluster_status(
            self.ref.namespace,
            self.ref.name,
            {
                "leader": plan.candidate,
                "lastFailover": {
                    "time": now_iso(),
                    "from": plan.old_leader,
                    "to": plan.candidate,
                    "fromSeq": plan.from_seq,
                    "toSeq": plan.to_seq,
                    "reason": plan.reason,
                },
            },
        )
        led = replace(cluster, leader=plan.candidate, epoch=plan.new_epoch)
        await self.repoint(body, led, candidate.url, list(plan.repoint))
        await self.move_leader_label(cluster, plan.candidate)
        self.event(
            body,
            "FailoverCompleted",
            f"{plan.old_leader} -> {plan.candidate} at epoch {plan.new_epoch}",
        )
        return Outcome(acted=True, leader_changed=True, leader_seq=plan.to_seq)

    async def steady(
        self, body: Mapping[str, Any], cluster: ClusterObservation, decision: Steady
    ) -> Outcome:
        leader = cluster.member(cluster.leader)
        assert leader is not None and leader.url is not None
        acted = False
        for note in decision.notes:
            self.event(body, "SwitchoverRefused", note, warning=True)
        annotation = (body.get("metadata", {}).get("annotations") or {}).get(
            c.ANNOTATION_SWITCHOVER
        )
        if annotation and (decision.notes or annotation == cluster.leader):
            await self.clear_switchover_request()
        if decision.follow:
            standby = [
                n for n in decision.follow if (cluster.member(n) or leader).role == c.ROLE_STANDBY
            ]
            if standby:
                self.event(
                    body, "MemberRejoining", f"{', '.join(standby)} told to follow {leader.name}"
                )
            await self.repoint(body, cluster, leader.url, list(decision.follow))
            acted = True
        op = decision.operation
        if isinstance(op, SwitchoverTo):
            return await self.switchover(body, cluster, op)
        if isinstance(op, RestartPod):
            self.event(body, "RollingRestart", op.reason)
            await self.kube.delete_pod(self.ref.namespace, op.name)
            acted = True
        return Outcome(acted=acted)

    async def clear_switchover_request(self) -> None:
        await self.kube.patch_cluster_annotations(
            self.ref.namespace, self.ref.name, {c.ANNOTATION_SWITCHOVER: None}
        )

    async def wait_caught_up(
        self, leader: MemberObservation, target: MemberObservation, *, slack: int, within: float
    ) -> tuple[bool, int, int]:
        """Poll until the target is within `slack` records of the leader's log (or time out)."""
        deadline = self.clock() + within
        leader_seq = target_seq = -1
        while True:
            lead, tgt = await self.members.observe([_view_of(leader), _view_of(target)])
            if lead.reachable:
                leader_seq = lead.last_seq
            if tgt.reachable:
                target_seq = tgt.last_seq
            if lead.reachable and tgt.reachable and target_seq + slack >= leader_seq:
                return True, leader_seq, target_seq
            if self.clock() >= deadline:
                return False, leader_seq, target_seq
            await asyncio.sleep(self.settings.catchup_poll)

    async def switchover(
        self, body: Mapping[str, Any], cluster: ClusterObservation, op: SwitchoverTo
    ) -> Outcome:
        """Planned leadership change without losing an acknowledged write.

        A fenced leader stops streaming, so the target must already be close before the fence:
        (1) wait, with the leader still serving, until the target is within
        `switchover_slack` records; (2) fence the leader at the current epoch, stopping
        writes; (3) give frames in flight a moment and require the target to hold the
        leader's whole log; (4) promote it at the next epoch and repoint everyone. If (3)
        fails, the old leader (which has everything) is promoted again at the next epoch.
        """
        leader = cluster.member(cluster.leader)
        target = cluster.member(op.target)
        assert leader is not None and leader.url and target is not None and target.url
        close, leader_seq, target_seq = await self.wait_caught_up(
            leader,
            target,
            slack=self.settings.switchover_slack,
            within=self.settings.catchup_timeout,
        )
        if not close:
            self.event(
                body,
                "SwitchoverDeferred",
                f"{op.reason}: {target.name} is at seq {target_seq}, the leader at {leader_seq}",
                warning=True,
            )
            return Outcome(switchover_failed=True, message=f"switchover deferred: {op.reason}")
        self.event(body, "SwitchoverStarted", f"{op.reason}: {leader.name} -> {target.name}")
        fence_error = await self.members.fence(leader.url, cluster.epoch)
        if fence_error is not None:
            self.event(
                body,
                "SwitchoverAborted",
                f"fencing {leader.name} failed: {fence_error}",
                warning=True,
            )
            return Outcome(acted=True, switchover_failed=True)
        self.event(
            body, "LeaderFenced", f"{leader.name} stopped taking writes at epoch {cluster.epoch}"
        )
        caught_up, leader_seq, target_seq = await self.wait_caught_up(
            leader, target, slack=0, within=self.settings.fenced_catchup_timeout
        )
        promote = target if caught_up else leader
        new_epoch = next_epoch(cluster)
        if not caught_up:
            self.event(
                body,
                "SwitchoverAborted",
                f"{target.name} holds seq {target_seq} of {leader_seq}; "
                f"{leader.name} resumes at epoch {new_epoch}",
                warning=True,
            )
        if await self.bump_epoch(cluster, new_epoch, {"phase": "FailingOver"}) is None:
            self.event(body, "SwitchoverSkipped", "the cluster changed under us; re-observing")
            return Outcome(acted=True)
        assert promote.url is not None
        error = await self.members.promote(promote.url, new_epoch, members=cluster.replicas)
        if error is not None:
            # The fenced leader is now "not a leader": failover retries this promote from here.
            self.event(
                body, "PromoteFailed", f"{promote.name} at epoch {new_epoch}: {error}", warning=True
            )
            return Outcome(
                acted=True,
                failing_over=True,
                message=f"promote failed: {error}",
                promote_failed=PromoteFailure.of(promote.name, new_epoch, error),
            )
        self.event(body, "Promoted", f"{promote.name} leads at epoch {new_epoch}")
        status: dict[str, Any] = {"leader": promote.name}
        if caught_up:
            status["lastFailover"] = {
                "time": now_iso(),
                "from": leader.name,
                "to": target.name,
                "fromSeq": leader_seq,
                "toSeq": target_seq,
                "reason": op.reason,
            }
        await self.kube.patch_cluster_status(self.ref.namespace, self.ref.name, status)
        led = replace(cluster, leader=promote.name, epoch=new_epoch)
        others = [m.name for m in cluster.members if m.name != promote.name]
        await self.repoint(body, led, promote.url, others)
        await self.move_leader_label(cluster, promote.name)
        if (body.get("metadata", {}).get("annotations") or {}).get(c.ANNOTATION_SWITCHOVER):
            await self.clear_switchover_request()
        if caught_up:
            self.event(
                body, "SwitchoverCompleted", f"{leader.name} -> {target.name} at epoch {new_epoch}"
            )
        return Outcome(acted=True, leader_changed=True, switchover_failed=not caught_up)


def _view_of(member: MemberObservation) -> PodView:
    return PodView(
        name=member.name,
        ordinal=member.ordinal,
        ip=member.pod_ip,
        port=member.port,
        ready=member.pod_ready,
        terminating=member.terminating,
        revision=member.revision,
        role_label=member.role_label,
    )
