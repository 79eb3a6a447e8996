"""The life of one pod on the process kubelet: network, volumes, containers, status, deletion.

A worker exists per pod UID. It gives the pod a network namespace and address, sets up its
volumes, runs init containers then containers (``ContainerRunner``), publishes status when
anything changes, and on deletion stops the processes, removes the namespace and finally
deletes the pod object (grace 0), as the real kubelet does once containers are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from localkube import launch, net, podspec, podstatus, volumes
from localkube.container import ContainerRunner, Launch, now
from localkube.images import ImageError, entrypoint, resolve_program, search_path, venv_bin
from localkube.kubeclient import ApiError, KubeClient
from localkube.netplan import NetPlan, allocate_ip, netns_name

Json = dict[str, Any]
log = logging.getLogger("localkube.kubelet")

MAX_GRACE_SECONDS = 30.0
# How often a running pod's Secret and ConfigMap volumes are brought up to date. The real
# kubelet does it on its periodic pod sync (about a minute); faster here so tests of key
# rotation do not wait that long.
VOLUME_REFRESH_SECONDS = 2.0
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class NodeContext:
    """What every pod worker shares: API client, network plan, folders, image table."""

    client: KubeClient
    session: aiohttp.ClientSession
    plan: NetPlan
    node_name: str
    state_dir: Path
    images: dict[str, str]
    api_port: int
    allocatable: dict[str, str]
    ip_tool: str
    unshare_tool: str
    addresses: dict[str, str] = field(default_factory=dict)  # pod uid -> ip

    def take_ip(self, uid: str) -> str:
        if uid not in self.addresses:
            self.addresses[uid] = allocate_ip(self.plan, set(self.addresses.values()))
        return self.addresses[uid]

    def release_ip(self, uid: str) -> None:
        self.addresses.pop(uid, None)


def pod_path(pod: Json) -> str:
    meta = pod["metadata"]
    return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"


def grace_seconds(pod: Json) -> float:
    meta, spec = pod["metadata"], pod["spec"]
    value = meta.get("deletionGracePeriodSeconds")
    if value is None:
        value = spec.get("terminationGracePeriodSeconds", 30)
    return min(float(value), MAX_GRACE_SECONDS)


class PodWorker:
    def __init__(self, ctx: NodeContext, pod: Json) -> None:
        self.ctx = ctx
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.key = f"{meta['namespace']}/{meta['name']}"
        self.dir = ctx.state_dir / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.ip: str | None = None
        self.network_ready = False
        self.init_done = False
        self.failed: str | None = None
        self.init_runners: list[ContainerRunner] = []
        self.runners: list[ContainerRunner] = []
        self.volumes: dict[str, Path] = {}
        self.start_time = now()
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._deleted_in_api = False
        self._last_published: Json | None = None
        self._events_sent: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    # -- control from the kubelet loop ------------------------------------------------------

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"pod {self.key}")

    def update(self, pod: Json) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self._stop.set()

    def vanished(self) -> None:
        """The pod object is gone from the API (force-deleted): stop, skip the final delete."""
        self._deleted_in_api = True
        self._stop.set()

    def shutdown(self) -> None:
        """The kubelet is stopping: end the processes but leave the pod object alone."""
        self._deleted_in_api = True
        self._stop.set()

    def changed(self) -> None:
        self._dirty.set()

    # -- the pod's life ---------------------------------------------------------------------

    async def run(self) -> None:
        publisher = asyncio.create_task(self._publish_loop())
        try:
            await self._setup_and_run()
        except Exception as err:  # the worker must always clean up and say why
            log.exception("pod %s failed", self.key)
            self.failed = f"localkube could not run this pod: {err}"
            self.changed()
            await self._stop.wait()
        finally:
            await self._teardown()
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
            await self._finalise()

    async def _setup_and_run(self) -> None:
        spec = self.pod["spec"]
        self.ip = self.ctx.take_ip(self.uid)
        await asyncio.to_thread(net.create_pod_network, self.ctx.plan, self.uid, self.ip)
        self.network_ready = True
        self.changed()
        policy = spec.get("restartPolicy", "Always")
        self.init_runners = [
            self._runner(c, policy, init=True) for c in spec.get("initContainers") or []
        ]
        self.runners = [self._runner(c, policy, init=False) for c in spec.get("containers") or []]
        self.changed()
        if not await self._until_stopped(self._prepare_volumes()):
            return
        for runner in self.init_runners:
            if not await self._until_stopped(runner.run()):
                return
            if not runner.succeeded:
                self.failed = f"init container {runner.name} failed"
                self.changed()
                await self._stop.wait()
                return
        self.init_done = True
        self.changed()
        tasks = [asyncio.create_task(r.run(), name=f"{self.key}/{r.name}") for r in self.runners]
        tasks.append(asyncio.create_task(self._refresh_volumes(), name=f"{self.key} volumes"))
        # Containers restart on their own; even a finished pod stays until it is deleted.
        await self._stop.wait()
        await asyncio.gather(*(r.stop() for r in self.runners))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _until_stopped(self, work: Coroutine[Any, Any, None]) -> bool:
        """Run ``work`` unless deletion comes first; True when it finished."""
        task = asyncio.ensure_future(work)
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if task.done():
            task.result()
            return True
        for runner in self.init_runners:
            await runner.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False

    async def _prepare_volumes(self) -> None:
        while True:
            try:
                objects = await self._objects()
                self.volumes = await volumes.prepare(self.ctx.client, self.pod, self.dir, objects)
                return
            except volumes.VolumeNotReady as err:
                self._waiting_all("ContainerCreating", str(err))
            except podspec.ConfigError as err:
                self._waiting_all("CreateContainerConfigError", str(err))
                await self._event("FailedMount", str(err), once=f"mount:{err}")
            except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                self._waiting_all("ContainerCreating", f"API server: {err}")
            await asyncio.sleep(1.0)

    async def _refresh_volumes(self) -> None:
        """Edited Secrets and ConfigMaps reach the running containers' mounted files."""
        while True:
            await asyncio.sleep(VOLUME_REFRESH_SECONDS)
            try:
                objects = await self._objects()
                changed = await asyncio.to_thread(volumes.refresh, self.pod, self.volumes, objects)
            except (ApiError, aiohttp.ClientError, TimeoutError, OSError) as err:
                log.warning("refreshing the volumes of %s: %s", self.key, err)
                continue
            if changed:
                log.info("pod %s: updated volumes %s", self.key, ", ".join(changed))

    def _waiting_all(self, reason: str, message: str) -> None:
        for runner in [*self.init_runners, *self.runners]:
            runner.state = {"waiting": {"reason": reason, "message": message}}
        self.changed()

    async def _objects(self) -> dict[tuple[str, str], Json | None]:
        namespace = self.pod["metadata"]["namespace"]
        objects: dict[tuple[str, str], Json | None] = {}
        for kind, name in podspec.referenced_objects(self.pod):
            plural = "secrets" if kind == "Secret" else "configmaps"
            obj = await self.ctx.client.get_or_none(
                f"/api/v1/namespaces/{namespace}/{plural}/{name}"
            )
            if obj is not None:
                obj["kind"] = kind
            objects[(kind, name)] = obj
        return objects

    def _runner(self, spec: Json, policy: str, init: bool) -> ContainerRunner:
        async def prepare() -> Launch:
            try:
                return await self._launch(spec)
            except (ApiError, aiohttp.ClientError, TimeoutError) as err:
                # Reading the pod's Secrets/ConfigMaps failed for now: retry, as the kubelet does.
                raise volumes.VolumeNotReady(f"API server: {err}") from err

        return ContainerRunner(
            spec,
            pod_ip=self.ip or "",
            restart_policy=policy,
            grace_seconds=grace_seconds(self.pod),
            prepare=prepare,
            log_path=self.dir / f"{spec['name']}.log",
            on_change=self.changed,
            session=self.ctx.session,
            init=init,
        )

    def base_env(self) -> dict[str, str]:
        """What every container gets before its own env: PATH, HOME, hostname, API address."""
        host, port = self.ctx.plan.bridge_ip, str(self.ctx.api_port)
        return {
            "PATH": f"{venv_bin()}:{HOST_PATH}",  # the "image" has the project installed
            "HOME": "/root",
            "HOSTNAME": self.hostname,
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP": f"tcp://{host}:{port}",
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": port,
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }

    @property
    def hostname(self) -> str:
        return str(self.pod["spec"].get("hostname") or self.pod["metadata"]["name"])[:63]

    async def _launch(self, spec: Json) -> Launch:
        image = spec.get("image", "")
        try:
            program = entrypoint(image, self.ctx.images)
        except ImageError as err:
            await self._event("Failed", err.message, once=f"image:{spec['name']}")
            raise
        pod = json.loads(json.dumps(self.pod))
        pod.setdefault("status", {}).update(
            podIP=self.ip,
            podIPs=[{"ip": self.ip}],
            hostIP=self.ctx.plan.bridge_ip,
            hostIPs=[{"ip": self.ctx.plan.bridge_ip}],
        )
        env = podspec.container_env(
            pod, spec, await self._objects(), self.base_env(), self.ctx.allocatable
        )
        args = podspec.argv(spec, [str(program)], env)
        resolved = resolve_program(args[0], search_path())
        if resolved is None:
            raise podspec.ConfigError(f"executable {args[0]!r} not found in the venv or on PATH")
        args[0] = str(resolved)
        mounts = volumes.mounts(spec, self.volumes)
        for mount in mounts:
            volumes.ensure_mountpoint(mount, self.ctx.state_dir / volumes.MOUNTPOINT_LEDGER)
        command = launch.container_command(
            netns_name(self.uid),
            args,
            mounts,
            self.hostname,
            spec.get("workingDir"),
            ip=self.ctx.ip_tool,
            unshare=self.ctx.unshare_tool,
        )
        return Launch(argv=command, env=env)

    async def _event(self, reason: str, message: str, once: str | None = None) -> None:
        """A Warning event on the pod, so `kubectl describe pod` says what went wrong."""
        if once is not None:
            if once in self._events_sent:
                return
            self._events_sent.add(once)
        meta = self.pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": "localkube-kubelet", "host": self.ctx.node_name},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
        }
        with contextlib.suppress(ApiError, aiohttp.ClientError):
            await self.ctx.client.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)

    # -- status -----------------------------------------------------------------------------

    def facts(self) -> podstatus.PodFacts:
        return podstatus.PodFacts(
            restart_policy=self.pod["spec"].get("restartPolicy", "Always"),
            pod_ip=self.ip if self.network_ready else None,
            host_ip=self.ctx.plan.bridge_ip,
            start_time=self.start_time,
            network_ready=self.network_ready,
            init_done=self.init_done,
            init_statuses=[r.status() for r in self.init_runners],
            statuses=[r.status() for r in self.runners],
            failed_message=self.failed,
        )

    async def _publish_loop(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(0.1)  # coalesce bursts of changes into one write
            self._dirty.clear()
            await self.publish()

    async def publish(self) -> None:
        status = podstatus.pod_status(self.facts(), now(), self.pod.get("status"))
        shape = podstatus.comparable(status)
        if shape == self._last_published or self._deleted_in_api:
            return
        try:
            updated = await self.ctx.client.merge_patch(
                f"{pod_path(self.pod)}/status", {"status": status}
            )
        except ApiError as err:
            if err.status == 404:
                return
            log.warning("status of %s: %s", self.key, err)
            self._dirty.set()
            return
        except (aiohttp.ClientError, TimeoutError) as err:
            log.warning("status of %s: %s", self.key, err)
            self._dirty.set()
            return
        if updated.get("metadata", {}).get("uid") == self.uid:
            self.pod["status"] = updated.get("status", {})
        self._last_published = shape

    # -- the end ----------------------------------------------------------------------------

    async def _teardown(self) -> None:
        for runner in [*self.init_runners, *self.runners]:
            with contextlib.suppress(Exception):
                await runner.stop()
        await asyncio.to_thread(net.delete_pod_network, self.uid)
        self.ctx.release_ip(self.uid)
        await asyncio.to_thread(volumes.remove_pod_dir, self.dir)

    async def _finalise(self) -> None:
        """Processes and namespace are gone: now the API object may go (grace 0, this UID)."""
        if self._deleted_in_api:
            return
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            await self.ctx.client.delete(pod_path(self.pod), body)
        except ApiError as err:
            if err.status not in (404, 409):
                log.warning("final delete of %s: %s", self.key, err)
        except aiohttp.ClientError as err:
            log.warning("final delete of %s: %s", self.key, err)
