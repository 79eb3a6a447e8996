"""One container of a pod: start its process, probe it, restart it per restartPolicy.

The runner owns the container's Kubernetes-visible state (``waiting``/``running``/
``terminated``, ``lastState``, ``restartCount``, ``ready``, ``started``) and calls
``on_change`` whenever that state changes, so the pod worker can publish status.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from localkube.images import ImageError
from localkube.podspec import ConfigError
from localkube.probes import probe_settings, run_probe
from localkube.volumes import VolumeNotReady

Json = dict[str, Any]

# Kubernetes starts crash-loop back-off at 10 s and caps it at 5 min; tests want a pod that
# crashed to come back quickly, so localkube uses 1 s doubling up to 30 s (reset after 60 s up).
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
BACKOFF_RESET_AFTER = 60.0
RETRY_NOT_READY = 1.0


@dataclass(frozen=True)
class Launch:
    """What to exec for one start of the container."""

    argv: list[str]
    env: dict[str, str]


Prepare = Callable[[], Awaitable[Launch]]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def should_restart(policy: str, exit_code: int, init: bool) -> bool:
    """Kubernetes' restartPolicy decision (init containers rerun only until they succeed)."""
    if init:
        return exit_code != 0 and policy != "Never"
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def exit_code_of(returncode: int) -> int:
    """A signal death as the shell reports it (137 for SIGKILL), like a container runtime."""
    return 128 - returncode if returncode < 0 else returncode


