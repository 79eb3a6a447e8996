"""The StatefulSet that runs one node process per member.

Pods start in parallel and boot in `standby`; the operator, not the StatefulSet controller,
decides who leads, so `podManagementPolicy: Parallel` and `updateStrategy: OnDelete` (the
operator restarts followers first and switches over before the leader restarts).
"""

from __future__ import annotations

from typing import Any

from dvecdb_operator import constants as c
from dvecdb_operator.builders.common import (
    ClusterRef,
    member_labels,
    metadata,
    selector_labels,
    shard_labels,
)
from dvecdb_operator.builders.cpus import search_threads
from dvecdb_operator.builders.nodedefaults import ef_search_env, node_defaults_name
from dvecdb_operator.spec import ClusterSpec
from dvecdb_operator.tlsplan import MEMBER_CERT_ENV, TLS_DIR, TLS_VOLUME, TlsMounts

RUN_AS_USER = 10001
AUTH_FILE_MODE = 0o440


def node_env(
    spec: ClusterSpec, defaults: str | None = None, tls: TlsMounts | None = None
) -> list[dict[str, Any]]:
    """The node's settings: every flag has a `DVECDB_` environment variable.

    With `defaults` (the node-defaults ConfigMap's name) the default ef_search comes from
    that ConfigMap, so a change of it restarts no member (`builders.nodedefaults`).

    The keys come from the auth Secret mounted at `AUTH_DIR` (`DVECDB_SECRETS_DIR`), not
    from variables: the node re-reads that folder while it runs, and the kubelet updates a
    mounted Secret in place, so an edited Secret rotates keys without a restart.

    `DVECDB_SEARCH_THREADS` comes last and only with a CPU limit, so that the pod template of a
    cluster without one stays as it was and no member restarts for it.

    With `tls` the node serves HTTPS with its certificate from the mounted TLS Secret (its own
    file by pod name when the operator issues one per member) and verifies peers against its
    `ca.crt`; members then advertise `https://` URLs.
    """

    def field(path: str) -> dict[str, Any]:
        return {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}

    env: list[dict[str, Any]] = [
        {"name": "POD_NAME", "valueFrom": field("metadata.name")},
        {"name": "POD_NAMESPACE", "valueFrom": field("metadata.namespace")},
        {"name": "POD_IP", "valueFrom": field("status.podIP")},
        # Members reach each other by pod IP (no cluster DNS is assumed).
        {
            "name": "DVECDB_ADVERTISE_URL",
            "value": f"{'http' if tls is None else 'https'}://$(POD_IP):{c.NODE_PORT}",
        },
        {"name": "DVECDB_FSYNC", "value": spec.node.fsync},
        {"name": "DVECDB_DEFAULT_ACK", "value": spec.node.default_ack},
        {"name": "DVECDB_HNSW_M", "value": str(spec.node.hnsw.m)},
        {"name": "DVECDB_HNSW_EF_CONSTRUCTION", "value": str(spec.node.hnsw.ef_construction)},
        (
            ef_search_env(defaults)
            if defaults
            else {"name": "DVECDB_HNSW_EF_SEARCH", "value": str(spec.node.hnsw.ef_search)}
        ),
        {"name": "DVECDB_SECRETS_DIR", "value": c.AUTH_DIR},
        # The leader's lease (it stops acknowledging without a majority or the operator's
        # confirmation for this long) and how long followers serve eventual reads without
        # hearing from a leader.
        {"name": "DVECDB_LEASE_SECONDS", "value": f"{spec.failover.lease:g}"},
        {
            "name": "DVECDB_MAX_READ_STALENESS_SECONDS",
            "value": f"{spec.failover.max_read_staleness_seconds:g}",
        },
    ]
    if tls is not None:
        env += [
            {"name": MEMBER_CERT_ENV, "value": tls.path(tls.member_cert)},
            {"name": "DVECDB_TLS_KEY_FILE", "value": tls.path(tls.member_key)},
            {"name": "DVECDB_TLS_CA_FILE", "value": tls.path(tls.ca)},
        ]
    threads = search_threads(spec.resources)
    if threads is not None:
        env.append({"name": "DVECDB_SEARCH_THREADS", "value": str(threads)})
    return env


