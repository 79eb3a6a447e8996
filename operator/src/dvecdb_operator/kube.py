"""The only module that calls the Kubernetes API.

Credentials come from the same loaders kopf itself uses through the `kubernetes` package
(in-cluster service account first, then the kubeconfig); requests go over one aiohttp session,
so the monitor never blocks the event loop on a synchronous client. Children are written
with server-side apply under the field manager `dvecdb-operator`, which makes creation
idempotent and patches back any field of ours that someone else changed.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from dvecdb_operator import constants as c

# Which REST collection each kind lives in: (group/version path prefix, plural).
_COLLECTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("v1", "Pod"): ("/api/v1", "pods"),
    ("v1", "Service"): ("/api/v1", "services"),
    ("v1", "Secret"): ("/api/v1", "secrets"),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps"),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims"),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets"),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("policy/v1", "PodDisruptionBudget"): ("/apis/policy/v1", "poddisruptionbudgets"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): (
        "/apis/monitoring.coreos.com/v1",
        "servicemonitors",
    ),
    ("monitoring.coreos.com/v1", "PrometheusRule"): (
        "/apis/monitoring.coreos.com/v1",
        "prometheusrules",
    ),
    ("cert-manager.io/v1", "Certificate"): ("/apis/cert-manager.io/v1", "certificates"),
    (c.API_VERSION, c.KIND): (f"/apis/{c.API_VERSION}", c.PLURAL),
}


class ApiError(Exception):
    """A non-2xx answer of the API server, with its status and the Status message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    """409: a resourceVersion precondition failed or the object already exists."""


def object_path(api_version: str, kind: str, namespace: str, name: str | None = None) -> str:
    try:
        prefix, plural = _COLLECTIONS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"no REST path known for {api_version} {kind}") from None
    path = f"{prefix}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


def load_configuration() -> k8s_client.Configuration:
    """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG)."""
    cfg = k8s_client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ):
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        k8s_config.load_kube_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    return cfg


def _ssl_context(cfg: k8s_client.Configuration) -> ssl.SSLContext | bool:
    if not cfg.host.startswith("https"):
        return False
    if not cfg.verify_ssl:
        return False
    ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
    if cfg.cert_file:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return ctx


