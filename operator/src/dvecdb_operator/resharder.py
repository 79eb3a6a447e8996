"""Resharding online, the I/O half: one cluster's resharding carried out step by step.

Each `step` reads the cluster, asks `resharding.next_step` what to do, does it and says how
long to wait before the next. It runs in its own kopf daemon (`runtime.reshard`), apart from
the monitor: a move takes minutes, and the failovers of the groups it moves between must go
on meanwhile (the mover finds each group's leader before every call). Everything it writes to
the status is the record (`status.resharding`), the map (`status.slotMap`) and, at the end,
`lastResharding`; the router's members file gets each new map at once (the monitor's
publisher derives the same file from the status on its next pass).

The slot moves themselves are the mover's (`reshard.mover.run_move`, planned by
`reshard.plan`); they are passed in, so the orchestration is tested with fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import kopf

from dvecdb_client.slots import SlotMap
from dvecdb_operator import certificates as certs
from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator import resharding as rs
from dvecdb_operator import tlsplan
from dvecdb_operator.builders.common import ClusterRef, selector_labels, shard_of_pod
from dvecdb_operator.builders.router import (
    build_router_configmap,
    router_labels,
    router_members,
)
from dvecdb_operator.monitor import node_port, pod_view
from dvecdb_operator.reshard import mover, plan
from dvecdb_operator.routerfile import nudge_routers
from dvecdb_operator.slotmap import map_from_status, slot_map_status
from dvecdb_operator.spec import InvalidSpecError, parse_spec
from dvecdb_operator.tlsplan import serving_scheme
from dvecdb_operator.tlsreconcile import TlsState

log = logging.getLogger(__name__)

# A progress report is written to the status at most this often (and at each phase change).
PROGRESS_SECONDS = 2.0
IDLE_SECONDS = 3.0
BUSY_SECONDS = 1.0
REFRESH_SECONDS = 2.0
# How long a published move waits for every ready router to follow the new map before the
# source is purged anyway (a router still on the old map reads moved ids at the source).
ROUTER_WAIT_SECONDS = 120.0
ROUTER_POLL_SECONDS = 0.5

RouterVersion = Callable[[str, ssl.SSLContext | None], Awaitable[int | None]]


async def router_version(url: str, ssl_context: ssl.SSLContext | None = None) -> int | None:
    """The slot map version a router follows (its `/v1/status`), None when it does not say.
    An https router is verified against the cluster's CA (`ssl_context`)."""
    timeout = aiohttp.ClientTimeout(total=2)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"{url}/v1/status", ssl=ssl_context or True) as resp,
        ):
            if resp.status != 200:
                return None
            doc = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    version = (doc.get("slot_map") or {}).get("version") if isinstance(doc, dict) else None
    return version if isinstance(version, int) else None


def routers_behind(versions: Mapping[str, int | None], wanted: int) -> list[str]:
    """The routers (by URL) that do not follow map `wanted` yet (or do not answer)."""
    return sorted(url for url, version in versions.items() if version is None or version < wanted)


class RunMove(Protocol):
    """`reshard.mover.run_move` as the resharder calls it (`publish` and `current` given)."""

    def __call__(
        self,
        move: rs.PlannedMove,
        groups: PodMembers,
        *,
        map_version: int,
        phase: str,
        on_progress: Callable[[Any], Awaitable[None]],
        publish: Callable[[SlotMap], Awaitable[None]],
        current: SlotMap,
    ) -> Awaitable[None]: ...