def _probe(
    path: str, *, period: int, timeout: int, failures: int, tls: bool = False
) -> dict[str, Any]:
    # HTTPS probes: the kubelet does not verify the certificate (it holds no CA for it).
    return {
        "httpGet": {"path": path, "port": c.NODE_PORT_NAME, "scheme": "HTTPS" if tls else "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def affinity(cluster: ClusterRef, mode: str) -> dict[str, Any] | None:
    """Spread a group's members over hosts: `required` refuses to co-locate, `preferred` only
    tries. (Members of different shards may share a host: each group keeps its own majority.)"""
    term = {
        "labelSelector": {"matchLabels": member_labels(cluster)},
        "topologyKey": "kubernetes.io/hostname",
    }
    if mode == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    if mode == "preferred":
        return {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 100, "podAffinityTerm": term}
                ]
            }
        }
    return None


def container(
    spec: ClusterSpec, defaults: str | None = None, tls: TlsMounts | None = None
) -> dict[str, Any]:
    """The node container; the image's entry point is `dvecdb-node`, so only args are set."""
    body: dict[str, Any] = {
        "name": "node",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": [
            "--host",
            "0.0.0.0",
            "--port",
            str(c.NODE_PORT),
            "--data-dir",
            c.DATA_DIR,
            "--node-id",
            "$(POD_NAME)",
        ],
        "env": node_env(spec, defaults, tls),
        "ports": [{"name": c.NODE_PORT_NAME, "containerPort": c.NODE_PORT, "protocol": "TCP"}],
        # Recovery replays the WAL before /healthz answers: give it minutes, then probe fast.
        "startupProbe": _probe("/healthz", period=2, timeout=2, failures=150, tls=bool(tls)),
        "livenessProbe": _probe("/healthz", period=10, timeout=3, failures=3, tls=bool(tls)),
        "readinessProbe": _probe("/readyz", period=2, timeout=2, failures=2, tls=bool(tls)),
        # The root filesystem is read-only: the node writes only under its data folder
        # (temporary files included, so that renames stay atomic on the same filesystem).
        "volumeMounts": [
            {"name": c.DATA_VOLUME, "mountPath": c.DATA_DIR},
            {"name": c.AUTH_VOLUME, "mountPath": c.AUTH_DIR, "readOnly": True},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if tls is not None:
        body["volumeMounts"].append({"name": TLS_VOLUME, "mountPath": TLS_DIR, "readOnly": True})
    if spec.resources:
        body["resources"] = spec.resources
    return body


def volume_claim_template(cluster: ClusterRef, spec: ClusterSpec) -> dict[str, Any]:
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name:
        claim["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": c.DATA_VOLUME, "labels": selector_labels(cluster)},
        "spec": claim,
    }


def tls_volume(tls: TlsMounts) -> dict[str, Any]:
    """The TLS Secret as a volume, readable by the program's group only (keys inside)."""
    return {"name": TLS_VOLUME, "secret": {"secretName": tls.secret, "defaultMode": AUTH_FILE_MODE}}


def build_statefulset(
    cluster: ClusterRef,
    spec: ClusterSpec,
    *,
    auth_secret: str,
    replicas: int | None = None,
    tls: TlsMounts | None = None,
) -> dict[str, Any]:
    """One group's StatefulSet (`cluster.shard`); `replicas` overrides the spec while a
    scale-down waits."""
    pod_spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 30,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "runAsGroup": RUN_AS_USER,
            "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container(spec, node_defaults_name(cluster), tls)],
        # Readable by the node's group only (fsGroup owns Secret volume files).
        "volumes": [
            {
                "name": c.AUTH_VOLUME,
                "secret": {"secretName": auth_secret, "defaultMode": AUTH_FILE_MODE},
            }
        ],
    }
    if tls is not None:
        pod_spec["volumes"].append(tls_volume(tls))
    spread = affinity(cluster, spec.anti_affinity)
    if spread is not None:
        pod_spec["affinity"] = spread
    labels = metadata(cluster, cluster.statefulset, extra_labels=shard_labels(cluster))["labels"]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(cluster, cluster.statefulset, extra_labels=shard_labels(cluster)),
        "spec": {
            "replicas": spec.replicas if replicas is None else replicas,
            "serviceName": cluster.headless_service,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": spec.storage.reclaim_policy,
                "whenScaled": spec.storage.scale_down_policy,
            },
            "selector": {"matchLabels": member_labels(cluster)},
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec,
            },
            "volumeClaimTemplates": [volume_claim_template(cluster, spec)],
        },
    }
