"""What the operator saw of one cluster in one monitoring pass: plain frozen dataclasses.

The monitor fills these from the pods' status and each member's `GET /v1/status`; every
decision module reads them and nothing else, so decisions are tested with literal values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """One member: its pod as Kubernetes reports it and the node as it answered (if at all)."""

    name: str
    ordinal: int
    pod_ip: str | None = None
    port: int = c.NODE_PORT
    pod_ready: bool = False
    terminating: bool = False
    revision: str | None = None
    role_label: str | None = None
    reachable: bool = False
    role: str | None = None
    epoch: int = 0
    last_seq: int = 0
    applied_seq: int = 0
    durable_seq: int = 0
    leader_url: str | None = None
    followers: tuple[FollowerPosition, ...] = ()
    error: str | None = None

    @property
    def url(self) -> str | None:
        """The member's base URL by pod IP (no cluster DNS or kube-proxy is assumed)."""
        if not self.pod_ip:
            return None
        host = f"[{self.pod_ip}]" if ":" in self.pod_ip else self.pod_ip
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class ClusterObservation:
    """The cluster's recorded state (from its status) plus the members observed now."""

    name: str
    namespace: str
    replicas: int
    epoch: int = 0
    leader: str | None = None
    members: tuple[MemberObservation, ...] = field(default_factory=tuple)
    update_revision: str | None = None

    def member(self, name: str | None) -> MemberObservation | None:
        if name is None:
            return None
        return next((m for m in self.members if m.name == name), None)
