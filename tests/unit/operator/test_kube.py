"""kube.py against a tiny local HTTP server playing the API server: paths, verbs, content
types, the resourceVersion precondition, bearer auth and error mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client as k8s_client

from dvecdb_operator import kube as kube_api

pytestmark = pytest.mark.unit


class FakeApiServer:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.responses: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "content_type": request.headers.get("Content-Type"),
                "auth": request.headers.get("Authorization"),
                "body": json.loads(body) if body else None,
            }
        )
        status, payload = self.responses.get((request.method, request.path), (200, {}))
        return web.json_response(payload, status=status)


@pytest.fixture
async def server() -> AsyncIterator[tuple[FakeApiServer, kube_api.Kube]]:
    fake = FakeApiServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    cfg = k8s_client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.api_key = {"BearerToken": "Bearer s3cret"}
    kube = kube_api.Kube(cfg, aiohttp.ClientSession())
    try:
        yield fake, kube
    finally:
        await kube.close()
        await runner.cleanup()


CLUSTER = "/apis/dvecdb.io/v1alpha1/namespaces/ns/dvecclusters/db"


async def test_apply_is_a_forced_server_side_apply(
    server: tuple[FakeApiServer, kube_api.Kube],
) -> None:
    fake, kube = server
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "ns"},
        "spec": {"replicas": 3},
    }
    await kube.apply(manifest)
    req = fake.requests[-1]
    assert (req["method"], req["path"]) == ("PATCH", "/apis/apps/v1/namespaces/ns/statefulsets/db")
    assert req["query"] == {"fieldManager": "dvecdb-operator", "force": "true"}
    assert req["content_type"] == "application/apply-patch+yaml"
    assert req["auth"] == "Bearer s3cret"
    assert req["body"] == manifest


async def test_status_patch_carries_the_resource_version_precondition(
    server: tuple[FakeApiServer, kube_api.Kube],
) -> None:
    fake, kube = server
    await kube.patch_cluster_status("ns", "db", {"epoch": 2}, resource_version="41")
    req = fake.requests[-1]
    assert (req["method"], req["path"]) == ("PATCH", CLUSTER + "/status")
    assert req["content_type"] == "application/merge-patch+json"
    assert req["body"] == {"status": {"epoch": 2}, "metadata": {"resourceVersion": "41"}}
    fake.responses[("PATCH", CLUSTER + "/status")] = (409, {"message": "modified"})
    with pytest.raises(kube_api.ConflictError) as info:
        await kube.patch_cluster_status("ns", "db", {"epoch": 3}, resource_version="41")
    assert info.value.status == 409 and info.value.message == "modified"


async def test_get_missing_is_none_and_errors_are_typed(
    server: tuple[FakeApiServer, kube_api.Kube],
) -> None:
    fake, kube = server
    path = "/api/v1/namespaces/ns/secrets/nope"
    fake.responses[("GET", path)] = (404, {"message": 'secrets "nope" not found'})
    assert await kube.get("v1", "Secret", "ns", "nope") is None
    fake.responses[("GET", CLUSTER)] = (403, {"message": "forbidden"})
    with pytest.raises(kube_api.ApiError) as info:
        await kube.get_cluster("ns", "db")
    assert info.value.status == 403


async def test_create_reports_whether_it_created(
    server: tuple[FakeApiServer, kube_api.Kube],
) -> None:
    fake, kube = server
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "namespace": "ns"}}
    assert await kube.create(secret) is True
    assert fake.requests[-1]["path"] == "/api/v1/namespaces/ns/secrets"
    fake.responses[("POST", "/api/v1/namespaces/ns/secrets")] = (409, {"message": "exists"})
    assert await kube.create(secret) is False


async def test_pods_are_listed_by_selector_and_labels_merge_patched(
    server: tuple[FakeApiServer, kube_api.Kube],
) -> None:
    fake, kube = server
    fake.responses[("GET", "/api/v1/namespaces/ns/pods")] = (200, {"items": [{"a": 1}]})
    assert await kube.list_pods("ns", {"b": "2", "a": "1"}) == [{"a": 1}]
    assert fake.requests[-1]["query"] == {"labelSelector": "a=1,b=2"}
    await kube.patch_pod_labels("ns", "db-0", {"dvecdb.io/role": None})
    req = fake.requests[-1]
    assert req["body"] == {"metadata": {"labels": {"dvecdb.io/role": None}}}
    fake.responses[("DELETE", "/api/v1/namespaces/ns/pods/db-9")] = (404, {"message": "gone"})
    await kube.delete_pod("ns", "db-9")  # already gone is fine


def test_unknown_kinds_have_no_path() -> None:
    with pytest.raises(ValueError, match="no REST path"):
        kube_api.object_path("v1", "Gizmo", "ns", "x")


async def test_ensure_peering_creates_cluster_or_namespaced_objects(
    server: tuple[FakeApiServer, kube_api.Kube],
) -> None:
    fake, kube = server
    assert await kube.ensure_peering("dvecdb-operator", None) is True
    req = fake.requests[-1]
    assert req["path"] == "/apis/kopf.dev/v1/clusterkopfpeerings"
    assert req["body"]["kind"] == "ClusterKopfPeering"
    assert await kube.ensure_peering("dvecdb-operator", "team-a") is True
    req = fake.requests[-1]
    assert req["path"] == "/apis/kopf.dev/v1/namespaces/team-a/kopfpeerings"
    assert req["body"]["metadata"] == {"name": "dvecdb-operator", "namespace": "team-a"}
    fake.responses[("POST", "/apis/kopf.dev/v1/clusterkopfpeerings")] = (409, {"message": "x"})
    assert await kube.ensure_peering("dvecdb-operator", None) is False


@pytest.mark.parametrize(
    "stored", ["Bearer s3cret", "bearer s3cret", "s3cret"], ids=["kubeconfig", "in-cluster", "bare"]
)
async def test_bearer_token_header_whatever_the_loader_stored(
    server: tuple[FakeApiServer, kube_api.Kube], stored: str
) -> None:
    fake, kube = server
    kube._cfg.api_key = {"BearerToken": stored}
    await kube.get("v1", "Secret", "ns", "t")
    assert fake.requests[-1]["auth"] == "Bearer s3cret"
