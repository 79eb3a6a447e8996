"""In-memory stand-ins for the Kubernetes API (`kube.Kube`) and for nodes (NodeClient).

The fake API keeps a resourceVersion per object and honours the precondition on status
patches the way the API server does, so the double-failover guard is really exercised.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import aiohttp

from dvecdb_operator import constants as c
from dvecdb_operator import kube as kube_api


def merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value) if isinstance(value, dict | list) else value


class FakeKube:
    def __init__(self, cluster: dict[str, Any]) -> None:
        self.rv = 1
        cluster.setdefault("metadata", {}).update(resourceVersion="1", generation=1, uid="uid-1")
        self.cluster = cluster
        self.pods: dict[str, dict[str, Any]] = {}
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[str] = []
        self.status_patches: list[dict[str, Any]] = []
        self.conflict_next_status_patch = False

    def _bump(self) -> None:
        self.rv += 1
        self.cluster["metadata"]["resourceVersion"] = str(self.rv)

    @property
    def ns(self) -> str:
        return str(self.cluster["metadata"]["namespace"])

    @property
    def status(self) -> dict[str, Any]:
        return dict(self.cluster.get("status") or {})

    def add_pod(
        self,
        name: str,
        ip: str,
        *,
        ready: bool = True,
        revision: str = "r1",
        role: str | None = None,
    ) -> None:
        labels = {c.LABEL_CLUSTER: self.cluster["metadata"]["name"], c.LABEL_REVISION: revision}
        if role:
            labels[c.LABEL_ROLE] = role
        self.pods[name] = {
            "metadata": {"name": name, "labels": labels},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }

    def role_labels(self) -> dict[str, str | None]:
        return {n: p["metadata"]["labels"].get(c.LABEL_ROLE) for n, p in self.pods.items()}

    async def get_cluster(self, namespace: str, name: str) -> dict[str, Any]:
        if self.cluster is None or name != self.cluster["metadata"]["name"]:
            raise kube_api.NotFoundError(404, "not found")
        return copy.deepcopy(self.cluster)

    async def patch_cluster_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
    ) -> dict[str, Any]:
        if self.conflict_next_status_patch and resource_version is not None:
            self.conflict_next_status_patch = False
            self._bump()  # another writer got there first
            raise kube_api.ConflictError(409, "the object has been modified")
        if resource_version is not None and resource_version != str(self.rv):
            raise kube_api.ConflictError(409, "the object has been modified")
        self.status_patches.append(copy.deepcopy(dict(status)))
        self.cluster.setdefault("status", {})
        merge(self.cluster["status"], status)
        self._bump()
        return copy.deepcopy(self.cluster)

    async def patch_cluster_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> dict[str, Any]:
        meta = self.cluster["metadata"]
        meta.setdefault("annotations", {})
        merge(meta["annotations"], annotations)
        self._bump()
        return copy.deepcopy(self.cluster)

    async def list_pods(self, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [copy.deepcopy(p) for _, p in sorted(self.pods.items())]

    async def patch_pod_labels(
        self, namespace: str, name: str, labels: Mapping[str, str | None]
    ) -> None:
        if name not in self.pods:
            raise kube_api.NotFoundError(404, name)
        merge(self.pods[name]["metadata"]["labels"], labels)

    async def patch_pod_annotations(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> None:
        if name not in self.pods:
            raise kube_api.NotFoundError(404, name)
        merge(self.pods[name]["metadata"].setdefault("annotations", {}), annotations)

    async def delete_pod(self, namespace: str, name: str) -> None:
        self.deleted.append(name)
        self.pods.pop(name, None)

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.applied.append(copy.deepcopy(dict(manifest)))
        key = (manifest["kind"], manifest["metadata"]["name"])
        live = copy.deepcopy(self.objects.get(key) or {})
        merge(live, manifest)
        self.objects[key] = live
        return copy.deepcopy(live)

    async def create(self, manifest: Mapping[str, Any]) -> bool:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key in self.objects:
            return False
        self.objects[key] = copy.deepcopy(dict(manifest))
        self.objects[key]["metadata"]["resourceVersion"] = "1"
        return True

    async def merge_patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch a child, honouring a resourceVersion precondition like the server."""
        live = self.objects.get((kind, name))
        if live is None:
            raise kube_api.NotFoundError(404, name)
        meta = live.setdefault("metadata", {})
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != meta.get("resourceVersion", "1"):
            raise kube_api.ConflictError(409, "the object has been modified")
        body = copy.deepcopy(dict(patch))
        body.get("metadata", {}).pop("resourceVersion", None)
        merge(live, body)
        meta["resourceVersion"] = str(int(meta.get("resourceVersion", "1")) + 1)
        return copy.deepcopy(live)

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        if method == "DELETE":
            name = path.rsplit("/", 1)[-1]
            plural = path.split("/")[-2].lower()
            singular = plural[:-3] + "y" if plural.endswith("ies") else plural[:-1]
            for key in [k for k in self.objects if k[1] == name]:
                if key[0].lower() == singular:
                    del self.objects[key]
            self.deleted.append(path)
            return {}
        raise NotImplementedError(method)


