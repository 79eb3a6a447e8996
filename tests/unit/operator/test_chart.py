"""The Helm chart renders (with every optional part on and off) into manifests that validate
against the Kubernetes schemas, with RBAC covering every call the operator makes."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from dvecdb_operator import cli

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "dvecdb-operator"


def find_helm() -> str | None:
    """$HELM, helm on PATH, in $KUBEBUILDER_ASSETS, else the one localkube builds."""
    found = os.environ.get("HELM") or shutil.which("helm")
    if found:
        return found
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and os.access(os.path.join(assets, "helm"), os.X_OK):
        return os.path.join(assets, "helm")
    try:
        from localkube.build import default_cache_root
    except ImportError:
        return None
    hits = sorted(glob.glob(str(default_cache_root() / "*" / "bin" / "helm")))
    return hits[-1] if hits else None


HELM = find_helm()
pytest_plan = pytest.mark.skipif(
    HELM is None, reason="helm not found (on PATH or in localkube's cache: `make cluster-up`)"
)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with its cache/config/data homes in a throwaway folder."""
    assert HELM is not None
    with tempfile.TemporaryDirectory(prefix="helm-home-") as home:
        env = dict(os.environ)
        for kind in ("CACHE", "CONFIG", "DATA"):
            env[f"HELM_{kind}_HOME"] = os.path.join(home, kind.lower())
        return subprocess.run(
            [HELM, *args], capture_output=True, text=True, timeout=120, check=False, env=env
        )


def render(*sets: str) -> list[dict[str, Any]]:
    args = ["template", "dvecdb", str(CHART), "--namespace", "dvecdb-system"]
    for item in sets:
        args += ["--set", item]
    done = helm(*args)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


@pytest_plan
def test_helm_lint_passes() -> None:
    assert HELM is not None
    done = subprocess.run(
        [HELM, "lint", str(CHART), "--strict"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest_plan
def test_default_render_validates() -> None:
    docs = render()
    kinds = by_kind(docs)
    assert set(kinds) == {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "ClusterKopfPeering",
    }
    for doc in docs:
        if doc["kind"] != "ClusterKopfPeering":
            kubernetes_validate.validate(doc, "1.31", strict=True)
    args = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args and "--peering=dvecdb-operator" in args
    # The chart creates the peering: the operator must not race it (helm: "already exists").
    assert "--no-create-peering" in args
    assert "--log-format=text" in args and "--max-lag-seq=100" in args
    # Every argument the chart passes is one the operator takes.
    cli.build_parser().parse_args(args)


@pytest_plan
def test_the_operator_knows_its_namespace_and_labels_for_the_network_policy() -> None:
    deployment = by_kind(render())["Deployment"][0]
    pod = deployment["spec"]["template"]
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    labels = cli.parse_labels(env["DVECDB_OPERATOR_POD_LABELS"]["value"])
    assert labels == pod["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"]


@pytest_plan
def test_json_logs_by_value() -> None:
    args = by_kind(render("operator.logFormat=json"))["Deployment"][0]["spec"]["template"]
    assert "--log-format=json" in args["spec"]["containers"][0]["args"]


@pytest_plan
def test_namespaced_ha_render_with_monitoring() -> None:
    docs = render(
        "replicaCount=2",
        "watchNamespaces={a,b}",
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.grafanaDashboard.enabled=true",
    )
    kinds = by_kind(docs)
    assert kinds["Deployment"][0]["spec"]["replicas"] == 2
    args = kinds["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=a" in args and "--namespace=b" in args
    assert sorted(p["metadata"]["namespace"] for p in kinds["KopfPeering"]) == ["a", "b"]
    rules = kinds["PrometheusRule"][0]["spec"]
    assert rules == yaml.safe_load((CHART / "files" / "rules.yaml").read_text())
    dashboard = kinds["ConfigMap"][0]["data"]["dvecdb.json"]
    assert dashboard.strip() == (CHART / "files" / "dashboard.json").read_text().strip()
    kubernetes_validate.validate(kinds["ConfigMap"][0], "1.31", strict=True)


@pytest_plan
def test_rbac_covers_the_operators_calls() -> None:
    role = by_kind(render())["ClusterRole"][0]
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    needed = {
        ("dvecdb.io", "dvecclusters", "watch"),
        ("dvecdb.io", "dvecclusters/status", "patch"),
        ("", "pods", "patch"),
        ("", "pods", "delete"),
        ("", "secrets", "create"),
        ("", "secrets", "patch"),
        ("networking.k8s.io", "networkpolicies", "patch"),
        ("networking.k8s.io", "networkpolicies", "delete"),
        ("apps", "statefulsets", "patch"),
        ("apps", "statefulsets", "delete"),  # orphan deletion when claims grow
        ("", "persistentvolumeclaims", "list"),
        ("", "persistentvolumeclaims", "patch"),
        ("storage.k8s.io", "storageclasses", "get"),
        ("", "configmaps", "patch"),  # the node-defaults ConfigMap
        ("", "services", "patch"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("monitoring.coreos.com", "servicemonitors", "patch"),
        ("", "events", "create"),
        ("kopf.dev", "clusterkopfpeerings", "patch"),
    }
    assert needed <= granted
