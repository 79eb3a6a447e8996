"""The API server validates, serves CRDs with a status subresource, and takes helm installs."""

from __future__ import annotations

import json

import pytest

from .conftest import HERE, MANIFESTS, Kubectl, wait_until

pytestmark = pytest.mark.e2e


def test_dry_run_server_validates_a_manifest(kubectl: Kubectl, namespace: str) -> None:
    valid = (MANIFESTS / "deployment-valid.yaml").read_text()
    ok = kubectl.run("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=valid)
    assert "created (server dry run)" in ok.stdout
    assert kubectl.get("deployment", "dry-run-check", namespace) is None, "dry run created it"
    # The server (not kubectl) rejects what breaks the schema: a selector the template lacks.
    broken = valid.replace("labels: {app: dry-run-check}", "labels: {app: other}")
    bad = kubectl.run(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=broken, check=False
    )
    assert bad.returncode != 0
    assert "selector` does not match template `labels`" in bad.stderr


def test_crd_object_and_status_subresource(kubectl: Kubectl, namespace: str) -> None:
    kubectl.apply(MANIFESTS / "crd-widget.yaml")
    wait_until(
        lambda: any(
            c["type"] == "Established" and c["status"] == "True"
            for c in (kubectl.get("crd", "widgets.e2e.localkube.dvecdb.io") or {})
            .get("status", {})
            .get("conditions", [])
        ),
        60,
        "the CRD to be established",
    )
    widget = {
        "apiVersion": "e2e.localkube.dvecdb.io/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    wait_until(
        lambda: (
            kubectl.run(
                "create", "-n", namespace, "-f", "-", stdin=json.dumps(widget), check=False
            ).returncode
            == 0
        ),
        30,
        "the widget to be created",
    )
    invalid = dict(widget, metadata={"name": "w2"}, spec={"size": 0})
    refused = kubectl.run(
        "create", "-n", namespace, "-f", "-", stdin=json.dumps(invalid), check=False
    )
    assert refused.returncode != 0 and "spec.size" in refused.stderr
    read = kubectl.get("widget", "w1", namespace)
    assert read["spec"] == {"size": 3}
    # A status patch through the main resource is ignored; through /status it sticks.
    kubectl.run(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"status":{"phase":"Main"}}',
    )
    assert "status" not in kubectl.get("widget", "w1", namespace)
    kubectl.run(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Ready"}}',
    )
    assert kubectl.get("widget", "w1", namespace)["status"] == {"phase": "Ready"}
    kubectl.run("delete", "crd", "widgets.e2e.localkube.dvecdb.io")


def test_helm_install_reaches_the_api_server(kubectl: Kubectl, namespace: str) -> None:
    chart = HERE / "charts" / "e2e-tiny"
    kubectl.run(
        "install",
        "tiny",
        str(chart),
        "-n",
        namespace,
        "--set",
        "message=hello-localkube",
        "--wait",
        "--timeout",
        "60s",
        tool="helm",
    )
    config = kubectl.get("configmap", "tiny-e2e-tiny", namespace)
    assert config["data"]["message"] == "hello-localkube"
    assert config["metadata"]["annotations"]["meta.helm.sh/release-name"] == "tiny"
    listed = json.loads(kubectl.run("list", "-n", namespace, "-o", "json", tool="helm").stdout)
    assert [(r["name"], r["status"]) for r in listed] == [("tiny", "deployed")]
    kubectl.run("uninstall", "tiny", "-n", namespace, "--wait", tool="helm")
    assert kubectl.get("configmap", "tiny-e2e-tiny", namespace) is None
