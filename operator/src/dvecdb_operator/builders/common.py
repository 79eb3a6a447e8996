"""Names and labels shared by every child of one `DVecCluster`.

A cluster of `shards` replica groups names its groups' objects after the group: shard 0 keeps
the names a one-shard cluster always had (StatefulSet `NAME`, pods `NAME-<i>`, Services
`NAME-rw`/`NAME-ro`), so clusters made before shards existed keep every object; shard `i > 0`
is `NAME-s<i>` (pods `NAME-s<i>-<j>`, Services `NAME-s<i>-rw`/`-ro`). The headless Service,
the PDB, the auth Secret and the NetworkPolicy stay one per cluster. The router, the cluster's
one client endpoint, is the Deployment `NAME-router` behind the Service `NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dvecdb_operator import constants as c


@dataclass(frozen=True)
class ClusterRef:
    """Which cluster the children belong to, and which of its replica groups (shard)."""

    name: str
    namespace: str
    shard: int = 0
    shards: int = 1

    def group(self, shard: int) -> ClusterRef:
        """The same cluster, naming shard `shard`'s objects."""
        return ClusterRef(self.name, self.namespace, shard, self.shards)

    @property
    def groups(self) -> list[ClusterRef]:
        return [self.group(i) for i in range(self.shards)]

    @property
    def statefulset(self) -> str:
        return self.name if self.shard == 0 else f"{self.name}-s{self.shard}"

    @property
    def headless_service(self) -> str:
        return f"{self.name}-headless"

    @property
    def rw_service(self) -> str:
        return f"{self.statefulset}-rw"

    @property
    def ro_service(self) -> str:
        return f"{self.statefulset}-ro"

    @property
    def router(self) -> str:
        """The router's Deployment, PDB and members ConfigMap."""
        return f"{self.name}-router"

    @property
    def router_service(self) -> str:
        """The cluster's one client endpoint."""
        return self.name

    def owns_pod(self, pod_name: str) -> bool:
        """The pod is a member of this group (`<statefulset>-<ordinal>`)."""
        head, _, tail = pod_name.rpartition("-")
        return head == self.statefulset and tail.isdigit()

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
        return f"{self.statefulset}-{ordinal}"


def shard_of_pod(cluster: ClusterRef, pod_name: str) -> int | None:
    """Which group a member pod belongs to, by its name; None if to none."""
    for group in cluster.groups:
        if group.owns_pod(pod_name):
            return group.shard
    return None


def selector_labels(cluster: ClusterRef) -> dict[str, str]:
    """The labels that select this cluster's pods (immutable once the StatefulSet exists)."""
    return {c.LABEL_NAME: c.APP_NAME, c.LABEL_CLUSTER: cluster.name}


def shard_labels(cluster: ClusterRef) -> dict[str, str]:
    """The group's own label, on a cluster of several shards only: a one-shard cluster's
    pods and selectors stay exactly as before shards existed (no rolling restart, and the
    StatefulSet's selector cannot change)."""
    return {c.LABEL_SHARD: str(cluster.shard)} if cluster.shards > 1 else {}


def member_labels(cluster: ClusterRef) -> dict[str, str]:
    """The labels that select this group's members (its StatefulSet, its rw/ro Services)."""
    return {**selector_labels(cluster), **shard_labels(cluster)}


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
