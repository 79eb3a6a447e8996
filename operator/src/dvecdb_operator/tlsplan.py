"""What `spec.tls` asks for, as data (pure): which Secret members and the router mount and
which files in it they use, the Secrets' contents the operator writes, and the cert-manager
Certificate. `tlsreconcile` does the reading and writing.

Three sources of certificates:

- generated (neither `secretName` nor `issuerRef`): the operator keeps a CA in `NAME-ca`
  (created once, never replaced, not owned by the cluster: it outlives it, so clients that
  trust it go on trusting a cluster created again under the same name) and one certificate
  per member and one for the router in `NAME-tls` (`<pod>.crt`/`<pod>.key`, `router.crt`/
  `router.key`, `ca.crt`). A member picks its own by its pod name.
- `secretName`: the user's Secret (`tls.crt`, `tls.key`, `ca.crt`) serves every member and
  the router; the user puts in it the names clients and members use.
- `issuerRef`: a cert-manager Certificate (one for the cluster, with every member's and the
  router's names and the pod IPs known) writes `secretName` or `NAME-tls`, used as above.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dvecdb_operator import certificates as certs
from dvecdb_operator.builders.common import ClusterRef, metadata
from dvecdb_operator.spec import ClusterSpec

TLS_VOLUME = "tls"
TLS_DIR = "/etc/dvecdb/tls"
CERT_MANAGER_CRD = "certificates.cert-manager.io"
CERT_MANAGER_API = "cert-manager.io/v1"
MODE_GENERATED = "generated"
MODE_SECRET = "secret"
MODE_CERT_MANAGER = "cert-manager"
# How members (env) and the router (argument) are told their certificate.
MEMBER_CERT_ENV = "DVECDB_TLS_CERT_FILE"
ROUTER_CERT_ARG = "--tls-cert-file"


def serving_scheme(pod: Mapping[str, Any]) -> str:
    """`https` when a pod (or a pod template) of a member or router was started with a
    certificate, else `http`: read from each pod, since pods made before TLS was switched on
    serve plain HTTP until their restart."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        if ROUTER_CERT_ARG in (container.get("args") or []):
            return "https"
        for var in container.get("env") or []:
            if var.get("name") == MEMBER_CERT_ENV and var.get("value"):
                return "https"
    return "http"


@dataclass(frozen=True)
class TlsMounts:
    """The Secret mounted at `TLS_DIR` and the files in it each program is given."""

    mode: str
    secret: str
    member_cert: str
    member_key: str
    router_cert: str
    router_key: str
    ca: str = certs.CA_CERT_KEY

    def path(self, name: str) -> str:
        return f"{TLS_DIR}/{name}"


def ca_secret_name(ref: ClusterRef) -> str:
    return f"{ref.name}-ca"


def default_tls_secret(ref: ClusterRef) -> str:
    return f"{ref.name}-tls"


def tls_mounts(ref: ClusterRef, spec: ClusterSpec) -> TlsMounts | None:
    """None with TLS off. Members name their file with `$(POD_NAME)` (set in their env)."""
    tls = spec.tls
    if not tls.enabled:
        return None
    if tls.issuer_ref is None and tls.secret_name is None:
        return TlsMounts(
            MODE_GENERATED,
            default_tls_secret(ref),
            member_cert="$(POD_NAME).crt",
            member_key="$(POD_NAME).key",
            router_cert=f"{certs.ROUTER_LEAF}.crt",
            router_key=f"{certs.ROUTER_LEAF}.key",
        )
    mode = MODE_SECRET if tls.issuer_ref is None else MODE_CERT_MANAGER
    secret = tls.secret_name or default_tls_secret(ref)
    return TlsMounts(mode, secret, "tls.crt", "tls.key", "tls.crt", "tls.key")


def encode(value: bytes) -> str:
    return base64.b64encode(value).decode()