class Kube:
    """A small async Kubernetes API client for the operator's handful of calls."""

    def __init__(self, cfg: k8s_client.Configuration, session: aiohttp.ClientSession) -> None:
        self._cfg = cfg
        self._session = session
        self._ssl = _ssl_context(cfg)

    @classmethod
    async def connect(cls, *, request_timeout: float = 30.0) -> Kube:
        cfg = load_configuration()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=request_timeout))
        return cls(cfg, session)

    async def close(self) -> None:
        await self._session.close()

    def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        token = self._cfg.get_api_key_with_prefix(
            "BearerToken"
        ) or self._cfg.get_api_key_with_prefix("authorization")
        if token:
            # The in-cluster loader stores "bearer <token>", the kubeconfig one "Bearer <token>".
            scheme, _, rest = token.partition(" ")
            headers["Authorization"] = (
                f"Bearer {rest}" if scheme.lower() == "bearer" and rest else f"Bearer {token}"
            )
        elif self._cfg.username and self._cfg.password:
            headers["Authorization"] = self._cfg.get_basic_auth_token() or ""
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body)
        if data is not None and content_type is None:
            content_type = "application/json"
        async with self._session.request(
            method,
            self._cfg.host.rstrip("/") + path,
            params=params,
            data=data,
            headers=self._headers(content_type),
            ssl=self._ssl,
        ) as resp:
            text = await resp.text()
            if resp.status >= 400:
                try:
                    message = str(json.loads(text).get("message", text))
                except ValueError:
                    message = text
                error = {404: NotFoundError, 409: ConflictError}.get(resp.status, ApiError)
                raise error(resp.status, message)
            return dict(json.loads(text)) if text else {}

    # --- the DVecCluster -------------------------------------------------------------------

    async def get_cluster(self, namespace: str, name: str) -> dict[str, Any]:
        return await self.request("GET", object_path(c.API_VERSION, c.KIND, namespace, name))

    async def patch_cluster_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch the status subresource; with `resource_version`, only if unchanged.

        The precondition is what makes an epoch bump safe with two operator replicas: the
        second writer gets ConflictError and re-reads instead of failing over twice.
        """
        body: dict[str, Any] = {"status": dict(status)}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        path = object_path(c.API_VERSION, c.KIND, namespace, name) + "/status"
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def patch_cluster_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any]:
        body = {"metadata": {"annotations": dict(annotations)}}
        path = object_path(c.API_VERSION, c.KIND, namespace, name)
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    # --- pods -------------------------------------------------------------------------------

    async def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        body = await self.request(
            "GET", object_path("v1", "Pod", namespace), params={"labelSelector": selector}
        )
        return list(body.get("items") or [])

    async def patch_pod_labels(
        self, namespace: str, name: str, labels: Mapping[str, str | None]
    ) -> None:
        body = {"metadata": {"labels": dict(labels)}}
        await self.request(
            "PATCH",
            object_path("v1", "Pod", namespace, name),
            body=body,
            content_type="application/merge-patch+json",
        )

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        body = {"metadata": {"annotations": dict(annotations)}}
        await self.request(
            "PATCH",
            object_path("v1", "Pod", namespace, name),
            body=body,
            content_type="application/merge-patch+json",
        )

    async def delete_pod(self, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", object_path("v1", "Pod", namespace, name))
        except NotFoundError:
            pass

    # --- children ---------------------------------------------------------------------------

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.request("GET", object_path(api_version, kind, namespace, name))
        except NotFoundError:
            return None

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply `manifest` (create or patch our fields back), forcing ownership."""
        meta = manifest["metadata"]
        path = object_path(
            manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]
        )
        return await self.request(
            "PATCH",
            path,
            params={"fieldManager": c.MANAGER, "force": "true"},
            body=manifest,
            content_type="application/apply-patch+yaml",
        )

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch; a `metadata.resourceVersion` in it makes it conditional (409)."""
        return await self.request(
            "PATCH",
            object_path(api_version, kind, namespace, name),
            body=dict(patch),
            content_type="application/merge-patch+json",
        )

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        """Create `manifest` unless it exists; True when this call created it."""
        meta = manifest["metadata"]
        path = object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        try:
            await self.request("POST", path, body=manifest)
        except ConflictError:
            return False
        return True

    async def ensure_peering(self, name: str, namespace: str | None) -> bool:
        """Create kopf's peering object (cluster-wide when `namespace` is None) if absent.

        kopf pauses every handler until the named peering object exists; creating it here
        spares a user who runs the operator without the Helm chart from a silent stall.
        Returns True when this call created it.
        """
        kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
        plural = "clusterkopfpeerings" if namespace is None else "kopfpeerings"
        scope = "" if namespace is None else f"/namespaces/{namespace}"
        metadata: dict[str, str] = {"name": name}
        if namespace is not None:
            metadata["namespace"] = namespace
        try:
            await self.request(
                "POST",
                f"/apis/kopf.dev/v1{scope}/{plural}",
                body={"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": metadata},
            )
        except ConflictError:
            return False
        return True


# Identical events within this window are posted once: a member that refuses a command on
# every pass, or a missing optional CRD, must not flood the namespace with Events.
EVENT_DEDUP_SECONDS = 60.0
_recent_events: dict[tuple[str, str, str], float] = {}


def post_event(
    body: Mapping[str, Any], *, reason: str, message: str, warning: bool = False
) -> None:
    """A Kubernetes Event on the DVecCluster, through kopf's own event poster."""
    now = time.monotonic()
    key = (str(body.get("metadata", {}).get("uid")), reason, message)
    if now - _recent_events.get(key, -EVENT_DEDUP_SECONDS) < EVENT_DEDUP_SECONDS:
        return
    for stale in [k for k, t in _recent_events.items() if now - t >= EVENT_DEDUP_SECONDS]:
        del _recent_events[stale]
    _recent_events[key] = now
    kopf.event(
        dict(body),  # type: ignore[arg-type]
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message[:1024],
    )
