"""Log agreement after failover, decided from epochs alone (property-tested)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dvecdb_node.replication.agreement import decide, last_seq_at_or_below

pytestmark = pytest.mark.unit


def _log(epochs: list[int]) -> dict[int, int]:
    """seq -> epoch for a log whose record n (from 1) has epochs[n-1]."""
    return {seq: epoch for seq, epoch in enumerate(epochs, start=1)}


def _decide(follower: dict[int, int], leader: dict[int, int], first: int = 1):  # type: ignore[no-untyped-def]
    prev = max(follower, default=0)
    last = max(leader, default=0)

    def epoch_at(seq: int) -> int | None:
        return leader.get(seq) if seq >= first else None

    def end_of_epoch(epoch: int, cap: int) -> int | None:
        if cap <= 0:
            return 0
        point = last_seq_at_or_below(epoch, first, min(cap, last), lambda s: leader[s])
        if point is None:
            return 0 if first == 1 else None
        return point

    return decide(
        prev,
        follower.get(prev, 0),
        leader_last_seq=last,
        epoch_at=epoch_at,
        end_of_epoch=end_of_epoch,
    )


def test_matching_prefix_streams() -> None:
    leader = _log([1, 1, 2, 2])
    assert _decide(_log([1, 1, 2]), leader).action == "stream"
    assert _decide({}, leader).action == "stream"


def test_old_leader_tail_is_truncated_to_the_common_prefix() -> None:
    # Old leader wrote 3..5 at epoch 1 that the new leader (epoch 2 from seq 3) never got.
    old = _log([1, 1, 1, 1, 1])
    new = _log([1, 1, 2, 2])
    answer = _decide(old, new)
    assert (answer.action, answer.truncate_to) == ("truncate", 2)


def test_follower_ahead_of_leader_at_the_same_epoch_is_cut_back() -> None:
    answer = _decide(_log([1, 1, 1, 1]), _log([1, 1]))
    assert (answer.action, answer.truncate_to) == ("truncate", 2)


def test_unretained_history_needs_a_snapshot() -> None:
    answer = _decide(_log([1, 1, 1]), _log([1, 2, 2, 2, 2]), first=3)
    assert answer.action == "snapshot"


@st.composite
def _diverged(draw: st.DrawFn) -> tuple[list[int], list[int], int]:
    """Two logs sharing a prefix, then each going on at its own (distinct) epochs."""
    common = draw(st.lists(st.integers(1, 3), max_size=8).map(sorted))
    base = common[-1] if common else 1
    follower_epoch = draw(st.integers(base, base + 2))
    leader_epoch = draw(st.integers(follower_epoch + 1, follower_epoch + 3))
    follower_tail = [follower_epoch] * draw(st.integers(0, 6))
    leader_tail = [leader_epoch] * draw(st.integers(0, 6))
    return common + follower_tail, common + leader_tail, len(common)


@given(_diverged())
def test_rounds_converge_on_the_true_agreement_point(
    case: tuple[list[int], list[int], int],
) -> None:
    follower_epochs, leader_epochs, common = case
    follower, leader = _log(follower_epochs), _log(leader_epochs)
    for _ in range(len(follower) + 2):
        answer = _decide(follower, leader)
        if answer.action == "stream":
            break
        assert answer.action == "truncate"
        assert answer.truncate_to >= common, "never cuts below the shared prefix"
        assert answer.truncate_to < max(follower), "each round makes progress"
        follower = {s: e for s, e in follower.items() if s <= answer.truncate_to}
    else:
        raise AssertionError("did not converge")
    prev = max(follower, default=0)
    assert all(follower[s] == leader[s] for s in range(1, prev + 1))
    assert prev >= min(common, prev)


def test_binary_search_for_the_end_of_an_epoch() -> None:
    epochs = _log([1, 1, 2, 2, 2, 4])
    at = epochs.__getitem__
    assert last_seq_at_or_below(1, 1, 6, at) == 2
    assert last_seq_at_or_below(3, 1, 6, at) == 5
    assert last_seq_at_or_below(9, 1, 6, at) == 6
    assert last_seq_at_or_below(0, 1, 6, at) is None
    assert last_seq_at_or_below(2, 1, 3, at) == 3
