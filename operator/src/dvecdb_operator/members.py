"""All I/O with the members (the nodes): status reads and admin commands.

It goes through the client distribution (`dvecdb_client.NodeClient`, none of the node's
code), typed by a Protocol so tests pass fakes. Unreachable members are data, not
exceptions: `observe` returns an observation with `reachable=False` and the error text.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, cast

import aiohttp

from dvecdb_client import NodeClient, NodeError
from dvecdb_operator import constants as c
from dvecdb_operator.observation import FollowerPosition, MemberObservation


class NodeClientProtocol(Protocol):
    async def status(self) -> dict[str, Any]: ...
    async def promote(self, epoch: int, *, members: int | None = None) -> dict[str, Any]: ...
    async def follow(self, leader: str, epoch: int) -> dict[str, Any]: ...
    async def fence(self, epoch: int) -> dict[str, Any]: ...
    async def confirm(self, epoch: int, *, lease_token: int | None = None) -> dict[str, Any]: ...
    async def close(self) -> None: ...


ClientFactory = Callable[[str], NodeClientProtocol]


def client_factory(
    *,
    token: str | None,
    timeout: float,
    session: aiohttp.ClientSession | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> ClientFactory:
    """A factory of real node clients sharing one session and the cluster token; https
    members are verified against `ssl_context` (the cluster's CA)."""

    def make(base_url: str) -> NodeClientProtocol:
        return cast(
            NodeClientProtocol,
            # No retries inside a pass: the monitor polls again next interval, and a
            # partitioned member must cost one timeout per pass, not several.
            NodeClient(
                base_url,
                token=token,
                timeout=timeout,
                session=session,
                retries=0,
                ssl=True if ssl_context is None else ssl_context,
            ),
        )

    return make


def describe_error(exc: BaseException) -> str:
    """A one-line reason for events and status messages."""
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    message = getattr(exc, "message", None) or str(exc)
    if code and status:
        return f"{status} {code}: {message}"
    if code:
        return f"{code}: {message}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# What "the member did not answer usefully" looks like; anything else is a bug and propagates.
def _expected_errors() -> tuple[type[BaseException], ...]:
    return (
        aiohttp.ClientError,
        asyncio.TimeoutError,
        OSError,
        ValueError,
        KeyError,
        NodeError,
    )


STALE_EPOCH = "stale_epoch"


@dataclass(frozen=True)
class AdminError:
    """A failed admin call: its text for events, and the node's error code when it answered."""

    text: str
    code: str | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def epoch_refused(self) -> bool:
        """The member refused the epoch as used up (or lower than one it has seen)."""
        return self.code == STALE_EPOCH


@dataclass(frozen=True)
class PodView:
    """The parts of a pod the observation needs (filled by kube.py from the API)."""

    name: str
    ordinal: int
    ip: str | None
    ready: bool
    terminating: bool
    revision: str | None
    role_label: str | None
    port: int = c.NODE_PORT
    scheme: str = "http"  # https: the node serves TLS (spec.tls)
    uid: str | None = None
    restarts: int | None = None  # the node container's restart count, when reported
    running: bool | None = None  # pod phase Running and the container running, when reported


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    return int(value) if value is not None else 0


def _pod_fields(pod: PodView) -> dict[str, Any]:
    return {
        "name": pod.name,
        "ordinal": pod.ordinal,
        "pod_ip": pod.ip,
        "port": pod.port,
        "scheme": pod.scheme,
        "pod_ready": pod.ready,
        "terminating": pod.terminating,
        "revision": pod.revision,
        "role_label": pod.role_label,
        "pod_uid": pod.uid,
        "restarts": pod.restarts,
        "pod_running": pod.running,
    }


def pod_of(member: MemberObservation) -> PodView:
    """The pod facts of an observed member (to parse a later answer of the same member)."""
    return PodView(
        name=member.name,
        ordinal=member.ordinal,
        ip=member.pod_ip,
        ready=member.pod_ready,
        terminating=member.terminating,
        revision=member.revision,
        role_label=member.role_label,
        port=member.port,
        scheme=member.scheme,
        uid=member.pod_uid,
        restarts=member.restarts,
        running=member.pod_running,
    )


def parse_status(pod: PodView, data: Mapping[str, Any]) -> MemberObservation:
    """Turn a `GET /v1/status` body (also every admin answer) into a member observation
    (ValueError when malformed)."""
    followers = tuple(
        FollowerPosition(
            node_id=str(f.get("node_id", "")),
            received_seq=_int(f, "received_seq"),
            applied_seq=_int(f, "applied_seq"),
            lag_seq=_int(f, "lag_seq"),
            lag_seconds=float(f.get("lag_seconds") or 0.0),
        )
        for f in data.get("followers") or ()
        if isinstance(f, Mapping)
    )
    role = data.get("role")
    leader = data.get("leader")
    last_seq = _int(data, "last_seq")
    lease = data.get("lease")
    token = lease.get("token") if isinstance(lease, Mapping) else None
    return MemberObservation(
        **_pod_fields(pod),
        reachable=True,
        role=str(role) if role is not None else None,
        epoch=_int(data, "epoch"),
        last_epoch=_int(data, "last_epoch"),
        last_seq=last_seq,
        received_seq=_int(data, "received_seq") if "received_seq" in data else last_seq,
        applied_seq=_int(data, "applied_seq"),
        durable_seq=_int(data, "durable_seq"),
        store_ready=data.get("ready") is not False,
        leader_url=str(leader) if leader else None,
        followers=followers,
        lease_token=token if isinstance(token, int) and not isinstance(token, bool) else None,
        last_ack_seconds=_seconds(data.get("last_ack_seconds")),
    )


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0.0, float(value))


