"""Names and labels shared by every child of one `DVecCluster`."""

from __future__ import annotations

from dataclasses import dataclass

from dvecdb_operator import constants as c


@dataclass(frozen=True)
class ClusterRef:
    """Which cluster the children belong to."""

    name: str
    namespace: str

    @property
    def statefulset(self) -> str:
        return self.name

    @property
    def headless_service(self) -> str:
        return f"{self.name}-headless"

    @property
    def rw_service(self) -> str:
        return f"{self.name}-rw"

    @property
    def ro_service(self) -> str:
        return f"{self.name}-ro"

    @property
    def pdb(self) -> str:
        return self.name

    @property
    def default_auth_secret(self) -> str:
        return f"{self.name}-token"

    @property
    def network_policy(self) -> str:
        return self.name

    @property
    def dashboard_configmap(self) -> str:
        return f"{self.name}-dashboard"

    def pod(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"


def selector_labels(cluster: ClusterRef) -> dict[str, str]:
    """The labels that select this cluster's pods (immutable once the StatefulSet exists)."""
    return {c.LABEL_NAME: c.APP_NAME, c.LABEL_CLUSTER: cluster.name}


def common_labels(cluster: ClusterRef, *, component: str = "database") -> dict[str, str]:
    """Recommended labels plus the selector labels, for every child object."""
    return {
        **selector_labels(cluster),
        c.LABEL_INSTANCE: cluster.name,
        c.LABEL_MANAGED_BY: c.MANAGER,
        c.LABEL_COMPONENT: component,
    }


def metadata(
    cluster: ClusterRef,
    name: str,
    *,
    component: str = "database",
    extra_labels: dict[str, str] | None = None,
) -> dict[str, object]:
    return {
        "name": name,
        "namespace": cluster.namespace,
        "labels": {**common_labels(cluster, component=component), **(extra_labels or {})},
    }


def ordinal_of(pod_name: str) -> int:
    """The StatefulSet ordinal at the end of a pod name (`db-2` -> 2); -1 when there is none."""
    _, _, tail = pod_name.rpartition("-")
    return int(tail) if tail.isdigit() else -1
