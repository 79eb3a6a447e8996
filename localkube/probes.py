"""Readiness, liveness and startup probes, run from the host against the pod's address.

The kubelet's node is the host, so HTTP and TCP probes go over the bridge to the pod IP just
as a real kubelet's would: taking a pod's link down therefore fails its probes too. Exec
probes run inside the container's namespaces with ``nsenter``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from typing import Any

import aiohttp

Json = dict[str, Any]


def probe_port(port: int | str, container: Json) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"container has no port named {port!r}")


async def _http(
    session: aiohttp.ClientSession, spec: Json, host: str, port: int, limit: float
) -> tuple[bool, str]:
    scheme = str(spec.get("scheme", "HTTP")).lower()
    path = spec.get("path", "/") or "/"
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    url = f"{scheme}://{host}:{port}{path if path.startswith('/') else '/' + path}"
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    try:
        async with session.get(
            url,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=limit),
            ssl=insecure if scheme == "https" else True,
            allow_redirects=False,
        ) as resp:
            ok = 200 <= resp.status < 400
            return ok, f"HTTP probe {url} answered {resp.status}"
    except (TimeoutError, aiohttp.ClientError, OSError) as err:
        return False, f"HTTP probe {url} failed: {type(err).__name__}: {err}"


async def _tcp(host: str, port: int, limit: float) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(limit):
            _, writer = await asyncio.open_connection(host, port)
    except (TimeoutError, OSError) as err:
        return False, f"TCP probe {host}:{port} failed: {err}"
    writer.close()
    return True, f"TCP probe {host}:{port} connected"


async def _exec(
    command: list[str], pid: int, env: Mapping[str, str], limit: float
) -> tuple[bool, str]:
    proc = await asyncio.create_subprocess_exec(
        "nsenter",
        "-t",
        str(pid),
        "-n",
        "-m",
        "-u",
        "--",
        *command,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(limit):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return False, f"exec probe {command} timed out after {limit}s"
    text = out.decode(errors="replace").strip()[-200:]
    return proc.returncode == 0, f"exec probe exited {proc.returncode}: {text}"


async def run_probe(
    session: aiohttp.ClientSession,
    probe: Json,
    pod_ip: str,
    container: Json,
    pid: int | None,
    env: Mapping[str, str],
) -> tuple[bool, str]:
    """One probe attempt: (success, message)."""
    timeout = float(probe.get("timeoutSeconds", 1))
    try:
        if "httpGet" in probe:
            spec = probe["httpGet"]
            port = probe_port(spec["port"], container)
            return await _http(session, spec, spec.get("host") or pod_ip, port, timeout)
        if "tcpSocket" in probe:
            spec = probe["tcpSocket"]
            port = probe_port(spec["port"], container)
            return await _tcp(spec.get("host") or pod_ip, port, timeout)
        if "exec" in probe:
            if pid is None:
                return False, "exec probe: container is not running"
            return await _exec(list(probe["exec"].get("command") or []), pid, env, timeout)
    except ValueError as err:
        return False, str(err)
    return False, f"unsupported probe handler {sorted(k for k in probe if not k[0].isupper())}"


def probe_settings(probe: Json) -> tuple[float, float, int, int]:
    """(initialDelaySeconds, periodSeconds, successThreshold, failureThreshold), k8s defaults."""
    return (
        float(probe.get("initialDelaySeconds", 0)),
        float(probe.get("periodSeconds", 10)),
        int(probe.get("successThreshold", 1)),
        int(probe.get("failureThreshold", 3)),
    )
