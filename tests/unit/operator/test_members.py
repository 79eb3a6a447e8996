"""Member I/O: status parsing, unreachable members as data, admin calls' errors as text."""

from __future__ import annotations

import asyncio

import pytest

from dvecdb_operator.members import (
    AdminError,
    Members,
    PodView,
    client_factory,
    describe_error,
    parse_status,
)
from dvecdb_operator.observation import MemberObservation
from tests.support.operator_fakes import FakeNode

pytestmark = pytest.mark.unit


def pod(ordinal: int, ip: str | None = None) -> PodView:
    return PodView(
        name=f"db-{ordinal}",
        ordinal=ordinal,
        ip=ip if ip is not None else f"10.0.0.{ordinal + 1}",
        ready=True,
        terminating=False,
        revision="r1",
        role_label=None,
    )


def test_parse_status_of_a_leader_with_followers() -> None:
    data = {
        "node_id": "db-0",
        "role": "leader",
        "epoch": 4,
        "last_seq": 120,
        "applied_seq": 119,
        "durable_seq": 118,
        "leader": None,
        "followers": [
            {
                "node_id": "db-1",
                "received_seq": 120,
                "applied_seq": 110,
                "lag_seq": 10,
                "lag_seconds": 0.5,
            }
        ],
    }
    obs = parse_status(pod(0), data)
    assert (obs.role, obs.epoch, obs.last_seq, obs.applied_seq, obs.durable_seq) == (
        "leader",
        4,
        120,
        119,
        118,
    )
    assert obs.reachable and obs.url == "http://10.0.0.1:8080"
    assert obs.followers[0].received_seq == 120 and obs.followers[0].lag_seconds == 0.5


def test_parse_status_rejects_malformed_numbers() -> None:
    with pytest.raises(ValueError):
        parse_status(pod(0), {"role": "leader", "epoch": "many"})


def test_ipv6_pod_url_is_bracketed() -> None:
    obs = parse_status(pod(0, ip="fd00::5"), {"role": "standby"})
    assert obs.url == "http://[fd00::5]:8080"


async def test_observe_marks_unreachable_and_ipless_members() -> None:
    nodes = {
        "http://10.0.0.1:8080": FakeNode("db-0", role="leader", epoch=1, seq=5),
        "http://10.0.0.2:8080": FakeNode("db-1"),
    }
    nodes["http://10.0.0.2:8080"].reachable = False
    members = Members(lambda url: nodes[url])
    observed = await members.observe([pod(0), pod(1), pod(2, ip="")])
    assert [o.reachable for o in observed] == [True, False, False]
    assert observed[0].last_seq == 5
    assert observed[1].error is not None and "connection refused" in observed[1].error
    assert observed[2].error == "pod has no IP yet"


async def test_observe_is_concurrent() -> None:
    waiting: set[str] = set()
    peak = 0

    class Slow(FakeNode):
        async def status(self) -> dict[str, object]:
            nonlocal peak
            waiting.add(self.name)
            peak = max(peak, len(waiting))
            await asyncio.sleep(0.05)
            waiting.discard(self.name)
            return await super().status()

    members = Members(lambda url: Slow(url))
    await members.observe([pod(i) for i in range(5)])
    assert peak == 5  # every member's status was awaited at once


async def test_admin_calls_return_error_text_instead_of_raising() -> None:
    node = FakeNode("db-1", epoch=3)
    members = Members(lambda url: node)
    assert await members.promote("http://x", 2) is not None  # epoch refused
    assert await members.promote("http://x", 4) is None
    assert node.role == "leader"
    assert await members.follow("http://x", "http://y", 5) is None
    assert node.leader == "http://y"
    node.reachable = False
    error = await members.fence(MemberObservation(name="db-1", ordinal=1, pod_ip="10.0.0.2"), 6)
    assert isinstance(error, AdminError) and "ClientConnectionError" in error.text


async def test_fence_answers_the_member_with_its_log_position() -> None:
    node = FakeNode("db-1", role="follower", epoch=3, seq=42)
    node.last_epoch = 2
    members = Members(lambda url: node)
    seen = MemberObservation(name="db-1", ordinal=1, pod_ip="10.0.0.2", reachable=True,
                             role="follower", epoch=3, last_seq=40, pod_uid="u")  # fmt: skip
    fenced = await members.fence(seen, 4)
    assert isinstance(fenced, MemberObservation)
    assert (fenced.role, fenced.epoch, fenced.last_epoch, fenced.last_seq) == ("standby", 4, 2, 42)
    assert fenced.pod_uid == "u" and fenced.fenced_at(4)
    refused = await members.fence(seen, 3)  # below the epoch it now holds
    assert isinstance(refused, AdminError) and refused.epoch_refused


async def test_forget_closes_clients_of_gone_members() -> None:
    closed: list[str] = []

    class Tracked(FakeNode):
        async def close(self) -> None:
            closed.append(self.name)

    members = Members(lambda url: Tracked(url))
    await members.observe([pod(0), pod(1)])
    await members.forget({"http://10.0.0.1:8080"})
    assert closed == ["http://10.0.0.2:8080"]
    await members.close()
    assert closed == ["http://10.0.0.2:8080", "http://10.0.0.1:8080"]


class CodedError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


@pytest.mark.parametrize(
    ("exc", "text"),
    [
        (CodedError(409, "stale_epoch", "epoch 1 is lower"), "409 stale_epoch: epoch 1 is lower"),
        (CodedError(0, "unreachable", "http://x: refused"), "unreachable: http://x: refused"),
        (TimeoutError(), "TimeoutError"),
        (OSError("boom"), "OSError: boom"),
    ],
)
def test_describe_error(exc: BaseException, text: str) -> None:
    assert describe_error(exc) == text


def test_client_factory_builds_node_clients_without_retries() -> None:
    make = client_factory(token="t0k", timeout=1.5)
    client = make("http://10.0.0.1:8080")
    assert type(client).__name__ == "NodeClient"
    assert client.token == "t0k"  # type: ignore[attr-defined]
    assert client.retries == 0  # type: ignore[attr-defined]