class EpochRefused(ValueError):
    """What the node's client raises for a 409 `stale_epoch` answer."""

    status = 409
    code = "stale_epoch"


class FakeNode:
    """A node's role state machine as the operator sees it through the admin API."""

    def __init__(self, name: str, *, role: str = "standby", epoch: int = 0, seq: int = 0) -> None:
        self.name = name
        self.role = role
        self.epoch = epoch
        self.last_seq = seq
        self.applied_seq = seq
        self.last_epoch = epoch
        self.leader: str | None = None
        self.reachable = True
        self.calls: list[tuple[str, Any]] = []
        self.members_hint: int | None = None
        # A follower streaming from `upstream` gains up to `rate` records per status call,
        # and only while the upstream leads (a fenced leader stops streaming).
        self.upstream: FakeNode | None = None
        self.rate = 5
        self.promote_at_fenced_epoch = False
        self.lease_token = 0  # `lease.token`: bumped on every status answer
        self.lease_tokens: list[int | None] = []  # the tokens confirmations carried
        # `last_ack_seconds` a non-leader reports: long ago by default (the fake's followers
        # do not stream), so a failover need not wait out the old leader's lease.
        self.ack_age: float | None = 60.0

    def _check(self) -> None:
        if not self.reachable:
            raise aiohttp.ClientConnectionError(f"{self.name}: connection refused")

    def _body(self) -> dict[str, Any]:
        return {
            "lease": {"token": self.lease_token},
            "node_id": self.name,
            "role": self.role,
            "epoch": self.epoch,
            "last_epoch": self.last_epoch,
            "last_seq": self.last_seq,
            "received_seq": self.last_seq,
            "applied_seq": self.applied_seq,
            "durable_seq": self.last_seq,
            "leader": self.leader,
            "followers": [],
            **({} if self.role == "leader" else {"last_ack_seconds": self.ack_age}),
        }

    async def status(self) -> dict[str, Any]:
        self._check()
        up = self.upstream
        if up is not None and up.reachable and up.role == "leader":
            self.last_seq = self.applied_seq = min(up.last_seq, self.last_seq + self.rate)
            self.last_epoch = up.last_epoch
        self.lease_token += 1
        return self._body()

    async def promote(self, epoch: int, *, members: int | None = None) -> dict[str, Any]:
        self._check()
        self.calls.append(("promote", epoch))
        # As the node: a new epoch, or a retry by the member that leads at exactly this one
        # (with `promote_at_fenced_epoch`, also the epoch it was fenced at).
        relaxed = self.promote_at_fenced_epoch and self.role == "standby"
        if epoch < self.epoch or (epoch == self.epoch and self.role != "leader" and not relaxed):
            raise EpochRefused(f"epoch {epoch} refused at {self.epoch}")
        if not (self.role == "leader" and self.epoch == epoch):
            self.last_seq += 1  # the node opens its epoch with a no-op record
            self.applied_seq = self.last_seq
            self.last_epoch = epoch
        self.role, self.epoch, self.leader = "leader", epoch, None
        self.members_hint = members
        return self._body()

    async def confirm(self, epoch: int, *, lease_token: int | None = None) -> dict[str, Any]:
        self._check()
        self.calls.append(("confirm", epoch))
        self.lease_tokens.append(lease_token)
        if epoch != self.epoch or self.role != "leader":
            raise EpochRefused(f"not leading at epoch {epoch}")
        return self._body()

    async def follow(self, leader: str, epoch: int) -> dict[str, Any]:
        self._check()
        self.calls.append(("follow", (leader, epoch)))
        if epoch < self.epoch:
            raise EpochRefused(f"epoch {epoch} < {self.epoch}")
        self.role, self.epoch, self.leader = "follower", epoch, leader
        return self._body()

    async def fence(self, epoch: int) -> dict[str, Any]:
        """Standby at `epoch`; the answer carries the log position (what choosing needs)."""
        self._check()
        self.calls.append(("fence", epoch))
        if epoch < self.epoch:
            raise EpochRefused(f"epoch {epoch} < {self.epoch}")
        self.role, self.epoch, self.leader = "standby", epoch, None
        return self._body()

    async def close(self) -> None:
        return None
