"""One monitoring pass over one cluster: read once, decide and act step by step, write back.

`ClusterMonitor.tick` reads the cluster once (the object, its pods, the StatefulSet's
revision, every member's `/v1/status`), then alternates the pure `decisions.decide` with the
`executor` until a step says to wait, and ends with the one role-label algorithm and the
status patch. Everything a leadership change needs to resume lives in the status (see
`observation.FailoverRecord`); between passes the monitor keeps only timers: since when the
watched member has been failed (the detection window), since when a planned switchover has
been waiting for its target, and until when planned operations are held after one aborted.
A restarted operator starts them afresh, which only ever delays a failover, never hastens it.

A monitor serves one replica group (`GroupScope`): a sharded cluster has one per shard, each
with its own pods, StatefulSet, leader, epoch and failover record, and the same decisions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator import livesettings
from dvecdb_operator.builders.common import ClusterRef, ordinal_of, selector_labels, shard_of_pod
from dvecdb_operator.decisions import FINAL, PHASE_DELETING, PHASE_FAILED, Policy, decide, watched
from dvecdb_operator.drift import contains
from dvecdb_operator.executor import Executor, PassState, now_iso
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.members import Members, PodView
from dvecdb_operator.observation import ClusterObservation, FailoverRecord, LeaderPod
from dvecdb_operator.spec import ClusterSpec, InvalidSpecError, parse_spec
from dvecdb_operator.status import compute_status, desired_role_labels
from dvecdb_operator.tlsplan import serving_scheme

__all__ = ["ClusterMonitor", "MonitorSettings", "PassResult", "observe_cluster", "pod_view"]


@dataclass(frozen=True)
class MonitorSettings:
    """Knobs of the pass that are not in the cluster's spec."""

    interval: float = 2.0
    # A planned switchover whose target has not caught up within this is deferred...
    catchup_timeout: float = 30.0
    # ...and so is any planned operation for this long after a switchover was deferred or
    # promoted someone else than its target (that member held more when fenced).
    operation_backoff: float = 30.0
    # A planned switchover starts once its target is this many records from the leader.
    switchover_slack: int = 0
    # A member lacking more records than this does not count (phase, upgrade restarts).
    max_lag_seq: int = 100
    # Steps one pass may take (a whole failover takes about six).
    max_steps: int = 16


@dataclass(frozen=True)
class PassResult:
    """What a pass did: `acted` when it changed something (the runtime then reconciles)."""

    acted: bool = False
    leader_changed: bool = False
    failed: bool = False
    message: str = ""


def node_port(pod: Mapping[str, Any]) -> int:
    """The node's port as the pod declares it (the `http` container port), else the default."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == c.NODE_PORT_NAME and port.get("containerPort"):
                return int(port["containerPort"])
    return c.NODE_PORT


def _container(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == "node"), statuses[0] if statuses else None)


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """The pod facts a pass needs; restarts and running stay None when the API omits them."""
    meta = pod.get("metadata", {})
    status = pod.get("status", {})
    labels = meta.get("labels") or {}
    ready = any(
        cond.get("type") == "Ready" and cond.get("status") == "True"
        for cond in status.get("conditions") or []
    )
    container = _container(pod)
    restarts = container.get("restartCount") if container else None
    running: bool | None = None
    if status.get("phase") and status["phase"] != "Running":
        running = False
    elif container is not None and container.get("state"):
        running = "running" in container["state"]
    return PodView(
        name=meta["name"],
        port=node_port(pod),
        scheme=serving_scheme(pod),
        ordinal=ordinal_of(meta["name"]),
        ip=status.get("podIP") or None,
        ready=ready,
        terminating=meta.get("deletionTimestamp") is not None,
        revision=labels.get(c.LABEL_REVISION),
        role_label=labels.get(c.LABEL_ROLE),
        uid=meta.get("uid"),
        restarts=int(restarts) if isinstance(restarts, int) else None,
        running=running,
    )


def revision_pending(sts: Mapping[str, Any] | None) -> bool:
    """The StatefulSet controller has not observed the StatefulSet's latest generation."""
    generation = ((sts or {}).get("metadata") or {}).get("generation")
    observed = ((sts or {}).get("status") or {}).get("observedGeneration")
    return isinstance(generation, int) and (not isinstance(observed, int) or observed < generation)


