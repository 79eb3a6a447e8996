"""Who may write: the node's role, epoch and leader lease, and the hooks replication plugs in.

Every write endpoint checks :meth:`NodeRole.require_leader` when the request arrives and
:meth:`NodeRole.require_epoch` again under the engine's write lock, right before the record
gets its seq (a write queued behind the lock while this node was told of a newer epoch, or
while its lease lapsed, is refused, not appended at the old epoch). Replication changes
behaviour by changing the role and the lease, never by editing routes. ``--standalone``
makes a node leader from the start (its lease never lapses); otherwise it boots in
``standby``, and writes answer 409 ``not_leader`` with ``leader: null``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dvecdb_node.errors import NotLeader, NotReady

Role = Literal["leader", "follower", "standby"]


def lease_token() -> int:
    """A lease token: this process's monotonic clock in milliseconds (see ``replication.lease``;
    every ``/v1/status`` carries one as ``lease_token``)."""
    return int(time.monotonic() * 1000)


def lease_expired(what: str) -> NotReady:
    return NotReady(
        f"this leader's lease expired (it has heard from neither a majority of members nor "
        f"the operator within the lease): {what}",
        code="lease_expired",
    )


@dataclass(slots=True)
class NodeRole:
    """Mutable holder of this node's place in the cluster (replication updates it)."""

    node_id: str
    role: Role = "standby"
    epoch: int = 0
    leader_url: str | None = None
    # Monotonic time the leader lease ends; inf: it never lapses (standalone, no cluster).
    lease_until: float = math.inf

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    @property
    def lease_valid(self) -> bool:
        until = self.lease_until
        return until == math.inf or time.monotonic() < until

    def require_leader(self) -> int:
        """The epoch to write at; raises :class:`NotLeader` unless this node is leader."""
        if self.role != "leader":
            raise NotLeader(self.leader_url)
        return self.epoch

    def require_epoch(self, epoch: int, *, lease: bool = True) -> None:
        """Raise unless this node still leads at exactly ``epoch`` with a valid lease
        (``lease=False``: whatever the lease, for the record that opens the epoch).

        Passed to ``Engine.submit`` as its ``check`` (run under the write lock).
        """
        if self.role != "leader" or self.epoch != epoch:
            raise NotLeader(
                self.leader_url, f"this member no longer leads at epoch {epoch}; the write "
                "was not made"
            )  # fmt: skip
        if lease and not self.lease_valid:
            raise lease_expired("the write was not made")

    def require_lease(self) -> int:
        """The epoch, for a ``strong``/``quorum`` read: leader with a valid lease only."""
        epoch = self.require_leader()
        if not self.lease_valid:
            raise lease_expired("it serves no strong or quorum reads")
        return epoch


class ClusterHooks(Protocol):
    """What the API asks of replication; :class:`SingleNodeHooks` is the standalone answer."""

    async def wait_ack(self, seq: int, ack: str) -> None:
        """Return once ``seq`` satisfies the ``ack`` level (leader-durable is already done)."""

    async def confirm_leadership(self) -> None:
        """Raise :class:`NotLeader` unless a majority still follows this leader."""

    def followers(self) -> list[dict[str, Any]]:
        """Per-follower replication positions for ``/v1/status``."""

    def lease_status(self) -> dict[str, Any] | None:
        """The leader lease for ``/v1/status`` (None when there is none)."""

    def last_ack_seconds(self) -> float | None:
        """Seconds since this member last acked a leader, at most its uptime (None: standalone)."""

    def not_ready_reason(self) -> str | None:
        """Why ``/readyz`` should answer 503 beyond recovery (e.g. follower lag), or None."""

    def commit_seq(self, durable_seq: int) -> int:
        """The highest seq durable on a majority of members, this leader's own durable
        position being ``durable_seq`` (what resharding's slot log may serve)."""


class SingleNodeHooks:
    """No followers: every ack level is met by the leader's own durability."""

    def __init__(self, role: NodeRole) -> None:
        self._role = role

    async def wait_ack(self, seq: int, ack: str) -> None:
        return None

    async def confirm_leadership(self) -> None:
        self._role.require_lease()

    def followers(self) -> list[dict[str, Any]]:
        return []

    def lease_status(self) -> dict[str, Any] | None:
        return None

    def last_ack_seconds(self) -> float | None:
        return None

    def not_ready_reason(self) -> str | None:
        return None

    def commit_seq(self, durable_seq: int) -> int:
        return durable_seq
