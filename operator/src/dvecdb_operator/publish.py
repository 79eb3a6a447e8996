"""After the groups' passes: the cluster-wide status and the router's members file.

Both are derived (`aggregate`, `builders.router.router_members`) from what the groups' passes
wrote and saw; each is written only when it changed. The members file lists every member pod
that has an address; a restarted pod's new IP reaches the routers through it (`routerfile`
makes their kubelets refresh it at once), a new leader does not need to (routers ask the
members).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import kopf

from dvecdb_operator import kube as kube_api
from dvecdb_operator.aggregate import aggregate_status
from dvecdb_operator.builders.common import ClusterRef
from dvecdb_operator.builders.router import (
    build_router_configmap,
    members_file_version,
    router_members,
)
from dvecdb_operator.drift import contains
from dvecdb_operator.groups import GroupScope
from dvecdb_operator.monitor import ClusterMonitor
from dvecdb_operator.routerfile import nudge_routers
from dvecdb_operator.slotmap import map_from_status

log = logging.getLogger(__name__)

# How often the live ConfigMap is compared even when nothing changed (someone may edit it).
RECHECK_SECONDS = 30.0


def listed_shards(owning: int, ready: Sequence[bool]) -> int:
    """How many shards the members file lists: every shard that owns slots, and after them
    each further one (a new shard before its first move) once it has a ready member, in
    order. A router is ready only when every listed shard has a ready member: a new shard
    still starting must not take the routers out of their Service."""
    count = owning
    while count < len(ready) and ready[count]:
        count += 1
    return max(1, min(count, len(ready)) if ready else count)


def member_urls(watchers: Sequence[ClusterMonitor]) -> dict[int, list[str]]:
    """Each shard's member URLs as its last pass saw them (pods with an address)."""
    out: dict[int, list[str]] = {}
    for watcher in watchers:
        seen = watcher.last
        out[watcher.scope.shard] = (
            [] if seen is None else [m.url for m in seen.members if m.url is not None]
        )
    return out


class Publisher:
    """Writes the derived objects of one cluster; remembers what it wrote last."""

    def __init__(self, kube: kube_api.Kube) -> None:
        self.kube = kube
        self._members: str | None = None  # the members file as last applied
        self._checked = 0.0  # when the live ConfigMap was last compared

    async def publish(self, ref: ClusterRef, watchers: Sequence[ClusterMonitor]) -> None:
        """The aggregate and the members file, with the map `status.slotMap` holds.

        `specRefused` (an older operator's refusal of a new shard count) is cleared: a
        changed `spec.shards` is carried out now (`resharding`)."""
        body = await self.kube.get_cluster(ref.namespace, ref.name)
        if body.get("metadata", {}).get("deletionTimestamp"):
            return
        status = body.get("status") or {}
        groups = [GroupScope(i, ref.shards).view(status) for i in range(ref.shards)]
        slot_map = map_from_status(status, ref.shards)
        patch = aggregate_status(
            [g.statefulset for g in ref.groups], groups, slot_map=slot_map, status=status
        )
        stale = status.get("specRefused") is not None
        if stale:
            patch["specRefused"] = None
        if stale or not contains(status, patch) or len(status.get("shards") or []) != ref.shards:
            await self.kube.patch_cluster_status(ref.namespace, ref.name, patch)
        await self.publish_members(body, ref, watchers)

    async def publish_members(
        self, body: Any, ref: ClusterRef, watchers: Sequence[ClusterMonitor]
    ) -> None:
        urls = member_urls(watchers)
        if any(w.last is None for w in watchers) and self._members is not None:
            return  # a group not seen yet: keep the file as it is
        slot_map = map_from_status(body.get("status"), ref.shards)
        ready = [w.last is not None and any(m.pod_ready for m in w.last.members) for w in watchers]
        listed = ClusterRef(ref.name, ref.namespace, 0, listed_shards(slot_map.shards, ready))
        manifest = build_router_configmap(listed, router_members(listed, urls, slot_map=slot_map))
        text = json.dumps(manifest["data"], sort_keys=True)
        now = time.monotonic()
        if text == self._members and now - self._checked < RECHECK_SECONDS:
            return
        self._checked = now
        kopf.adopt(manifest, owner=dict(body))  # type: ignore[arg-type]
        live = await self.kube.get("v1", "ConfigMap", ref.namespace, ref.router)
        if live is not None and members_file_version(live.get("data")) > slot_map.version:
            # The resharder published a newer map after this pass read the status: the
            # next pass reads it (a router must never be sent back to an older map).
            self._members = None
            return
        if live is None or live.get("data") != manifest["data"]:
            await self.kube.apply(manifest)
            await nudge_routers(self.kube, ref, manifest["data"])
            log.info(
                "%s/%s: router members %s",
                ref.namespace,
                ref.name,
                {shard: len(found) for shard, found in urls.items()},
            )
        self._members = text