class PodMembers:
    """Each group's member URLs from its pods, for the mover, which asks for them before
    every leader lookup (a failover or a restarted pod changes them): kept fresh by
    `refresh`, which the resharder calls every `REFRESH_SECONDS` while a move runs."""

    def __init__(
        self,
        kube: kube_api.Kube,
        ref: ClusterRef,
        token: str | None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.kube = kube
        self.ref = ref
        self.token = token
        # Verifies https members against the cluster's CA (spec.tls; None: plain HTTP).
        self.ssl_context = ssl_context
        self.urls: dict[int, list[str]] = {}

    def members(self, shard: int) -> list[str]:
        return list(self.urls.get(shard, ()))

    async def refresh(self) -> None:
        pods = await self.kube.list_pods(self.ref.namespace, selector_labels(self.ref))
        urls: dict[int, list[str]] = {shard: [] for shard in range(self.ref.shards)}
        for pod in pods:
            name = pod["metadata"]["name"]
            ip = (pod.get("status") or {}).get("podIP")
            shard = shard_of_pod(self.ref, name)
            if shard is not None and ip and not pod["metadata"].get("deletionTimestamp"):
                urls[shard].append(f"{serving_scheme(pod)}://{ip}:{node_port(pod)}")
        self.urls = {shard: sorted(found) for shard, found in urls.items()}

    async def keep_fresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
            except (kube_api.ApiError, OSError, TimeoutError) as exc:
                log.warning("%s/%s: listing members: %s", self.ref.namespace, self.ref.name, exc)


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def progress_fields(progress: Any) -> tuple[str, int]:
    """The mover's `Progress` as (phase, items copied so far in this move)."""
    phase = str(getattr(progress, "phase", "") or "")
    items = getattr(progress, "items_copied", 0)
    return phase, int(items) if isinstance(items, int) else 0


class Resharder:
    """One cluster's resharding. `plan`: the moves from a map to a shard count;
    `run_move`: the mover; `token`: reads the cluster token; `clock`: wall seconds."""

    def __init__(
        self,
        kube: kube_api.Kube,
        namespace: str,
        name: str,
        *,
        plan: rs.Planner,
        run_move: RunMove,
        token: Callable[[Mapping[str, Any]], Awaitable[str | None]],
        clock: Callable[[], float] = time.time,
        router_version: RouterVersion = router_version,
        router_wait: float = ROUTER_WAIT_SECONDS,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.plan = plan
        self.run_move = run_move
        self.token = token
        self.clock = clock
        self.router_version = router_version
        self.router_wait = router_wait
        self._progress_written = 0.0

    async def _status(self) -> tuple[dict[str, Any], dict[str, Any]]:
        body = await self.kube.get_cluster(self.namespace, self.name)
        return body, dict(body.get("status") or {})

    async def _write(self, patch: Mapping[str, Any]) -> None:
        await self.kube.patch_cluster_status(self.namespace, self.name, patch)

    async def step(self) -> float:
        """One decision and its action; the seconds to wait before the next."""
        body, status = await self._status()
        if body.get("metadata", {}).get("deletionTimestamp"):
            return IDLE_SECONDS
        try:
            spec_shards = parse_spec(body.get("spec")).shards
        except InvalidSpecError:
            return IDLE_SECONDS  # the monitor reports it; nothing moves meanwhile
        step = rs.next_step(rs.Inputs(spec_shards, status, self.clock()), self.plan)
        if isinstance(step, rs.Wait | rs.Advance) and step.record.from_ == 1:
            await self._label_shard_zero()
        if isinstance(step, rs.Idle):
            return IDLE_SECONDS
        if isinstance(step, rs.Wait):
            log.info("%s/%s: resharding: %s", self.namespace, self.name, step.reason)
            return max(BUSY_SECONDS, min(step.seconds, 10.0))
        if isinstance(step, rs.Start):
            record = step.record
            await self._write({"resharding": record.to_status()})
            kube_api.post_event(
                body,
                reason="ReshardingStarted",
                message=f"shards {record.from_} -> {record.to}: {len(record.moves)} moves of "
                f"{record.slots_total} slots",
            )
            return 0.0
        if isinstance(step, rs.Advance):
            await self._write({"resharding": step.record.to_status()})
            log.info("%s/%s: resharding %s: %s", self.namespace, self.name, step.record.phase,
                     step.reason)  # fmt: skip
            return BUSY_SECONDS
        if isinstance(step, rs.RunMove):
            await self._move(body, status, step)
            return 0.0
        if isinstance(step, rs.RemoveShards):
            if await self._remove(body, step):
                await self._finish(body, step.record)
                return 0.0
            return BUSY_SECONDS * 2
        if isinstance(step, rs.Finish):
            await self._finish(body, step.record)
            return 0.0
        return IDLE_SECONDS

    async def _label_shard_zero(self) -> None:
        """A cluster growing from one shard: its members get the shard label now, so shard
        0's Services (which select it from now on) keep their endpoints until the pods
        restart with it from the template (`reconcile.keep_selector`)."""
        ref = ClusterRef(self.name, self.namespace, 0, 2)
        for pod in await self.kube.list_pods(self.namespace, selector_labels(ref)):
            name = pod["metadata"]["name"]
            labels = pod["metadata"].get("labels") or {}
            if ref.owns_pod(name) and labels.get(c.LABEL_SHARD) != "0":
                await self.kube.patch_pod_labels(self.namespace, name, {c.LABEL_SHARD: "0"})

    def _ref(self, record: rs.Record) -> ClusterRef:
        return ClusterRef(self.name, self.namespace, 0, max(record.from_, record.to))

    async def _move(
        self, body: Mapping[str, Any], status: Mapping[str, Any], step: rs.RunMove
    ) -> None:
        record = step.record
        current = map_from_status(status, max(record.from_, record.to))
        ref = self._ref(record)
        groups = PodMembers(self.kube, ref, await self.token(body), await self._ca(status))
        await groups.refresh()
        number = f"{record.index + 1}/{len(record.moves)}"
        state = {"record": record}
        if step.phase == rs.MOVE_COPY and record.attempts == 0:
            kube_api.post_event(
                body, reason="ReshardingMove", message=f"move {number}: {step.move.label()}"
            )

        async def on_progress(progress: Any) -> None:
            phase, items = progress_fields(progress)
            before = state["record"]
            after = rs.progressed(before, phase, items)
            state["record"] = after
            now = time.monotonic()
            if after.move_phase != before.move_phase or now - self._progress_written >= (
                PROGRESS_SECONDS
            ):
                self._progress_written = now
                await self._write({"resharding": after.to_status()})

        async def publish(new_map: SlotMap) -> None:
            expected = rs.apply_move(current, step.move)
            if new_map.owners != expected.owners:
                log.warning(
                    "%s/%s: move %s: the mover's map differs from the plan's (published)",
                    self.namespace,
                    self.name,
                    number,
                )
            done = rs.published(state["record"], expected)
            # One write: the map and the record saying it is out (never copy again).
            await self._write(
                {"slotMap": slot_map_status(expected), "resharding": done.to_status()}
            )
            state["record"] = done
            await self._publish_members(body, ref, expected, groups)
            kube_api.post_event(
                body,
                reason="ReshardingPublished",
                message=f"move {number}: slot map version {expected.version} published",
            )
            asked_at = time.monotonic()
            behind = await self._routers_follow(ref, expected.version, groups.ssl_context)
            if not behind:
                # How long the routers' kubelets took to refresh the map (the pod annotation
                # asks them to at once; otherwise up to their sync period).
                kube_api.post_event(
                    body,
                    reason="RoutersFollowed",
                    message=f"move {number}: every ready router on map version "
                    f"{expected.version} {time.monotonic() - asked_at:.1f}s after the publish",
                )
            if behind:
                kube_api.post_event(
                    body,
                    reason="RoutersBehind",
                    message=f"move {number}: after {self.router_wait:g}s {', '.join(behind)} "
                    f"still not on map version {expected.version}; purging the source anyway",
                    warning=True,
                )

        refresher = asyncio.create_task(groups.keep_fresh())
        try:
            await self.run_move(
                step.move,
                groups,
                map_version=step.map_version,
                phase=step.phase,
                on_progress=on_progress,
                publish=publish,
                current=current,
            )
        except Exception as exc:
            again = rs.failed(state["record"], describe(exc), self.clock())
            log.warning("%s/%s: resharding move %s failed (attempt %d): %s", self.namespace,
                        self.name, number, again.attempts, again.last_error)  # fmt: skip
            await self._write({"resharding": again.to_status()})
            kube_api.post_event(
                body,
                reason="ReshardingMoveFailed",
                message=f"move {number} (attempt {again.attempts}): {again.last_error}; "
                f"retrying at {again.retry_at}",
                warning=True,
            )
            return
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        done = rs.moved(state["record"], self.clock())
        await self._write({"resharding": done.to_status()})
        kube_api.post_event(
            body,
            reason="ReshardingMoved",
            message=f"move {number} done: {step.move.label()}; "
            f"{done.slots_moved}/{done.slots_total} slots moved",
        )

    async def _publish_members(
        self, body: Mapping[str, Any], ref: ClusterRef, slot_map: SlotMap, groups: PodMembers
    ) -> None:
        """The router's file with the new map: the shards the live file lists and at least
        every owner, with their members as the pods are now."""
        live = await self.kube.get("v1", "ConfigMap", self.namespace, ref.router)
        text = ((live or {}).get("data") or {}).get(c.ROUTER_CONFIG_KEY)
        try:
            listed = len(json.loads(text)["shards"]) if isinstance(text, str) else 0
        except (ValueError, KeyError, TypeError):
            listed = 0
        count = min(ref.shards, max(listed, slot_map.shards))
        out = ClusterRef(ref.name, ref.namespace, 0, count)
        urls = {shard: groups.members(shard) for shard in range(count)}
        manifest = build_router_configmap(out, router_members(out, urls, slot_map=slot_map))
        kopf.adopt(manifest, owner=dict(body))  # type: ignore[arg-type]
        await self.kube.apply(manifest)
        await nudge_routers(self.kube, ref, manifest["data"])

    async def _ca(self, status: Mapping[str, Any]) -> ssl.SSLContext | None:
        """The cluster's CA as a client context (`ca.crt` of the Secret `status.tls` names),
        None while the cluster serves plain HTTP or the Secret is not readable yet."""
        name = (status.get("tls") or {}).get("secretName")
        if not name:
            return None
        secret = await self.kube.get("v1", "Secret", self.namespace, str(name))
        ca = tlsplan.decode_data(secret).get(certs.CA_CERT_KEY)
        try:
            return TlsState(ca_pem=ca).client_context()
        except (ValueError, ssl.SSLError) as exc:
            log.warning("%s/%s: the CA in %s: %s", self.namespace, self.name, name, exc)
            return None

    async def _routers_follow(
        self, ref: ClusterRef, version: int, ssl_context: ssl.SSLContext | None
    ) -> list[str]:
        """Wait (bounded) until every ready router follows map `version`: the source is
        purged next, and a router on the older map would look for moved ids there. Returns
        the routers still behind when the wait ran out."""
        deadline = time.monotonic() + self.router_wait
        while True:
            pods = await self.kube.list_pods(self.namespace, router_labels(ref))
            urls = [
                f"{serving_scheme(pod)}://{pod['status']['podIP']}:{node_port(pod)}"
                for pod in pods
                if (pod["metadata"].get("labels") or {}).get(c.LABEL_ROUTER) == self.name
                and (pod.get("status") or {}).get("podIP")
                and not pod["metadata"].get("deletionTimestamp")
                and pod_view(pod).ready
            ]
            asked = await asyncio.gather(*(self.router_version(u, ssl_context) for u in urls))
            versions = dict(zip(urls, asked, strict=True))
            behind = routers_behind(versions, version)
            if not behind or time.monotonic() >= deadline:
                return behind
            await asyncio.sleep(ROUTER_POLL_SECONDS)

    async def _remove(self, body: Mapping[str, Any], step: rs.RemoveShards) -> bool:
        """Delete the emptied shards' objects (their claims follow the StatefulSet's retention
        policy, `storage.reclaimPolicy`); True once none is left."""
        uid = body["metadata"].get("uid")
        left = False
        for shard in step.shards:
            for api_version, kind, name in rs.shard_objects(self.name, shard):
                live = await self.kube.get(api_version, kind, self.namespace, name)
                if live is None:
                    continue
                owners = live.get("metadata", {}).get("ownerReferences") or []
                if not any(o.get("uid") == uid for o in owners):
                    continue  # not this cluster's
                left = True
                if live.get("metadata", {}).get("deletionTimestamp"):
                    continue
                path = kube_api.object_path(api_version, kind, self.namespace, name)
                await self.kube.request("DELETE", path)
                kube_api.post_event(
                    body, reason="ShardRemoved", message=f"shard {shard}: deleted {kind}/{name}"
                )
        return not left

    async def _finish(self, body: Mapping[str, Any], record: rs.Record) -> None:
        patch: dict[str, Any] = {
            "resharding": None,
            "lastResharding": rs.finished_status(record, self.clock()),
        }
        if record.to < record.from_:
            patch.update(rs.removed_groups_patch(record))
        await self._write(patch)
        last = patch["lastResharding"]
        kube_api.post_event(
            body,
            reason="ReshardingFinished",
            message=f"shards {record.from_} -> {record.to} in {last['seconds']}s: "
            f"{record.slots_moved} slots, {record.items_copied} items copied",
        )


async def run(resharder: Resharder, stopped: Any) -> None:
    """Steps until `stopped`; a failed read or write is logged and tried again."""
    while not stopped:
        try:
            wait = await resharder.step()
        except kube_api.NotFoundError:
            return
        except (kube_api.ApiError, OSError, TimeoutError) as exc:
            log.warning("resharding %s/%s: %s", resharder.namespace, resharder.name, exc)
            wait = IDLE_SECONDS
        await stopped.wait(wait)


def contract_parts() -> tuple[rs.Planner, RunMove]:
    """The planner and the mover of `reshard.plan` and `reshard.mover`, adapted to the
    record's moves (`PlannedMove`) and the pods' member lists."""

    def planner(current: SlotMap, shards: int) -> list[rs.PlannedMove]:
        target = plan.target_map(current, shards)
        return [rs.PlannedMove(m.source, m.target, m.ranges) for m in plan.moves(current, target)]

    async def run_move(
        move: rs.PlannedMove,
        groups: PodMembers,
        *,
        map_version: int,
        phase: str,
        on_progress: Callable[[Any], Awaitable[None]],
        publish: Callable[[SlotMap], Awaitable[None]],
        current: SlotMap,
    ) -> None:
        await mover.run_move(
            plan.Move(move.source, move.target, move.ranges),
            mover.GroupsAccess(
                members=groups.members, token=groups.token, ssl_context=groups.ssl_context
            ),
            map_version=map_version,
            phase=phase,
            on_progress=on_progress,
            publish=publish,
            current=current,
        )

    return planner, run_move