def claims(ref: ClusterRef, pod_name: str | None) -> bool:
    """A request annotation naming `pod_name` is this group's to act on: the member is one of
    its own, or of no group at all (shard 0 then refuses it, as a one-shard cluster does)."""
    if not pod_name:
        return False
    owner = shard_of_pod(ref, pod_name)
    return owner == ref.shard or (owner is None and ref.shard == 0)


async def observe_cluster(
    kube: kube_api.Kube,
    members: Members,
    body: Mapping[str, Any],
    spec: ClusterSpec,
    scope: GroupScope | None = None,
) -> ClusterObservation:
    """The one read of a pass over one group: its pods, its StatefulSet's revision, every
    member's status. The observation is named after the group's StatefulSet, whose name
    prefixes its members' (what the decisions count members by)."""
    scope = scope or GroupScope()
    meta = body["metadata"]
    ref = ClusterRef(meta["name"], meta["namespace"], scope.shard, scope.shards)
    pods = [
        pod_view(p)
        # By the cluster's label and the group's pod names: a cluster grown from one shard
        # has shard 0 pods without the shard label until they restart (`keep_selector`).
        for p in await kube.list_pods(ref.namespace, selector_labels(ref))
        if ordinal_of(p["metadata"]["name"]) >= 0 and ref.owns_pod(p["metadata"]["name"])
    ]
    observed = await members.observe(pods)
    await members.forget({m.url for m in observed if m.url})
    sts = await kube.get("apps/v1", "StatefulSet", ref.namespace, ref.statefulset)
    status = scope.view(body.get("status"))
    annotations = {
        key: value
        for key, value in (meta.get("annotations") or {}).items()
        if key not in (c.ANNOTATION_SWITCHOVER, c.ANNOTATION_FORCE_PROMOTE) or claims(ref, value)
    }
    # `last_seq`: the field's name before the status went camelCase (an operator upgrade
    # reads the members an older operator wrote).
    recorded = {
        str(m["name"]): int(m.get("lastSeq") or m.get("last_seq") or 0)
        for m in status.get("members") or []
        if isinstance(m, Mapping) and m.get("name")
    }
    healthy = status.get("healthyReplicas")
    return ClusterObservation(
        name=ref.statefulset,
        namespace=ref.namespace,
        replicas=spec.replicas,
        epoch=int(status.get("epoch") or 0),
        leader=status.get("leader") or None,
        members=tuple(sorted(observed, key=lambda m: m.ordinal)),
        update_revision=((sts or {}).get("status") or {}).get("updateRevision"),
        revision_pending=revision_pending(sts),
        failover=FailoverRecord.from_status(status.get("failover")),
        leader_pod=LeaderPod.from_status(status.get("leaderPod")),
        switchover_to=annotations.get(c.ANNOTATION_SWITCHOVER) or None,
        force_promote=annotations.get(c.ANNOTATION_FORCE_PROMOTE) or None,
        recorded_seqs=recorded,
        healthy_replicas=healthy if isinstance(healthy, int) else None,
        previous_phase=status.get("phase") or None,
    )


