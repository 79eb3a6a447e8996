"""Ack requirements, lag arithmetic and the write clock."""

from __future__ import annotations

import pytest

from dvecdb_node.replication.acks import (
    WriteClock,
    acked_by,
    followers_needed,
    lag_seq,
    member_count,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("level", "members", "needed"),
    [
        ("leader", 3, 0),
        ("one", 3, 1),
        ("quorum", 3, 1),
        ("quorum", 5, 2),
        ("quorum", 4, 2),
        ("one", 1, 0),
        ("quorum", 1, 0),
        ("quorum", 2, 1),
    ],
)
def test_followers_needed(level: str, members: int, needed: int) -> None:
    assert followers_needed(level, members) == needed


def test_unknown_level_is_an_error() -> None:
    with pytest.raises(ValueError):
        followers_needed("all", 3)


def test_a_clustered_leader_without_followers_still_needs_one() -> None:
    # This is what fences a stale leader: it cannot count itself as the whole cluster.
    members = member_count(cluster_size=0, known_followers=0, standalone=False)
    assert followers_needed("one", members) == 1
    assert followers_needed("quorum", members) == 1


def test_standalone_without_followers_acks_alone() -> None:
    members = member_count(cluster_size=0, known_followers=0, standalone=True)
    assert followers_needed("one", members) == 0
    assert followers_needed("quorum", members) == 0


def test_configured_size_beats_what_was_seen() -> None:
    assert member_count(cluster_size=5, known_followers=1, standalone=False) == 5
    assert member_count(cluster_size=3, known_followers=4, standalone=False) == 5


def test_acked_by_and_lag() -> None:
    assert acked_by([10, 5, 7], 7) == 2
    assert acked_by([], 1) == 0
    assert lag_seq(100, 90) == 10
    assert lag_seq(100, 120) == 0


def test_write_clock_lag_seconds() -> None:
    clock = WriteClock()
    for seq, when in [(1, 10.0), (2, 11.0), (3, 12.5)]:
        clock.record(seq, when)
    assert clock.lag_seconds(applied_seq=3, leader_last_seq=3, now=20.0) == 0.0
    # The oldest unapplied write (seq 2) was made at 11.0.
    assert clock.lag_seconds(applied_seq=1, leader_last_seq=3, now=20.0) == pytest.approx(9.0)
    clock.trim_through(1)
    assert len(clock) == 2
    assert clock.lag_seconds(applied_seq=2, leader_last_seq=3, now=13.0) == pytest.approx(0.5)


def test_write_clock_is_bounded_and_orders_late_records() -> None:
    clock = WriteClock(capacity=3)
    for seq in (1, 2, 4, 3, 5):
        clock.record(seq, float(seq))
    assert len(clock) == 3
    assert clock.lag_seconds(applied_seq=2, leader_last_seq=5, now=10.0) == pytest.approx(7.0)
