"""The demo's view of a running local plane: API reads with the admin certificate, kubectl/helm.

Reads go straight to the API server (one HTTPS request, no process start), because the
failover view polls several objects every half second; changes go through the pinned
``kubectl`` and ``helm`` builds, as a user would type them.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localkube.netplan import NetPlan
from localkube.nodeconfig import node_ip
from localkube.plane import STATE_FILE, admin_get

Json = dict[str, Any]


class DemoError(RuntimeError):
    """A step of the demo failed; the message is one line for the user."""


@dataclass(frozen=True)
class Kube:
    """One plane, as recorded in its state folder by ``localkube up`` (or ``Plane.start``)."""

    state_dir: Path
    server: str
    kubeconfig: Path
    bin_dirs: tuple[Path, ...]
    dns_server: str = ""  # CoreDNS on the node: Service names from the host

    @classmethod
    def from_state(cls, state_dir: Path) -> Kube:
        state = json.loads((state_dir / STATE_FILE).read_text())
        return cls(
            state_dir=state_dir,
            server=str(state["server"]),
            kubeconfig=Path(state["kubeconfig"]),
            bin_dirs=tuple(Path(d) for d in state["bin_dirs"]),
            dns_server=node_ip(NetPlan(bridge=state["bridge"], block=state["block"])),
        )

    def env(self) -> dict[str, str]:
        """kubectl and helm against this plane, with helm's folders kept in its state."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([*(str(d) for d in self.bin_dirs), env.get("PATH", "")])
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = str(self.state_dir / "helm" / kind.lower())
        return env

    def tool(self, name: str) -> str:
        for folder in self.bin_dirs:
            if (folder / name).exists():
                return str(folder / name)
        folders = ", ".join(map(str, self.bin_dirs))
        raise DemoError(f"{name} is not in the plane's binaries ({folders})")

    def run(self, tool: str, *args: str, stdin: str | None = None, timeout: float = 300) -> str:
        """Run kubectl or helm; a failure becomes a DemoError with its last stderr line."""
        argv = [self.tool(tool), *args]
        try:
            result = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, env=self.env(), timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            raise DemoError(f"`{tool} {' '.join(args)}` did not finish in {timeout:.0f}s") from err
        if result.returncode != 0:
            lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
            raise DemoError(f"`{tool} {' '.join(args)}` failed: {lines[-1] if lines else '?'}")
        return result.stdout

    def get(self, path: str) -> Json | None:
        """GET an API path as JSON; None when it does not exist."""
        try:
            found = admin_get(self.server, self.state_dir / "pki", path)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise DemoError(f"API server answered {err.code} for {path}") from err
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise DemoError(f"API server {self.server} unreachable: {err}") from err
        return found if isinstance(found, dict) else None

    # -- the objects the demo reads ---------------------------------------------------------

    def cluster(self, namespace: str, name: str) -> Json | None:
        return self.get(f"/apis/dvecdb.io/v1alpha1/namespaces/{namespace}/dvecclusters/{name}")

    def secret_value(self, namespace: str, name: str, key: str) -> str | None:
        """One key of a Secret, decoded (what `kubectl get secret -o jsonpath` and base64 -d
        give a user)."""
        found = self.get(f"/api/v1/namespaces/{namespace}/secrets/{name}") or {}
        encoded = (found.get("data") or {}).get(key)
        return base64.b64decode(encoded).decode() if encoded else None

    def pod(self, namespace: str, name: str) -> Json | None:
        return self.get(f"/api/v1/namespaces/{namespace}/pods/{name}")

    def service_slices(self, namespace: str, service: str) -> Json:
        selector = f"kubernetes.io/service-name%3D{service}"
        path = f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
        return self.get(f"{path}?labelSelector={selector}") or {"items": []}
