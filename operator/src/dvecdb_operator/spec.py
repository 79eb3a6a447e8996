"""The `DVecCluster` spec as typed models: the edge where user input is validated.

The CRD's OpenAPI schema validates on admission and fills defaults; these models repeat the same
defaults so that the operator behaves identically for objects created before a default was
added, and so the builders receive plain typed values instead of nested dicts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from dvecdb_operator import constants as c
from dvecdb_operator.quantity import InvalidQuantityError, parse_quantity

STORAGE_SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"
DEFAULT_IMAGE = "dvecdb/node:0.1.0"


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


class StorageSpec(_Model):
    size: str = Field(default="1Gi", pattern=STORAGE_SIZE_PATTERN)
    storage_class_name: str | None = None
    # Whether PersistentVolumeClaims go with the cluster when it is deleted.
    reclaim_policy: Literal["Retain", "Delete"] = "Retain"
    # Whether a member's claim goes when a scale-down removes the member. Retain: a later
    # scale-up reuses it and the member catches up from where it was (not counted, nor
    # Healthy, until it is within the lag bound); Delete: it starts empty and copies the log.
    scale_down_policy: Literal["Retain", "Delete"] = "Retain"


class HnswSpec(_Model):
    m: int = Field(default=16, ge=2, le=128)
    ef_construction: int = Field(default=200, ge=1)
    ef_search: int = Field(default=50, ge=1)


class NodeSpec(_Model):
    fsync: Literal["always", "batch", "none"] = "batch"
    default_ack: Literal["leader", "one", "quorum"] = "one"
    hnsw: HnswSpec = HnswSpec()


class FailoverSpec(_Model):
    """Failover timing. The leader's lease must end well before a failover can begin, so
    that a leader cut off from the operator and from its followers has stopped
    acknowledging writes by then: `leaseSeconds` defaults to half of `detectionSeconds`
    and may not exceed it."""

    enabled: bool = True
    detection_seconds: int = Field(default=10, ge=1, le=3600)
    lease_seconds: float | None = Field(default=None, ge=0.1, le=3600)
    max_read_staleness_seconds: float = Field(default=60, ge=0, le=86400)

    @model_validator(mode="after")
    def _lease_within_detection(self) -> FailoverSpec:
        if self.lease_seconds is not None and self.lease_seconds > self.detection_seconds:
            raise ValueError(
                f"leaseSeconds ({self.lease_seconds:g}) must not exceed detectionSeconds"
                f" ({self.detection_seconds})"
            )
        return self

    @property
    def lease(self) -> float:
        """The leader's lease in seconds (`leaseSeconds`, else `detectionSeconds / 2`)."""
        if self.lease_seconds is not None:
            return self.lease_seconds
        return self.detection_seconds / 2


class MonitoringSpec(_Model):
    service_monitor: bool = False
    prometheus_rule: bool = False
    grafana_dashboard: bool = False
    interval: str = Field(default="30s", pattern=r"^[0-9]+(ms|s|m|h)$")


class AuthSpec(_Model):
    """The Secret with the cluster's keys (`apiKey`, `readOnlyKey`, `clusterToken`); unset:
    `<cluster>-token`. The operator adds any key that is missing and never changes one that
    is there (an empty value turns that credential off)."""

    secret_name: str | None = Field(default=None, min_length=1, max_length=253)


class NetworkPolicySpec(_Model):
    """Ingress to the members' port: from the cluster's own members, the operator, and the
    peers in `allowFrom` (NetworkPolicyPeer objects, passed through as written; default:
    every pod of the cluster's namespace)."""

    enabled: bool = True
    allow_from: list[dict[str, Any]] | None = None


class IssuerRef(_Model):
    """A cert-manager issuer that signs the members' certificate instead of the operator."""

    name: str = Field(min_length=1, max_length=253)
    kind: Literal["Issuer", "ClusterIssuer"] = "Issuer"
    group: str = "cert-manager.io"


class TlsSpec(_Model):
    """TLS on the members' port and the router's (DESIGN.md "Access"). Neither `secretName`
    nor `issuerRef`: the operator keeps a CA (Secret `NAME-ca`) and per-member certificates
    (Secret `NAME-tls`). `secretName` alone: that Secret's `tls.crt`, `tls.key` and `ca.crt`
    serve every member and the router. `issuerRef`: a cert-manager Certificate writes the
    Secret (`secretName`, else `NAME-tls`)."""

    enabled: bool = True
    secret_name: str | None = Field(default=None, min_length=1, max_length=253)
    issuer_ref: IssuerRef | None = None


