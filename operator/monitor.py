"""The per-cluster monitoring loop: observe, decide, act, then write status and role labels.

One `ClusterMonitor` runs inside a kopf daemon per DVecCluster. Each pass re-reads the
cluster object (for a fresh resourceVersion), lists its pods, asks every member for
`/v1/status` by pod IP, and hands the observation to the pure `decisions.decide`; the
procedures that carry a decision out live in `actions`. Between passes it keeps only the
failure-detection timer, the last position seen on the leader and the last failed promote
(retried with backoff, at the same epoch while that is safe: see `promotion`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.actions import MonitorSettings, Outcome, RoleActions, now_iso
from dvecdb_operator.builders.common import ClusterRef, ordinal_of, selector_labels
from dvecdb_operator.decisions import (
    Adopt,
    Bootstrap,
    Decision,
    Failover,
    Policy,
    Steady,
    Wait,
    decide,
)
from dvecdb_operator.drift import contains
from dvecdb_operator.failover import leader_healthy
from dvecdb_operator.members import Members, PodView
from dvecdb_operator.observation import ClusterObservation
from dvecdb_operator.promotion import PendingPromotion, record_failure
from dvecdb_operator.spec import ClusterSpec, InvalidSpecError, parse_spec
from dvecdb_operator.status import PHASE_FAILED, compute_status, desired_role_labels

__all__ = ["ClusterMonitor", "MonitorSettings", "Outcome", "pod_view"]


def node_port(pod: Mapping[str, Any]) -> int:
    """The node's port as the pod declares it (the `http` container port), else the default."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == c.NODE_PORT_NAME and port.get("containerPort"):
                return int(port["containerPort"])
    return c.NODE_PORT


def pod_view(pod: Mapping[str, Any]) -> PodView:
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    labels = meta.get("labels") or {}
    ready = any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in status.get("conditions") or []
    )
    return PodView(
        name=meta["name"],
        port=node_port(pod),
        ordinal=ordinal_of(meta["name"]),
        ip=status.get("podIP") or None,
        ready=ready,
        terminating=meta.get("deletionTimestamp") is not None,
        revision=labels.get(c.LABEL_REVISION),
        role_label=labels.get(c.LABEL_ROLE),
    )