class ContainerRunner:
    def __init__(
        self,
        spec: Json,
        *,
        pod_ip: str,
        restart_policy: str,
        grace_seconds: float,
        prepare: Prepare,
        log_path: Path,
        on_change: Callable[[], None],
        session: aiohttp.ClientSession,
        init: bool = False,
    ) -> None:
        self.spec = spec
        self.name: str = spec["name"]
        self.image: str = spec.get("image", "")
        self._pod_ip = pod_ip
        self._policy = restart_policy
        self._grace = grace_seconds
        self._prepare = prepare
        self._log_path = log_path
        self._on_change = on_change
        self._session = session
        self._init = init
        self.state: Json = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: Json = {}
        self.restart_count = 0
        self.ready = False
        self.started = False
        self.done = asyncio.Event()
        self.succeeded = False
        self._proc: asyncio.subprocess.Process | None = None
        self._env: dict[str, str] = {}
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.returncode is None else None

    def _set(self, **changes: Any) -> None:
        changed = False
        for key, value in changes.items():
            if getattr(self, key) != value:
                setattr(self, key, value)
                changed = True
        if changed:
            self._on_change()

    def status(self) -> Json:
        """The ContainerStatus the API shows for this container."""
        status: Json = {
            "name": self.name,
            "image": self.image,
            "imageID": f"localkube://{self.image}",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.pid is not None:
            status["containerID"] = f"localkube://{self.pid}"
        return status

    async def run(self) -> None:
        """Start, supervise and restart until the container is done or stopped."""
        backoff = BACKOFF_INITIAL
        try:
            while not self._stopping:
                try:
                    launch = await self._prepare()
                except ImageError as err:
                    reason = (
                        "ErrImagePull"
                        if self.state.get("waiting", {}).get("reason") != "ErrImagePull"
                        else "ImagePullBackOff"
                    )
                    self._set(state={"waiting": {"reason": reason, "message": err.message}})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                except ConfigError as err:
                    self._set(
                        state={
                            "waiting": {"reason": "CreateContainerConfigError", "message": str(err)}
                        }
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                except VolumeNotReady as err:
                    self._set(
                        state={"waiting": {"reason": "ContainerCreating", "message": str(err)}}
                    )
                    await asyncio.sleep(RETRY_NOT_READY)
                    continue
                exit_code, ran_for = await self._run_once(launch)
                if self._stopping:
                    return
                if ran_for > BACKOFF_RESET_AFTER:
                    backoff = BACKOFF_INITIAL
                if not should_restart(self._policy, exit_code, self._init):
                    self.succeeded = exit_code == 0
                    return
                self._set(
                    last_state=self.state,
                    restart_count=self.restart_count + 1,
                    state={
                        "waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": f"back-off {backoff:.0f}s restarting failed container "
                            f"{self.name} (exit code {exit_code})",
                        }
                    },
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            self.done.set()
            self._on_change()

    async def _run_once(self, launch: Launch) -> tuple[int, float]:
        started_at = now()
        began = time.monotonic()
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_path.open("ab") as log:
            log.write(f"--- localkube: start {self.name} at {started_at}\n".encode())
            log.flush()
            self._env = launch.env
            self._proc = await asyncio.create_subprocess_exec(
                *launch.argv,
                env=launch.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        has_startup = "startupProbe" in self.spec
        has_readiness = "readinessProbe" in self.spec
        self._set(
            state={"running": {"startedAt": started_at}},
            started=not has_startup,
            ready=not has_startup and not has_readiness and not self._init,
        )
        probes = asyncio.create_task(self._probe_loop())
        try:
            returncode = await self._proc.wait()
        finally:
            probes.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probes
        code = exit_code_of(returncode)
        self._set(
            ready=False,
            state={
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": started_at,
                    "finishedAt": now(),
                    "containerID": f"localkube://{self._proc.pid}",
                }
            },
        )
        return code, time.monotonic() - began

    async def _probe_loop(self) -> None:
        """Startup probe first; then readiness and liveness side by side."""
        startup = self.spec.get("startupProbe")
        if startup is not None:
            passed = await self._probe_until(startup, want_success=True)
            if not passed:
                await self._kill("startup probe failed")
                return
            self._set(started=True, ready="readinessProbe" not in self.spec and not self._init)
        tasks = []
        readiness = self.spec.get("readinessProbe")
        if readiness is not None and not self._init:
            tasks.append(asyncio.create_task(self._readiness(readiness)))
        liveness = self.spec.get("livenessProbe")
        if liveness is not None and not self._init:
            tasks.append(asyncio.create_task(self._liveness(liveness)))
        if not tasks:
            return
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    async def _attempt(self, probe: Json) -> bool:
        ok, _ = await run_probe(self._session, probe, self._pod_ip, self.spec, self.pid, self._env)
        return ok

    async def _probe_until(self, probe: Json, want_success: bool) -> bool:
        delay, period, _, failures_allowed = probe_settings(probe)
        await asyncio.sleep(delay)
        failures = 0
        while True:
            if await self._attempt(probe):
                return True
            failures += 1
            if failures >= failures_allowed:
                return False
            await asyncio.sleep(period)

    async def _readiness(self, probe: Json) -> None:
        delay, period, success_needed, failures_allowed = probe_settings(probe)
        await asyncio.sleep(delay)
        successes = failures = 0
        while True:
            if await self._attempt(probe):
                successes, failures = successes + 1, 0
                if successes >= success_needed:
                    self._set(ready=True)
            else:
                successes, failures = 0, failures + 1
                if failures >= failures_allowed:
                    self._set(ready=False)
            await asyncio.sleep(period)

    async def _liveness(self, probe: Json) -> None:
        delay, period, _, failures_allowed = probe_settings(probe)
        await asyncio.sleep(delay)
        failures = 0
        while True:
            if await self._attempt(probe):
                failures = 0
            else:
                failures += 1
                if failures >= failures_allowed:
                    await self._kill("liveness probe failed")
                    return
            await asyncio.sleep(period)

    async def _kill(self, why: str) -> None:
        """SIGTERM the container's process group, SIGKILL after the grace period."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with self._log_path.open("ab") as log:
            log.write(f"--- localkube: stopping {self.name}: {why}\n".encode())
        _killpg(proc.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self._grace):
                await asyncio.shield(proc.wait())
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """Stop for good (pod deletion): no restart afterwards."""
        self._stopping = True
        await self._kill("pod is being deleted")
        if self._proc is not None and self._proc.returncode is None:
            await self._proc.wait()


def _killpg(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