def unreachable(pod: PodView, error: str) -> MemberObservation:
    return MemberObservation(**_pod_fields(pod), error=error)


class Members:
    """Clients for one cluster's members, keyed by base URL and reused across passes."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._clients: dict[str, NodeClientProtocol] = {}

    def client(self, url: str) -> NodeClientProtocol:
        if url not in self._clients:
            self._clients[url] = self._factory(url)
        return self._clients[url]

    async def use(self, factory: ClientFactory) -> None:
        """Make the next calls with clients from `factory` (a rotated cluster token), keeping
        this object, and so the monitor's state, as it is."""
        old = list(self._clients.values())
        self._factory = factory
        self._clients = {}
        for client in old:
            await client.close()

    async def observe_one(self, pod: PodView) -> MemberObservation:
        if not pod.ip:
            return unreachable(pod, "pod has no IP yet")
        url = MemberObservation(
            name=pod.name, ordinal=pod.ordinal, pod_ip=pod.ip, port=pod.port, scheme=pod.scheme
        ).url
        assert url is not None
        try:
            data = await self.client(url).status()
            return parse_status(pod, data)
        except _expected_errors() as exc:
            return unreachable(pod, describe_error(exc))

    async def observe(self, pods: Sequence[PodView]) -> tuple[MemberObservation, ...]:
        """Every member's status, concurrently; a slow member costs one timeout, not N."""
        return tuple(await asyncio.gather(*(self.observe_one(p) for p in pods)))

    async def _admin(
        self, url: str, call: Callable[[NodeClientProtocol], Awaitable[Any]]
    ) -> AdminError | None:
        try:
            await call(self.client(url))
        except _expected_errors() as exc:
            code = getattr(exc, "code", None)
            return AdminError(describe_error(exc), code if isinstance(code, str) else None)
        return None

    async def promote(
        self, url: str, epoch: int, *, members: int | None = None
    ) -> AdminError | None:
        """Promote at `epoch` (with the cluster size, for quorum acks); None or the error,
        which tells a refused epoch from a call whose outcome is unknown."""
        return await self._admin(url, lambda cl: cl.promote(epoch, members=members))

    async def follow(self, url: str, leader_url: str, epoch: int) -> AdminError | None:
        return await self._admin(url, lambda cl: cl.follow(leader_url, epoch))

    async def fence(self, member: MemberObservation, epoch: int) -> MemberObservation | AdminError:
        """Fence `member` at `epoch`: the member as its answer reports it (role, epoch and
        log position: what a candidate is chosen by), or the error."""
        if member.url is None:
            return AdminError("pod has no IP")
        answer: dict[str, Any] = {}

        async def call(client: NodeClientProtocol) -> None:
            answer.update(await client.fence(epoch) or {})

        error = await self._admin(member.url, call)
        if error is not None:
            return error
        if "last_seq" not in answer:  # no position in the answer: the observed one stands
            return replace(member, role=c.ROLE_STANDBY, epoch=epoch, leader_url=None)
        try:
            fenced = parse_status(pod_of(member), answer)
        except (ValueError, TypeError) as exc:
            return AdminError(f"unreadable fence answer: {exc}")
        return replace(fenced, role=c.ROLE_STANDBY, epoch=epoch, leader_url=None)

    async def confirm(
        self, url: str, epoch: int, *, lease_token: int | None = None
    ) -> AdminError | None:
        """Renew the leader's lease at `epoch`, from the moment it gave `lease_token` (in the
        status this pass read): a confirmation delayed on its way renews nothing extra."""
        return await self._admin(url, lambda cl: cl.confirm(epoch, lease_token=lease_token))

    async def forget(self, keep: set[str]) -> None:
        """Close clients of members that are gone (pod IPs change on restart)."""
        for url in [u for u in self._clients if u not in keep]:
            await self._clients.pop(url).close()

    async def close(self) -> None:
        await self.forget(set())