class ClusterMonitor:
    """Monitor and drive one cluster; holds only timers and the pending promote between passes."""

    def __init__(
        self,
        kube: kube_api.Kube,
        members: Members,
        *,
        namespace: str,
        name: str,
        settings: MonitorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.members = members
        self.ref = ClusterRef(name=name, namespace=namespace)
        self.settings = settings or MonitorSettings()
        self.clock = clock
        self.actions = RoleActions(kube, members, self.ref, self.settings, clock)
        self.unhealthy_since: float | None = None
        self.last_leader_seq = 0
        self.operations_held_until = 0.0
        self.pending: PendingPromotion | None = None

    # --- observation ------------------------------------------------------------------------

    async def observe(self, body: Mapping[str, Any], spec: ClusterSpec) -> ClusterObservation:
        pods = [
            pod_view(p)
            for p in await self.kube.list_pods(self.ref.namespace, selector_labels(self.ref))
            if ordinal_of(p["metadata"]["name"]) >= 0
        ]
        observed = await self.members.observe(pods)
        await self.members.forget({m.url for m in observed if m.url})
        sts = await self.kube.get("apps/v1", "StatefulSet", self.ref.namespace, self.ref.name)
        status = body.get("status") or {}
        cluster = ClusterObservation(
            name=self.ref.name,
            namespace=self.ref.namespace,
            replicas=spec.replicas,
            epoch=int(status.get("epoch") or 0),
            leader=status.get("leader") or None,
            members=tuple(sorted(observed, key=lambda m: m.ordinal)),
            update_revision=((sts or {}).get("status") or {}).get("updateRevision"),
        )
        return cluster

    def track_leader(self, cluster: ClusterObservation) -> float | None:
        """Update the detection timer; returns for how long the leader has been failed."""
        now = self.clock()
        leader = cluster.member(cluster.leader)
        if cluster.leader is None or leader_healthy(leader, cluster.epoch):
            self.unhealthy_since = None
            if cluster.leader is not None:
                self.pending = None  # a leader serves: no promote is pending any more
            if leader is not None:
                self.last_leader_seq = max(self.last_leader_seq, leader.last_seq)
            return None
        if self.unhealthy_since is None:
            self.unhealthy_since = now
        return now - self.unhealthy_since

    # --- one pass ---------------------------------------------------------------------------

    async def tick(self) -> Outcome:
        body = await self.kube.get_cluster(self.ref.namespace, self.ref.name)
        if body.get("metadata", {}).get("deletionTimestamp"):
            return Outcome()
        try:
            spec = parse_spec(body.get("spec"))
        except InvalidSpecError as exc:
            outcome = Outcome(failed=True, message=str(exc))
            await self.kube.patch_cluster_status(
                self.ref.namespace, self.ref.name, {"phase": PHASE_FAILED, "message": str(exc)}
            )
            return outcome
        cluster = await self.observe(body, spec)
        unhealthy_for = self.track_leader(cluster)
        annotations = body.get("metadata", {}).get("annotations") or {}
        decision = decide(
            cluster,
            policy=Policy(spec.failover.enabled, spec.failover.detection_seconds),
            unhealthy_for=unhealthy_for,
            switchover_target=annotations.get(c.ANNOTATION_SWITCHOVER),
            last_leader_seq=self.last_leader_seq,
            pending=self.pending,
            now=self.clock(),
        )
        if isinstance(decision, Steady) and self.clock() < self.operations_held_until:
            decision = replace(decision, operation=None)
        outcome = await self.act(body, cluster, decision)
        if outcome.switchover_failed:
            self.operations_held_until = self.clock() + self.settings.operation_backoff
        if outcome.leader_changed:
            self.unhealthy_since = None
            self.pending = None
        if outcome.promote_failed is not None:
            self.retry_later(body, outcome)
        if outcome.leader_seq is not None:
            self.last_leader_seq = outcome.leader_seq
        if outcome.acted:
            body = await self.kube.get_cluster(self.ref.namespace, self.ref.name)
            cluster = await self.observe(body, spec)
        await self.write_labels(cluster)
        await self.write_status(body, cluster, outcome)
        return outcome

    def retry_later(self, body: Mapping[str, Any], outcome: Outcome) -> None:
        """Remember the failed promote and say when and at which epoch it is retried."""
        failure = outcome.promote_failed
        assert failure is not None
        self.pending = record_failure(
            self.pending,
            candidate=failure.candidate,
            epoch=failure.epoch,
            error=failure.error,
            refused=failure.refused,
            now=self.clock(),
            first=self.settings.promote_retry_first,
            cap=self.settings.promote_retry_cap,
        )
        epoch = "a new epoch" if failure.refused else f"epoch {failure.epoch}"
        message = (
            f"promoting {failure.candidate} at epoch {failure.epoch} failed"
            f" (attempt {self.pending.attempts}); retrying at {epoch} in {self.pending.delay:g}s"
        )
        self.actions.event(body, "PromoteRetrying", message, warning=True)
        outcome.message = message

    async def act(
        self, body: Mapping[str, Any], cluster: ClusterObservation, decision: Decision
    ) -> Outcome:
        if isinstance(decision, Bootstrap):
            return await self.actions.bootstrap(body, cluster, decision)
        if isinstance(decision, Adopt):
            return await self.actions.adopt(body, decision)
        if isinstance(decision, Failover):
            return await self.actions.failover(body, cluster, decision.plan)
        if isinstance(decision, Wait):
            return Outcome(
                failed=decision.failed,
                failing_over=decision.failing_over,
                message=decision.reason,
            )
        return await self.actions.steady(body, cluster, decision)

    # --- writing back -----------------------------------------------------------------------

    async def write_labels(self, cluster: ClusterObservation) -> None:
        for pod, role in desired_role_labels(cluster).items():
            await self.actions.label(pod, role)

    async def write_status(
        self, body: Mapping[str, Any], cluster: ClusterObservation, outcome: Outcome
    ) -> None:
        current = body.get("status") or {}
        patch = compute_status(
            cluster,
            generation=body.get("metadata", {}).get("generation"),
            previous_conditions=current.get("conditions") or [],
            now=now_iso(),
            failing_over=outcome.failing_over,
            failed=outcome.failed,
            message=outcome.message,
        )
        same_members = len(current.get("members") or []) == len(patch["members"])
        if same_members and contains(current, patch):
            return
        await self.kube.patch_cluster_status(self.ref.namespace, self.ref.name, patch)
