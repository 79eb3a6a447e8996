"""Bring up what the cluster demo needs: the plane, the operator, a fresh demo namespace.

A plane already started by ``make cluster-up`` (or a test session) is reused; a recorded
plane whose daemons died is reported with the command that clears it, never restarted over.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from demo.kube import DemoError, Kube
from localkube import net, procs, realnode
from localkube.build import ensure_binaries
from localkube.plane import STATE_FILE, Plane, stop_recorded

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "dvecdb-operator"
DEFAULT_MANIFEST = REPO / "examples" / "minimal.yaml"
OPERATOR_NAMESPACE = "dvecdb-system"
OPERATOR_RELEASE = "dvecdb-operator"

Say = Callable[[str], None]


def recorded_plane(state_dir: Path) -> bool:
    """True when a live plane is recorded in ``state_dir``; raises if it is half dead."""
    path = state_dir / STATE_FILE
    if not path.exists():
        return False
    state = json.loads(path.read_text())
    dead = [d for d, pid in state["pids"].items() if not procs.alive(pid, state["markers"][d])]
    if dead:
        raise DemoError(
            f"a plane is recorded in {state_dir} but {', '.join(dead)} is not running; "
            "clear it with `make cluster-down` (or `.venv/bin/localkube down --force`) and retry"
        )
    return True


def ensure_plane(state_dir: Path, say: Say) -> bool:
    """Reuse or start the plane; True when this call started it."""
    if recorded_plane(state_dir):
        say(f"reusing the running local Kubernetes plane recorded in {state_dir}")
        return False
    # Before the (long, when cold) build: pods need network namespaces, so root.
    reason = net.namespaces_supported()
    if reason is not None:
        raise DemoError(f"the local plane cannot run pods here: {reason} (run `make demo` as root)")
    reason = realnode.missing_tools()
    absent = [
        i for i in sorted(set(realnode.DEFAULT_IMAGE_TAGS.values())) if not realnode.podman_has(i)
    ]
    if reason is None and absent:
        reason = f"podman has no {', '.join(absent)} (`make demo` builds them; or `make images`)"
    if reason is not None:
        raise DemoError(f"the local node cannot run the demo's pods: {reason}")
    say("building or finding the pinned Kubernetes binaries (cached after the first build)")
    binaries = ensure_binaries(progress=lambda line: say(f"  {line}"))
    say(f"starting the local Kubernetes plane in {state_dir} (etcd, API server, the node)")
    started = time.monotonic()
    Plane(binaries=binaries, state_dir=state_dir).start()
    say(f"  plane up in {time.monotonic() - started:.0f}s")
    return True


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")


def pod_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def install_operator(kube: Kube, namespace: str, say: Say) -> None:
    """`helm upgrade --install` the chart, watching only the demo namespace, and wait for it."""
    say(f"helm install {OPERATOR_RELEASE} ({CHART.relative_to(REPO)}) in {OPERATOR_NAMESPACE}")
    kube.run(
        "helm", "upgrade", "--install", OPERATOR_RELEASE, str(CHART),
        "-n", OPERATOR_NAMESPACE, "--create-namespace",
        "--set", f"watchNamespaces={{{namespace}}}",
        "--set", "operator.monitorInterval=1",
    )  # fmt: skip

    def ready() -> bool:
        pods = kube.get(f"/api/v1/namespaces/{OPERATOR_NAMESPACE}/pods") or {}
        return any(pod_ready(p) for p in pods.get("items") or [])

    wait_for(ready, 120, "the operator pod to be ready")
    say("  operator running")


def fresh_namespace(kube: Kube, namespace: str, cluster: str, say: Say) -> None:
    """An empty demo namespace (before the operator, whose peering object lives in it).

    One left by an earlier run is deleted first, with that run's operator release.
    """
    if kube.get(f"/api/v1/namespaces/{namespace}") is not None:
        say(f"removing the previous demo's namespace {namespace}")
        kube.run(
            "kubectl", "delete", "dveccluster", cluster, "-n", namespace,
            "--ignore-not-found", "--timeout=120s",
        )  # fmt: skip
        # The operator's peering object lives in this namespace: reinstall it afterwards.
        try:
            kube.run("helm", "uninstall", OPERATOR_RELEASE, "-n", OPERATOR_NAMESPACE)
        except DemoError:
            pass  # no release left from that run
        kube.run("kubectl", "delete", "namespace", namespace, "--timeout=180s")
        wait_for(
            lambda: kube.get(f"/api/v1/namespaces/{namespace}") is None, 180, "the old namespace"
        )
    kube.run("kubectl", "create", "namespace", namespace)
    wait_for(
        lambda: kube.get(f"/api/v1/namespaces/{namespace}/serviceaccounts/default"),
        60,
        f"the default service account in {namespace}",
    )


def cluster_manifest(path: Path, detection_seconds: int | None) -> tuple[str, str]:
    """The manifest text to apply and the cluster's name, with the detection bound if given."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DemoError(f"cannot read the cluster manifest {path}: {err}") from err
    if not isinstance(doc, dict) or doc.get("kind") != "DVecCluster":
        raise DemoError(f"{path} is not a DVecCluster manifest")
    if detection_seconds is not None:
        spec = doc.setdefault("spec", {})
        spec.setdefault("failover", {})["detectionSeconds"] = detection_seconds
    return yaml.safe_dump(doc, sort_keys=False), str(doc["metadata"]["name"])


def teardown(kube: Kube, namespace: str, cluster: str, stop_plane: bool, say: Say) -> None:
    """Remove what the demo set up; the plane only when this run started it."""
    if stop_plane:
        say("stopping the local plane (--teardown)")
        for item in stop_recorded(kube.state_dir):
            say(f"  stopped {item}")
        return
    say(f"removing the demo cluster, namespace {namespace} and the operator (--teardown)")
    steps = [
        ("kubectl", "delete", "dveccluster", cluster, "-n", namespace, "--ignore-not-found",
         "--timeout=120s"),
        ("kubectl", "delete", "namespace", namespace, "--ignore-not-found", "--wait=false"),
        ("helm", "uninstall", OPERATOR_RELEASE, "-n", OPERATOR_NAMESPACE),
        ("kubectl", "delete", "namespace", OPERATOR_NAMESPACE, "--ignore-not-found",
         "--wait=false"),
    ]  # fmt: skip
    for tool, *args in steps:
        try:
            kube.run(tool, *args)
        except DemoError as err:
            say(f"  {err}")
