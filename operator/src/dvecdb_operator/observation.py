"""What the operator saw of one cluster in one pass, and the failover it keeps in the status.

The pass reads the cluster once (the object, its pods, every member's `GET /v1/status`) into
these frozen dataclasses; the decision module reads them and nothing else, so decisions are
tested with literal values. `FailoverRecord` is the in-flight leadership change as it is
persisted in `status.failover`: a restarted operator resumes it from there, at its epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dvecdb_operator import constants as c


@dataclass(frozen=True)
class FollowerPosition:
    """One follower as its leader reports it (`followers` in the leader's status)."""

    node_id: str
    received_seq: int = 0
    applied_seq: int = 0
    lag_seq: int = 0
    lag_seconds: float = 0.0


@dataclass(frozen=True)
class MemberObservation:
    """One member: its pod as Kubernetes reports it and the node as it answered (if at all).

    `pod_running` and `restarts` are None when the pod status does not say (not yet
    scheduled, or an API that omits container statuses): unknown is not a death signal.
    """

    name: str
    ordinal: int
    pod_ip: str | None = None
    port: int = c.NODE_PORT
    scheme: str = "http"  # https: the node serves TLS (spec.tls)
    pod_ready: bool = False
    terminating: bool = False
    revision: str | None = None
    role_label: str | None = None
    pod_uid: str | None = None
    restarts: int | None = None
    pod_running: bool | None = None
    reachable: bool = False
    role: str | None = None
    epoch: int = 0
    last_epoch: int = 0
    last_seq: int = 0
    received_seq: int = 0
    applied_seq: int = 0
    durable_seq: int = 0
    # The node's store is recovered (its `ready`): until then it reports positions of 0, which
    # say nothing of what its log holds.
    store_ready: bool = True
    leader_url: str | None = None
    followers: tuple[FollowerPosition, ...] = ()
    lease_token: int | None = None  # `lease.token` of the answer: a confirmation renews from it
    # Seconds since this member last acked a leader (None: never, or not said): that leader's
    # lease may hold up to `leaseSeconds` past the ack.
    last_ack_seconds: float | None = None
    error: str | None = None

    @property
    def url(self) -> str | None:
        """The member's base URL by pod IP (no cluster DNS or kube-proxy is assumed)."""
        if not self.pod_ip:
            return None
        host = f"[{self.pod_ip}]" if ":" in self.pod_ip else self.pod_ip
        return f"{self.scheme}://{host}:{self.port}"

    def fenced_at(self, epoch: int) -> bool:
        """Answers in standby at exactly `epoch`: it takes no writes and acks no stream.

        Only the operator hands out an epoch, so a member in standby at the failover's epoch
        was fenced by it (or learnt the epoch from a fenced peer: stopped all the same). A
        member still recovering its store does not count: a restart keeps the fenced epoch,
        but until recovery ends its positions read 0, and choosing by them could promote a
        member that holds less than one counted as holding nothing.
        """
        return (
            self.reachable
            and self.store_ready
            and self.role == c.ROLE_STANDBY
            and self.epoch == epoch
        )

    def leads_at(self, epoch: int) -> bool:
        return self.reachable and self.role == c.ROLE_LEADER and self.epoch == epoch

    def streams_from(self, leader: MemberObservation, epoch: int) -> bool:
        """Answers as a follower of `leader` (by URL) at `epoch`, and is not going away."""
        return (
            self.reachable
            and not self.terminating
            and self.role == c.ROLE_FOLLOWER
            and self.epoch == epoch
            and self.leader_url is not None
            and leader.url is not None
            and self.leader_url.rstrip("/") == leader.url.rstrip("/")
        )

    def lag_behind(self, leader: MemberObservation) -> int:
        """Records of the leader's log this member has not applied (both read in one pass)."""
        return 0 if self is leader else max(0, leader.last_seq - self.applied_seq)

    def in_step(self, leader: MemberObservation, epoch: int, max_lag_seq: int) -> bool:
        """Streams from `leader` and lacks at most `max_lag_seq` of its records: a member
        that counts for the group (a Healthy phase, the next restart of an upgrade)."""
        return self.streams_from(leader, epoch) and self.lag_behind(leader) <= max_lag_seq


@dataclass(frozen=True)
class LeaderPod:
    """The leader's pod as last seen healthy: a new uid or more restarts is a certain death."""

    name: str
    uid: str | None
    restarts: int | None

    def to_status(self) -> dict[str, Any]:
        return {"name": self.name, "uid": self.uid, "restarts": self.restarts}

    @classmethod
    def from_status(cls, raw: Any) -> LeaderPod | None:
        if not isinstance(raw, Mapping) or not raw.get("name"):
            return None
        restarts = raw.get("restarts")
        return cls(
            name=str(raw["name"]),
            uid=str(raw["uid"]) if raw.get("uid") else None,
            restarts=int(restarts) if isinstance(restarts, int) else None,
        )


Kind = Literal["bootstrap", "failover", "switchover", "forced"]
Phase = Literal["fencing", "promoting", "repointing"]
KINDS: tuple[Kind, ...] = ("bootstrap", "failover", "switchover", "forced")
PHASES: tuple[Phase, ...] = ("fencing", "promoting", "repointing")


@dataclass(frozen=True)
class FailoverRecord:
    """A leadership change in flight, persisted as `status.failover` before each step.

    `kind`: `bootstrap` (ordinal 0 at epoch 1, no fencing), `failover` (the leader failed,
    or no leader is recorded), `switchover` (planned: to `target`, or to whoever holds more),
    `forced` (a human named `target`; acknowledged writes may be lost). `from_` is the leader
    it replaces (None when none is recorded). `refused` never reaches the status: it marks,
    within one pass, a candidate that refused the epoch so the next step takes a fresh one.
    """

    epoch: int
    kind: Kind
    phase: Phase
    from_: str | None
    reason: str
    target: str | None = None
    candidate: str | None = None
    fenced: tuple[str, ...] = ()
    from_seq: int = 0
    to_seq: int = 0
    started: str = ""
    refused: bool = False

    def to_status(self) -> dict[str, Any]:
        """The `status.failover` merge patch: absent fields as None so stale ones go."""
        return {
            "epoch": self.epoch,
            "kind": self.kind,
            "phase": self.phase,
            "from": self.from_,
            "reason": self.reason,
            "target": self.target,
            "candidate": self.candidate,
            "fenced": list(self.fenced),
            "fromSeq": self.from_seq,
            "toSeq": self.to_seq,
            "started": self.started or None,
        }

    @classmethod
    def from_status(cls, raw: Any) -> FailoverRecord | None:
        """The record in `status.failover`, or None when absent or not one we wrote."""
        if not isinstance(raw, Mapping):
            return None
        kind, phase, epoch = raw.get("kind"), raw.get("phase"), raw.get("epoch")
        if kind not in KINDS or phase not in PHASES or not isinstance(epoch, int) or epoch < 1:
            return None

        def text(key: str) -> str | None:
            value = raw.get(key)
            return str(value) if value else None

        def number(key: str) -> int:
            value = raw.get(key)
            return int(value) if isinstance(value, int) else 0

        return cls(
            epoch=epoch,
            kind=kind,
            phase=phase,
            from_=text("from"),
            reason=str(raw.get("reason") or ""),
            target=text("target"),
            candidate=text("candidate"),
            fenced=tuple(str(n) for n in raw.get("fenced") or () if n),
            from_seq=number("fromSeq"),
            to_seq=number("toSeq"),
            started=str(raw.get("started") or ""),
        )

    def at(self, phase: Phase, **changes: Any) -> FailoverRecord:
        return replace(self, phase=phase, **changes)


@dataclass(frozen=True)
class ClusterObservation:
    """The cluster's recorded state (from its object) plus the members observed now.

    `replicas` is the spec's; `recorded_seqs` are the members' `lastSeq` as the previous
    pass wrote them to `status.members` (the failed leader's last known position).
    """

    name: str
    namespace: str
    replicas: int
    epoch: int = 0
    leader: str | None = None
    members: tuple[MemberObservation, ...] = field(default_factory=tuple)
    update_revision: str | None = None
    # The StatefulSet's controller has not yet observed its latest spec: `update_revision`
    # may be the one before a template change (not Healthy, no restart until it has).
    revision_pending: bool = False
    failover: FailoverRecord | None = None
    leader_pod: LeaderPod | None = None
    switchover_to: str | None = None
    force_promote: str | None = None
    recorded_seqs: Mapping[str, int] = field(default_factory=dict)
    # `status.healthyReplicas`: the group's size at its last Healthy pass (None: never
    # recorded); the phase is Scaling while the spec asks for another size.
    healthy_replicas: int | None = None
    previous_phase: str | None = None  # `status.phase` as the pass read it

    def member(self, name: str | None) -> MemberObservation | None:
        if name is None:
            return None
        return next((m for m in self.members if m.name == name), None)

    def with_member(self, member: MemberObservation) -> ClusterObservation:
        """This observation with one member replaced (what a step learnt about it)."""
        members = tuple(member if m.name == member.name else m for m in self.members)
        return replace(self, members=members)
