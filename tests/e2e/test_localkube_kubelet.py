"""The node's kubelet: env, volumes, service-account access, refusals, restarts, probes."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import urllib.request
from typing import Any

import pytest

from localkube.plane import Plane

from .conftest import MANIFESTS, Kubectl, wait_until

pytestmark = pytest.mark.e2e


def pod_ready(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any] | None:
    pod = kubectl.get("pod", name, namespace)
    conditions = {
        c["type"]: c["status"] for c in (pod or {}).get("status", {}).get("conditions", [])
    }
    return pod if conditions.get("Ready") == "True" else None


def test_pod_gets_env_volumes_and_service_account(
    kubectl: Kubectl, namespace: str, plane: Plane
) -> None:
    kubectl.apply(MANIFESTS / "kubelet-features.yaml", namespace)
    pod = wait_until(lambda: pod_ready(kubectl, "features", namespace), 90, "pod features Ready")
    ip = pod["status"]["podIP"]
    assert ipaddress.ip_address(ip) in plane.plan.pod_subnet
    assert pod["spec"]["nodeName"] == plane.node_name
    with urllib.request.urlopen(f"http://{ip}:8080/report.json", timeout=5) as resp:
        report = json.load(resp)
    assert report["env"] == {
        "LITERAL": "plain",
        "EXPANDED": "plain-expanded",
        "PASSWORD": "s3cret",
        "MODE": "fast",
        "CM_mode": "fast",
        "POD_NAME": "features",
        "POD_IP": ip,
        "NODE": plane.node_name,
    }
    assert report["hostname"] == "features"
    assert report["secret_file"] == "s3cret"
    assert report["config_file"] == "a=1\n"
    assert 'app="features"' in report["labels"] and 'tier="e2e"' in report["labels"]
    assert report["namespace_file"] == namespace
    assert report["service_account_user"] == f"system:serviceaccount:{namespace}:default"
    assert report["cwd"] == "/scratch"


def test_unknown_image_is_refused_clearly(kubectl: Kubectl, namespace: str, plane: Plane) -> None:
    kubectl.run("run", "web", "-n", namespace, "--image=nginx:1.27", "--restart=Never")

    def refused() -> dict[str, Any] | None:
        pod = kubectl.get("pod", "web", namespace) or {}
        for status in pod.get("status", {}).get("containerStatuses", []):
            waiting = status["state"].get("waiting") or {}
            if waiting.get("reason") in ("ErrImagePull", "ImagePullBackOff"):
                return dict(waiting)
        return None

    waiting = wait_until(refused, 60, "the image to be refused")
    # The node tries the registry (unreachable here) and says so.
    reason = "failed to pull"
    assert "nginx:1.27" in waiting["message"] and reason in waiting["message"]
    assert kubectl.get("pod", "web", namespace)["status"]["phase"] == "Pending"
    events = kubectl.json("get", "events", "-n", namespace, "--field-selector", "reason=Failed")
    assert any(reason in e["message"] for e in events["items"])


def _container_status(kubectl: Kubectl, name: str, namespace: str) -> dict[str, Any]:
    pod = kubectl.get("pod", name, namespace) or {}
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return dict(statuses[0])


def test_restart_policy_and_exit_codes(kubectl: Kubectl, namespace: str, plane: Plane) -> None:
    python = "--image=localkube-test/python:1"
    kubectl.run(
        "run",
        "crasher",
        "-n",
        namespace,
        python,
        "--restart=Always",
        "--command",
        "--",
        "python3",
        "-c",
        "raise SystemExit(3)",
    )
    kubectl.run(
        "run",
        "oneshot",
        "-n",
        namespace,
        python,
        "--restart=Never",
        "--command",
        "--",
        "python3",
        "-c",
        "print('done')",
    )
    status = wait_until(
        lambda: (
            (s := _container_status(kubectl, "crasher", namespace)).get("restartCount", 0) >= 2
            and s
        ),
        60,
        "crasher to be restarted twice",
    )
    assert status["lastState"]["terminated"]["exitCode"] == 3
    wait_until(
        lambda: (
            (kubectl.get("pod", "oneshot", namespace) or {}).get("status", {}).get("phase")
            == "Succeeded"
        ),
        60,
        "oneshot to succeed",
    )
    final = _container_status(kubectl, "oneshot", namespace)
    assert final["state"]["terminated"]["exitCode"] == 0 and final["restartCount"] == 0
    # Container output is kept per pod (there is no kubelet API for `kubectl logs`).
    logs = subprocess.run(
        [
            sys.executable,
            "-m",
            "localkube",
            "--state-dir",
            str(plane.state_dir),
            "logs",
            f"{namespace}/oneshot",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert logs.returncode == 0 and "done" in logs.stdout.splitlines(), logs.stderr


def test_failing_liveness_probe_restarts_the_container(
    kubectl: Kubectl, namespace: str, plane: Plane
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unhealthy"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "localkube-test/python:1",
                    "command": ["python3", "-m", "http.server", "8080"],
                    "livenessProbe": {
                        "httpGet": {"path": "/", "port": 9999},
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                }
            ],
            "terminationGracePeriodSeconds": 2,
        },
    }
    kubectl.run("create", "-n", namespace, "-f", "-", stdin=json.dumps(pod))
    status = wait_until(
        lambda: (
            (s := _container_status(kubectl, "unhealthy", namespace)).get("restartCount", 0) >= 1
            and s
        ),
        60,
        "the liveness probe to restart the container",
    )
    # In a container python is PID 1, which the kernel gives no default action for SIGTERM,
    # so it lives until the grace period's SIGKILL (137), as on any node (a host process
    # would end at the SIGTERM with 143).
    assert status["lastState"]["terminated"]["exitCode"] == 137