def decode_data(secret: Mapping[str, Any] | None) -> dict[str, bytes]:
    """A Secret's `data` as bytes (undecodable keys left out)."""
    found: dict[str, bytes] = {}
    for key, value in ((secret or {}).get("data") or {}).items():
        try:
            found[key] = base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            continue
    return found


def build_ca_secret(ref: ClusterRef, cert_pem: bytes, key_pem: bytes) -> dict[str, Any]:
    """The kept CA (no owner: see the module docstring)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(ref, ca_secret_name(ref), component="tls"),
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": encode(cert_pem),
            "tls.key": encode(key_pem),
            certs.CA_CERT_KEY: encode(cert_pem),
        },
    }


@dataclass(frozen=True)
class LeafPlan:
    """What to write to the members' Secret: new values by key, and why, by leaf name."""

    data: dict[str, bytes] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    removed: tuple[str, ...] = ()


def plan_leaves(
    held: Mapping[str, bytes],
    leaves: Sequence[certs.Leaf],
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    now: dt.datetime,
    *,
    lifetime: dt.timedelta = certs.LEAF_LIFETIME,
) -> LeafPlan:
    """The certificates to issue (missing, renamed, another CA's, due for renewal) given the
    Secret's current contents `held`; keys of leaves no longer wanted are removed."""
    data: dict[str, bytes] = {}
    reasons: dict[str, str] = {}
    for leaf in leaves:
        reason = certs.reissue_reason(
            held.get(leaf.cert_key), held.get(leaf.key_key), leaf, ca_cert_pem, now
        )
        if reason is None:
            continue
        cert, key = certs.issue_leaf(ca_cert_pem, ca_key_pem, leaf, now, lifetime)
        data[leaf.cert_key], data[leaf.key_key] = cert, key
        reasons[leaf.name] = reason
    if held.get(certs.CA_CERT_KEY) != ca_cert_pem:
        data[certs.CA_CERT_KEY] = ca_cert_pem
    keep = {certs.CA_CERT_KEY} | {k for leaf in leaves for k in (leaf.cert_key, leaf.key_key)}
    removed = tuple(sorted(k for k in held if k not in keep))
    return LeafPlan(data, reasons, removed)


def leaf_secret_patch(plan: LeafPlan, resource_version: str | None) -> dict[str, Any]:
    """A merge patch writing `plan` in place (the kubelet updates the mounted files and the
    node's reloader serves the new certificate); refused (409) if the Secret changed."""
    data: dict[str, str | None] = {k: encode(v) for k, v in plan.data.items()}
    data.update({k: None for k in plan.removed})
    patch: dict[str, Any] = {"data": data}
    if resource_version:
        patch["metadata"] = {"resourceVersion": resource_version}
    return patch


def build_leaf_secret(ref: ClusterRef, name: str, data: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(ref, name, component="tls"),
        "type": "Opaque",
        "data": {k: encode(v) for k, v in data.items()},
    }


def build_certificate(
    ref: ClusterRef, spec: ClusterSpec, leaves: Sequence[certs.Leaf]
) -> dict[str, Any]:
    """One cert-manager Certificate naming every member and the router (all share it)."""
    issuer = spec.tls.issuer_ref
    assert issuer is not None
    secret = spec.tls.secret_name or default_tls_secret(ref)
    dns = sorted({d for leaf in leaves for d in leaf.dns})
    ips = sorted({ip for leaf in leaves for ip in leaf.ips})
    hours = int(certs.LEAF_LIFETIME.total_seconds() // 3600)
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": metadata(ref, default_tls_secret(ref), component="tls"),
        "spec": {
            "secretName": secret,
            "commonName": dns[0] if dns else ref.name,
            "dnsNames": dns,
            "ipAddresses": ips,
            "duration": f"{hours}h",
            # cert-manager renews when this much is left: a third of the lifetime.
            "renewBefore": f"{round(hours * (1 - certs.RENEW_AT))}h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "usages": ["server auth", "client auth", "digital signature"],
            "issuerRef": {"name": issuer.name, "kind": issuer.kind, "group": issuer.group},
        },
    }
