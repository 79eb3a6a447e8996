"""The persisted epoch and the rules that refuse lower (or reused) epochs."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvecdb_node.errors import NodeError
from dvecdb_node.replication.epochs import EpochState, EpochStore, admin_refusal, peer_refusal

from .repl_helpers import make_manager

pytestmark = pytest.mark.unit


def test_store_round_trips_and_replaces_atomically(tmp_path: Path) -> None:
    store = EpochStore(tmp_path)
    assert store.load() == EpochState()
    store.save(EpochState(3, "follower", "http://10.0.0.1:8080"))
    store.save(EpochState(4, "leader", "http://10.0.0.2:8080"))
    assert EpochStore(tmp_path).load() == EpochState(4, "leader", "http://10.0.0.2:8080")
    assert [p.name for p in tmp_path.iterdir()] == ["replication.json"]


def test_unreadable_store_is_an_error_not_epoch_zero(tmp_path: Path) -> None:
    (tmp_path / "replication.json").write_text("{not json")
    with pytest.raises(RuntimeError):
        EpochStore(tmp_path).load()


@pytest.mark.parametrize("command", ["promote", "follow", "fence"])
def test_lower_epochs_are_refused(command: str) -> None:
    state = EpochState(5, "follower", "http://x")
    assert admin_refusal(command, 4, state)  # type: ignore[arg-type]
    assert admin_refusal(command, 0, EpochState())  # type: ignore[arg-type]
    assert admin_refusal(command, 6, state) is None  # type: ignore[arg-type]


def test_promote_needs_a_new_epoch_unless_it_already_led_it_or_was_fenced_at_it() -> None:
    assert admin_refusal("promote", 5, EpochState(5, "follower", "http://x"))
    assert admin_refusal("promote", 5, EpochState(5, "standby", None))
    assert admin_refusal("promote", 5, EpochState(5, "leader", "http://me")) is None
    # Fence, then choose: the candidate is promoted at the epoch it was fenced at.
    assert admin_refusal("promote", 5, EpochState(5, "fenced", None)) is None


async def test_a_member_fenced_at_an_epoch_can_be_promoted_at_it(tmp_path: Path) -> None:
    manager = await make_manager(tmp_path)
    try:
        await manager.fence(2)
        await manager.promote(2)
        assert (manager.role.role, manager.role.epoch) == ("leader", 2)
        await manager.fence(3)
        await manager.follow("http://127.0.0.1:9", 3)
        with pytest.raises(NodeError) as refused:
            await manager.promote(3)  # it follows a leader at 3: that epoch is taken
        assert refused.value.code == "stale_epoch"
    finally:
        await manager.close()
        await manager.engine.close()


def test_follow_and_fence_accept_the_current_epoch() -> None:
    state = EpochState(5, "leader", "http://me")
    assert admin_refusal("follow", 5, state) is None
    assert admin_refusal("fence", 5, state) is None


def test_peer_epochs() -> None:
    assert peer_refusal(2, 3)
    assert peer_refusal(3, 3) is None
    assert peer_refusal(4, 3) is None