class RouterSpec(_Model):
    """The router Deployment, the cluster's one client endpoint (Service `NAME`). `image`
    unset: the members' image with its repository's last part `node` replaced by `router`
    (`dvecdb/node:0.1.0` -> `dvecdb/router:0.1.0`), same registry and tag."""

    replicas: int = Field(default=2, ge=0, le=99)
    image: str | None = Field(default=None, min_length=1)
    resources: dict[str, Any] = Field(default_factory=dict)

    @field_validator("resources")
    @classmethod
    def _quantities(cls, resources: dict[str, Any]) -> dict[str, Any]:
        return check_resources(resources)


class ClusterSpec(_Model):
    replicas: int = Field(default=3, ge=1, le=99)
    # Replica groups, each of `replicas` members; fixed at creation (no resharding yet).
    shards: int = Field(default=1, ge=1, le=64)
    router: RouterSpec = RouterSpec()
    image: str = DEFAULT_IMAGE
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: dict[str, Any] = Field(default_factory=dict)
    storage: StorageSpec = StorageSpec()
    node: NodeSpec = NodeSpec()
    failover: FailoverSpec = FailoverSpec()
    anti_affinity: Literal["preferred", "required", "none"] = "preferred"
    pod_disruption_budget: bool = True
    monitoring: MonitoringSpec = MonitoringSpec()
    auth: AuthSpec = AuthSpec()
    network_policy: NetworkPolicySpec = NetworkPolicySpec()
    tls: TlsSpec = TlsSpec()

    @field_validator("resources")
    @classmethod
    def _quantities(cls, resources: dict[str, Any]) -> dict[str, Any]:
        return check_resources(resources)


def check_resources(resources: dict[str, Any]) -> dict[str, Any]:
    """Every limit and request must be a quantity Kubernetes accepts, and not negative.

    The CRD admits any string there, and the API server would only refuse it when the
    StatefulSet is applied, on every reconcile; refused here, the spec fails like any other
    invalid field (a permanent handler error and `phase: Failed` with the message), and the
    builders may read the values, e.g. the CPU limit that sets the node's search threads.
    """
    for kind in ("limits", "requests"):
        amounts = resources.get(kind)
        if amounts is None:
            continue
        if not isinstance(amounts, dict):
            raise ValueError(f"{kind} must be a mapping of resource names to quantities")
        for name, amount in amounts.items():
            try:
                negative = parse_quantity(amount) < 0
            except InvalidQuantityError as exc:
                raise ValueError(f"{kind}.{name}: {exc}") from exc
            if negative:
                raise ValueError(f"{kind}.{name}: {amount!r} is negative")
    return resources


def router_image(spec: ClusterSpec) -> str:
    """`router.image`, else the members' image with `node` -> `router` in its repository's
    last part (registry and tag kept; a digest names the node's image only, so it is dropped:
    pin the router with `router.image`); an image not named so is used as it is (an image
    holding both programs: the Deployment names `dvecdb-router` as the command)."""
    if spec.router.image:
        return spec.router.image
    image = spec.image
    at = image.find("@")
    name, digest = (image, "") if at < 0 else (image[:at], image[at:])
    slash = name.rfind("/")
    colon = name.rfind(":")
    repo, tag = (name[:colon], name[colon:]) if colon > slash else (name, "")
    head, _, last = repo.rpartition("/")
    if last == "node":
        last = c.ROUTER_IMAGE_REPOSITORY
    elif last.endswith("-node"):
        last = last[: -len("node")] + c.ROUTER_IMAGE_REPOSITORY
    else:
        return image
    del digest
    return f"{head}/{last}{tag}" if head else f"{last}{tag}"


class InvalidSpecError(ValueError):
    """The spec does not validate; the message lists every field at fault."""


def parse_spec(raw: dict[str, Any] | None) -> ClusterSpec:
    """Validate a raw spec mapping into a `ClusterSpec`, or raise `InvalidSpecError`."""
    try:
        return ClusterSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"spec.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise InvalidSpecError(problems) from exc
