"""The one place that knows how the operator's monitoring pass is built and driven.

Kubernetes is the operator's in-memory ``FakeKube`` (pods point at the nodes' namespace
addresses); the pass is the operator's real one, ticking every ``interval`` in a task, as the
kopf daemon runs it. A restart cancels that task and builds a fresh instance: whatever the pass
kept in memory is gone, only the cluster object (its status) survives, as with a new operator
pod. When the failover pass is rebuilt, only ``_new_pass`` changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api
from dvecdb_operator.members import Members, client_factory
from tests.support.operator_fakes import FakeKube

log = logging.getLogger("faults.operator")

NAMESPACE = "ns"
NAME = "db"


# Knobs for a pass that must act within a trial of a few seconds; a pass's settings class
# takes those it declares (the old and the rebuilt pass declare different ones).
PASS_SETTINGS: dict[str, Any] = {
    "interval": 0.1,
    "catchup_timeout": 2.0,
    "catchup_poll": 0.05,
    "fenced_catchup_timeout": 1.0,
    "promote_retry_first": 0.3,
    "promote_retry_cap": 1.0,
}


def _new_pass(kube: FakeKube, members: Members) -> Callable[[], Awaitable[Any]]:
    """The operator's pass: ``ClusterMonitor.tick`` (the same name before and after issue 11)."""
    from dvecdb_operator.monitor import ClusterMonitor, MonitorSettings

    known = {f.name for f in dataclasses.fields(MonitorSettings)}
    monitor = ClusterMonitor(
        kube,
        members,
        namespace=NAMESPACE,
        name=NAME,
        settings=MonitorSettings(**{k: v for k, v in PASS_SETTINGS.items() if k in known}),
    )
    tick: Callable[[], Awaitable[Any]] = monitor.tick
    return tick


# Called with (command, member, epoch, invoked, completed, ok) for every admin call it makes.
AdminRecorder = Callable[[str, str, int, float, float, bool], None]


class _RecordingClient:
    """A node client that reports the operator's promote/follow/fence calls and their answers:
    once one is answered, the member knows that epoch (the checker holds it to that)."""

    def __init__(self, client: Any, member: str, driver: OperatorDriver) -> None:
        self._client = client
        self._member = member
        self._driver = driver

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def _told(self, command: str, epoch: int, call: Awaitable[Any]) -> Any:
        invoked, ok = time.monotonic(), False
        try:
            result = await call
            ok = True
            return result
        finally:
            recorder = self._driver.admin_recorder
            if recorder is not None:
                recorder(command, self._member, epoch, invoked, time.monotonic(), ok)

    async def promote(self, epoch: int, **options: Any) -> Any:
        return await self._told("promote", epoch, self._client.promote(epoch, **options))

    async def follow(self, leader: str, epoch: int) -> Any:
        return await self._told("follow", epoch, self._client.follow(leader, epoch))

    async def fence(self, epoch: int) -> Any:
        return await self._told("fence", epoch, self._client.fence(epoch))


class OperatorDriver:
    """FakeKube + the real pass in a task; ``restart`` loses its memory, not the status."""

    def __init__(
        self,
        *,
        pods: list[tuple[str, str, int]],
        token: str,
        detection_seconds: int = 1,
        lease_seconds: float = 0.5,
        interval: float = 0.1,
        member_timeout: float = 0.5,
    ) -> None:
        self.kube = FakeKube(
            {
                "apiVersion": c.API_VERSION,
                "kind": c.KIND,
                "metadata": {"name": NAME, "namespace": NAMESPACE},
                "spec": {
                    "replicas": len(pods),
                    "failover": {
                        "detectionSeconds": detection_seconds,
                        "leaseSeconds": lease_seconds,
                    },
                },
            }
        )
        self.kube.objects[("StatefulSet", NAME)] = {"status": {"updateRevision": "r1"}}
        for name, ip, port in pods:
            self.kube.add_pod(name, ip)
            self.kube.pods[name]["spec"] = {
                "containers": [{"name": "node", "ports": [{"name": "http", "containerPort": port}]}]
            }
            self.kube.pods[name]["status"]["phase"] = "Running"
            self.kube.pods[name]["status"]["containerStatuses"] = [
                {"name": "node", "restartCount": 0, "ready": True, "state": {"running": {}}}
            ]
        self.token = token
        self.interval = interval
        self.member_timeout = member_timeout
        self.events: list[tuple[str, str]] = []
        self.admin_recorder: AdminRecorder | None = None
        self._by_address = {ip: name for name, ip, _ in pods}
        self.errors = 0
        self.restarts = 0
        self._task: asyncio.Task[None] | None = None
        self._members: Members | None = None
        self._original_post_event: Any = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._original_post_event is None:  # Events go to a list, not to an API server
            self._original_post_event = kube_api.post_event
            kube_api.post_event = self._record_event
        make = client_factory(token=self.token, timeout=self.member_timeout)

        def recording(base_url: str) -> Any:
            member = self._by_address.get(base_url.split("//", 1)[-1].split(":", 1)[0], base_url)
            return _RecordingClient(make(base_url), member, self)

        self._members = Members(recording)
        tick = _new_pass(self.kube, self._members)
        self._task = asyncio.create_task(self._loop(tick))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._members is not None:
            with contextlib.suppress(Exception):
                await self._members.close()
            self._members = None

    async def restart(self) -> None:
        """A new operator process: cancel the pass mid-step, build a fresh one."""
        await self.stop()
        self.restarts += 1
        self.start()

    async def close(self) -> None:
        await self.stop()
        if self._original_post_event is not None:
            kube_api.post_event = self._original_post_event
            self._original_post_event = None

    async def _loop(self, tick: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the daemon logs and goes on, so does this loop
                self.errors += 1
                log.debug("pass failed: %r", exc)
            await asyncio.sleep(self.interval)

    def _record_event(self, body: Any, *, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((reason, message))

    # --- what Kubernetes would see ------------------------------------------------------------

    def pod_died(self, name: str) -> None:
        """The kubelet's view of a killed container: not ready, terminated."""
        status = self.kube.pods[name]["status"]
        status["conditions"] = [{"type": "Ready", "status": "False"}]
        status["containerStatuses"][0].update(ready=False, state={"terminated": {"exitCode": 137}})

    def pod_started(self, name: str) -> None:
        """The container restarted (restartCount + 1); Ready follows the node's probe."""
        status = self.kube.pods[name]["status"]
        container = status["containerStatuses"][0]
        container.update(
            restartCount=int(container["restartCount"]) + 1,
            ready=True,
            state={"running": {"startedAt": time.time()}},
        )
        status["conditions"] = [{"type": "Ready", "status": "True"}]

    # --- what clients see (the read-write Service selects the leader label) --------------------

    def leader_label(self) -> str | None:
        for name, role in self.kube.role_labels().items():
            if role == "leader":
                return str(name)
        return None

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.kube.status)
