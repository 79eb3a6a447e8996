"""Where each replica group's part of the status lives: pure views and patches.

A cluster of one shard keeps today's status exactly (its group *is* the status). With several
shards, shard 0's group keeps the top-level fields a one-shard cluster has (`leader`, `epoch`,
`members`, `failover`, `lastFailover`, `leaderPod`, ...), so every name and field of shard 0
stays where it was; only the fields that describe the whole cluster (`phase`, `message`,
`conditions`) are the aggregate of all groups (`aggregate`), and shard 0's own values of them
live in `groups["0"]`. Shard `i > 0` keeps its whole group status in `groups["<i>"]`, with the
same shape. The monitor, the decisions and the executor see a group's status through `view`
and write it through `wrap`, so the failover logic is the same code for every group.

`groups` is a map, not a list, so that a merge patch of one group leaves the others alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUPS_KEY = "groups"
# The cluster-wide fields: a group's own values of them are kept in its `groups` entry.
CLUSTER_KEYS = frozenset({"phase", "message", "conditions"})
# Fields of a group's pass that only make sense for the whole cluster (the scale subresource).
TOP_ONLY_KEYS = frozenset({"selector"})


@dataclass(frozen=True)
class GroupScope:
    """Shard `shard` of a cluster of `shards` shards."""

    shard: int = 0
    shards: int = 1

    @property
    def key(self) -> str:
        return str(self.shard)

    def view(self, status: Mapping[str, Any] | None) -> dict[str, Any]:
        """The group's status in the shape a one-shard cluster's status has."""
        status = dict(status or {})
        if self.shards == 1:
            return status
        groups = status.get(GROUPS_KEY)
        own = groups.get(self.key) if isinstance(groups, Mapping) else None
        own = dict(own) if isinstance(own, Mapping) else {}
        if self.shard > 0:
            return own
        top = {k: v for k, v in status.items() if k not in CLUSTER_KEYS and k != GROUPS_KEY}
        return {**top, **{k: v for k, v in own.items() if k in CLUSTER_KEYS}}

    def wrap(self, patch: Mapping[str, Any]) -> dict[str, Any]:
        """A merge patch of the group's status, as a merge patch of the cluster's."""
        if self.shards == 1:
            return dict(patch)
        if self.shard > 0:
            own = {k: v for k, v in patch.items() if k not in TOP_ONLY_KEYS}
            return {GROUPS_KEY: {self.key: own}}
        top = {k: v for k, v in patch.items() if k not in CLUSTER_KEYS}
        own = {k: v for k, v in patch.items() if k in CLUSTER_KEYS}
        if own:
            top[GROUPS_KEY] = {self.key: own}
        return top
