"""The plane starts from the command line (as `make cluster-up` does) and stops leaving nothing.

Runs before the session plane exists (see conftest's ordering): it owns the bridge meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localkube import procs
from localkube.build import Binaries
from localkube.netplan import NetPlan

from .conftest import leftovers, wait_for_machine

pytestmark = pytest.mark.e2e


def localkube(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localkube", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_up_serves_kubectl_then_down_leaves_nothing(binaries: Binaries, tmp_path: Path) -> None:
    plan = NetPlan()
    wait_for_machine(plan)
    up = localkube(tmp_path, "up")
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / "state.json").read_text())
        assert "export KUBECONFIG=" in up.stdout
        env = {"KUBECONFIG": state["kubeconfig"], "PATH": "/usr/bin:/bin"}
        kubectl = str(binaries["kubectl"])
        nodes = subprocess.run(
            [kubectl, "get", "nodes", "-o", "json"], env=env, capture_output=True, text=True
        )
        assert nodes.returncode == 0, nodes.stderr
        (node,) = json.loads(nodes.stdout)["items"]
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True"
        # The API server advertises the bridge address, never loopback.
        slices = subprocess.run(
            [kubectl, "get", "endpointslices", "-n", "default", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
        )
        addresses = {
            a
            for s in json.loads(slices.stdout)["items"]
            if s["metadata"]["labels"].get("kubernetes.io/service-name") == "kubernetes"
            for e in s["endpoints"]
            for a in e["addresses"]
        }
        assert addresses == {plan.bridge_ip}
        status = localkube(tmp_path, "status")
        assert status.returncode == 0 and "NOT RUNNING" not in status.stdout, status.stdout
        pids = state["pids"]
        control = {"etcd", "kube-apiserver", "kube-controller-manager", "kubelet"}
        node = {"containerd", "kube-proxy", "kube-scheduler", "nodehelper", "coredns"}
        assert set(pids) == control | node
        # Another state dir's forced cleanup must not tear down this live plane's network
        # (other sessions run planes on the same machine; it removed every lk-* namespace).
        other = localkube(tmp_path / "other", "down", "--force")
        assert other.returncode == 1 and "belongs to the running plane" in other.stderr, other
        assert not [d for d, pid in pids.items() if not procs.alive(pid, state["markers"][d])]
        assert "lk-node" in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    finally:
        down = localkube(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    for daemon, pid in pids.items():
        assert not procs.alive(pid, state["markers"][daemon]), f"{daemon} still runs"
    assert not leftovers(plan)
    assert not (tmp_path / "state.json").exists()
    assert (tmp_path / "logs" / "kube-apiserver.log").stat().st_size > 0, "logs are kept"


def test_down_force_cleans_a_crashed_run(binaries: Binaries, tmp_path: Path) -> None:
    """A run killed hard leaves a bridge and namespaces; `down --force` removes them."""
    plan = NetPlan()
    wait_for_machine(plan)
    subprocess.run(["ip", "link", "add", plan.bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "netns", "add", "lk-crashedrun0001"], check=True)
    subprocess.run(
        ["ip", "link", "add", "lkvcrashed0001", "type", "veth", "peer", "name", "lkvcrashed0002"],
        check=True,
    )
    down = localkube(tmp_path, "down", "--force")
    assert down.returncode == 0, down.stderr
    assert "netns lk-crashedrun0001" in down.stdout
    assert not leftovers(plan)