class ClusterMonitor:
    """Runs passes over one cluster. Between passes it keeps only timers (see module doc)."""

    def __init__(
        self,
        kube: kube_api.Kube,
        members: Members,
        *,
        namespace: str,
        name: str,
        settings: MonitorSettings | None = None,
        clock: Callable[[], float] = time.monotonic,
        scope: GroupScope | None = None,
    ) -> None:
        self.kube = kube
        self.members = members
        self.scope = scope or GroupScope()
        self.ref = ClusterRef(name, namespace, self.scope.shard, self.scope.shards)
        self.settings = settings or MonitorSettings()
        self.clock = clock
        self.executor = Executor(kube, members, self.ref, self.scope)
        # The group as the last pass saw it (the router's members file is made from it).
        self.last: ClusterObservation | None = None
        self._failed: tuple[str, int] | None = None
        self._failed_since = 0.0
        self._waiting: str | None = None  # the planned operation waiting for its target
        self._waiting_since = 0.0
        self.held_until = 0.0

    def failed_for(self, cluster: ClusterObservation, observed_at: float) -> float | None:
        """Seconds the watched member (leader, or pending candidate) has been failed.

        A failure first seen counts from `observed_at`, when the pass began to read: a member
        that did not answer within the read's timeout was failed when the read started.
        """
        seen = watched(cluster)
        if seen is None:
            self._failed = None
            return None
        key = (seen[0], seen[1])
        if key != self._failed:
            self._failed, self._failed_since = key, observed_at
        return self.clock() - self._failed_since

    def _track_waiting(self, state: PassState) -> None:
        """A planned operation that waited for its target longer than allowed is deferred."""
        now = self.clock()
        if state.waiting is None:
            self._waiting = None
        elif state.waiting != self._waiting:
            self._waiting, self._waiting_since = state.waiting, now
        elif now - self._waiting_since >= self.settings.catchup_timeout:
            self.executor.event(state, "SwitchoverDeferred", state.message, warning=True)
            self.held_until = now + self.settings.operation_backoff
            self._waiting = None

    async def tick(
        self, body: Mapping[str, Any] | None = None, spec: ClusterSpec | None = None
    ) -> PassResult:
        """One pass. `body` (and its parsed `spec`): the object if the caller just read it."""
        if body is None:
            body = await self.kube.get_cluster(self.ref.namespace, self.ref.name)
        if body.get("metadata", {}).get("deletionTimestamp"):
            # Only another finalizer (foreground deletion) keeps it: say so, touch nothing.
            if (body.get("status") or {}).get("phase") != PHASE_DELETING:
                message = "deleting: the children go with it (owner references)"
                patch = {"phase": PHASE_DELETING, "message": message}
                await self.kube.patch_cluster_status(self.ref.namespace, self.ref.name, patch)
            return PassResult()
        if spec is None:
            try:
                spec = parse_spec(body.get("spec"))
            except InvalidSpecError as exc:
                await self.kube.patch_cluster_status(
                    self.ref.namespace, self.ref.name, {"phase": PHASE_FAILED, "message": str(exc)}
                )
                return PassResult(failed=True, message=str(exc))
        observed_at = self.clock()
        cluster = await observe_cluster(self.kube, self.members, body, spec, self.scope)
        state = PassState(
            body=body,
            cluster=cluster,
            resource_version=str(body["metadata"].get("resourceVersion") or ""),
            status=self.scope.view(body.get("status")),
        )
        policy = Policy(
            failover_enabled=spec.failover.enabled,
            detection_seconds=spec.failover.detection_seconds,
            lease_seconds=spec.failover.lease,
            switchover_slack=self.settings.switchover_slack,
            max_lag_seq=self.settings.max_lag_seq,
        )
        for _ in range(self.settings.max_steps):
            step = decide(
                state.cluster,
                policy=policy,
                failed_for=self.failed_for(state.cluster, observed_at),
                held=state.switchover_aborted or self.clock() < self.held_until,
                now=now_iso(),
            )
            if not await self.executor.run(step, state) or isinstance(step, FINAL):
                break
        self._track_waiting(state)
        if state.switchover_aborted:
            self.held_until = self.clock() + self.settings.operation_backoff
        await self.write_labels(state.cluster)
        await self.sync_live_settings(body, spec, state.cluster)
        await self.write_status(body, state)
        self.last = state.cluster
        return PassResult(
            acted=state.acted,
            leader_changed=state.leader_changed,
            failed=state.failed,
            message=state.message,
        )

    async def sync_live_settings(
        self, body: Mapping[str, Any], spec: ClusterSpec, cluster: ClusterObservation
    ) -> None:
        """`spec.node.hnsw.efSearch` on live collections, through the group's serving leader
        when one may take the PATCHes (`livesettings.applier`)."""
        leader, waits_for = livesettings.applier(cluster)
        leaders: dict[str, Any] = {}
        if leader is not None and leader.url:
            leaders[leader.name] = self.members.client(leader.url)
        desired = spec.node.hnsw.ef_search
        await livesettings.sync(
            self.kube, body, desired, leaders, now=now_iso(), scope=self.scope, waits_for=waits_for
        )

    async def write_labels(self, cluster: ClusterObservation) -> None:
        for pod, role in desired_role_labels(cluster).items():
            try:
                await self.kube.patch_pod_labels(self.ref.namespace, pod, {c.LABEL_ROLE: role})
            except kube_api.NotFoundError:
                pass

    async def write_status(self, body: Mapping[str, Any], state: PassState) -> None:
        current = state.status
        patch = compute_status(
            state.cluster,
            generation=body.get("metadata", {}).get("generation"),
            previous_conditions=current.get("conditions") or [],
            now=now_iso(),
            report=state.report(),
            max_lag_seq=self.settings.max_lag_seq,
        )
        same_members = len(current.get("members") or []) == len(patch["members"])
        if same_members and contains(current, patch):
            return
        await self.kube.patch_cluster_status(
            self.ref.namespace, self.ref.name, self.scope.wrap(patch)
        )
