"""Who may write: the node's role and epoch, and the hooks replication plugs in.

Every write endpoint calls :meth:`NodeRole.require_leader` (the write gate), so replication
changes behaviour by changing the role, never by editing routes. ``--standalone`` makes a
node leader from the start; otherwise it boots in ``standby``: reads only, and writes answer
409 ``not_leader`` with ``leader: null``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dvecdb_node.errors import NotLeader

Role = Literal["leader", "follower", "standby"]


@dataclass(slots=True)
class NodeRole:
    """Mutable holder of this node's place in the cluster (replication updates it)."""

    node_id: str
    role: Role = "standby"
    epoch: int = 0
    leader_url: str | None = None

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    def require_leader(self) -> int:
        """The epoch to write at; raises :class:`NotLeader` unless this node is leader."""
        if self.role != "leader":
            raise NotLeader(self.leader_url)
        return self.epoch


class ClusterHooks(Protocol):
    """What the API asks of replication; :class:`SingleNodeHooks` is the standalone answer."""

    async def wait_ack(self, seq: int, ack: str) -> None:
        """Return once ``seq`` satisfies the ``ack`` level (leader-durable is already done)."""

    async def confirm_leadership(self) -> None:
        """Raise :class:`NotLeader` unless a majority still follows this leader."""

    def followers(self) -> list[dict[str, Any]]:
        """Per-follower replication positions for ``/v1/status``."""

    def not_ready_reason(self) -> str | None:
        """Why ``/readyz`` should answer 503 beyond recovery (e.g. follower lag), or None."""


class SingleNodeHooks:
    """No followers: every ack level is met by the leader's own durability."""

    def __init__(self, role: NodeRole) -> None:
        self._role = role

    async def wait_ack(self, seq: int, ack: str) -> None:
        return None

    async def confirm_leadership(self) -> None:
        self._role.require_leader()

    def followers(self) -> list[dict[str, Any]]:
        return []

    def not_ready_reason(self) -> str | None:
        return None
