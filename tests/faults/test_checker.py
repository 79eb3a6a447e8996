"""The checker on literal histories: clean ones pass, each broken promise is caught."""

from __future__ import annotations

import pytest

from .checker import check, max_concurrent_faulty
from .history import Op, Replica

pytestmark = pytest.mark.unit


def w(record: str, ack: str, t0: float, t1: float, outcome: str = "ok") -> Op:
    return Op("w0", "write", t0, t1, outcome, node="db-0", id=record, ack=ack)  # type: ignore[arg-type]


def r(consistency: str, t0: float, t1: float, ids: list[str], of: str | None = None) -> Op:
    return Op("r0", "read", t0, t1, "ok", consistency=consistency, ids=ids, of=of)


def fault(kind: str, t0: float, t1: float | None, *members: str) -> Op:
    return Op("nemesis", "fault", t0, t1, "info", kind=kind, members=list(members))


def replicas(
    ids: set[str], *, seq: int = 9, epoch: int = 2, changed: dict[str, Replica] | None = None
) -> dict[str, Replica]:
    final = {
        "db-0": Replica(frozenset(ids), seq, epoch, "follower", len(ids)),
        "db-1": Replica(frozenset(ids), seq, epoch, "leader", len(ids)),
        "db-2": Replica(frozenset(ids), seq, epoch, "follower", len(ids)),
    }
    final.update(changed or {})
    return final


def test_a_clean_history_is_valid_and_counted() -> None:
    ops = [
        w("a", "one", 0, 1),
        w("b", "quorum", 1, 2),
        w("c", "leader", 2, 3, "info"),
        w("d", "one", 3, 4, "fail"),
        fault("kill", 1.5, 3.0, "db-0"),
        r("strong", 2.5, 2.7, ["a", "b"]),
        r("min_seq", 2.5, 2.6, ["b"], of="b"),
    ]
    result = check(ops, replicas({"a", "b", "c"}))
    assert result.valid, result.problems()
    assert dict(result.acked) == {"one": 1, "quorum": 1}
    assert result.indeterminate_kept == 1
    assert result.faults["kill"] == 1 and result.max_faulty == 1


def test_an_acknowledged_one_write_missing_within_budget_is_a_loss() -> None:
    ops = [w("a", "one", 0, 1), w("b", "one", 1, 2), fault("kill", 1.5, 4.0, "db-1")]
    result = check(ops, replicas({"a"}))
    assert not result.valid
    assert result.lost == [("b", "one")]


def test_one_losses_beyond_one_faulty_member_are_allowed_but_quorum_losses_never() -> None:
    ops = [
        w("a", "one", 0, 1),
        w("b", "quorum", 0, 1),
        fault("kill", 0.5, 3.0, "db-1"),
        fault("pause", 2.0, 4.0, "db-2"),  # overlaps: two members faulty at once
    ]
    result = check(ops, replicas(set()))
    assert result.max_faulty == 2
    assert result.lost == [("b", "quorum")]
    assert result.lost_allowed == [("a", "one")]


def test_leader_acks_may_be_lost() -> None:
    result = check([w("a", "leader", 0, 1)], replicas(set()))
    assert result.valid and result.lost_allowed == [("a", "leader")]


def test_a_record_never_attempted_or_refused_is_a_phantom() -> None:
    ops = [w("a", "one", 0, 1), w("x", "one", 0, 1, "fail")]
    final = replicas(
        {"a"}, changed={"db-2": Replica(frozenset({"a", "x", "zz"}), 9, 2, "follower", 3)}
    )
    result = check(ops, final)
    assert ("db-2", "x") in result.phantoms and ("db-2", "zz") in result.phantoms
    assert any("db-2 vs db-1" in d for d in result.divergence)
    assert not result.valid


def test_a_read_seeing_a_record_before_it_was_written_is_a_phantom() -> None:
    ops = [r("eventual", 0, 1, ["a"]), w("a", "one", 2, 3)]
    result = check(ops, replicas({"a"}))
    assert result.phantoms == [("read#0", "a")]


def test_replicas_at_different_positions_or_unreadable_are_not_identical() -> None:
    final = replicas(
        {"a"},
        changed={
            "db-0": Replica(frozenset({"a"}), 8, 2, "follower", 1),
            "db-2": Replica(None),
        },
    )
    result = check([w("a", "one", 0, 1)], final)
    assert not result.valid
    assert any("db-0 at (seq 8" in d for d in result.divergence)
    assert "db-2 could not be read" in result.divergence


def test_two_leaders_after_healing_is_reported() -> None:
    final = replicas({"a"}, changed={"db-0": Replica(frozenset({"a"}), 9, 2, "leader", 1)})
    result = check([w("a", "one", 0, 1)], final)
    assert any("2 readable leaders" in d for d in result.divergence)


def test_a_strong_read_missing_a_write_acknowledged_before_it_began_is_stale() -> None:
    ops = [
        w("a", "one", 0, 1),
        w("b", "one", 1.5, 3),  # acknowledged after the read began: it may be missing
        r("strong", 2, 4, ["b"]),  # misses "a", acknowledged at 1
        r("strong", 2, 4, ["a"]),
    ]
    result = check(ops, replicas({"a", "b"}))
    assert result.stale_strong == [2]


def test_a_strong_read_missing_a_lost_leader_write_is_not_also_stale() -> None:
    ops = [w("a", "leader", 0, 1), r("strong", 2, 3, [])]
    result = check(ops, replicas(set()))
    assert result.valid, result.problems()


def test_a_min_seq_read_served_without_its_write_is_stale() -> None:
    ops = [w("a", "leader", 0, 1), r("min_seq", 2, 3, [], of="a")]
    result = check(ops, replicas(set()))
    assert result.stale_min_seq == [1]
    assert not result.valid


def test_a_fault_still_open_at_the_end_lasts_to_the_end() -> None:
    faults = [fault("kill", 0, None, "db-0"), fault("partition", 5, 6, "db-1")]
    assert max_concurrent_faulty(faults, end=10) == 2
    assert max_concurrent_faulty([*faults[:1], fault("pause", 11, 12, "db-1")], end=10) == 1


def test_two_acknowledged_writes_with_one_token_mean_two_leaders_in_one_epoch() -> None:
    a, b, c = w("a", "leader", 0, 1), w("b", "leader", 0, 1), w("c", "one", 1, 2)
    a.epoch, a.seq, b.epoch, b.seq, c.epoch, c.seq = 3, 10, 3, 10, 3, 11
    result = check([a, b, c], replicas({"a", "b", "c"}))
    assert result.token_conflicts == [(3, 10)]
    assert not result.valid


def test_a_member_told_of_a_newer_epoch_acknowledges_nothing_at_the_old_one() -> None:
    fenced = Op("operator", "admin", 1.0, 1.1, "ok", node="db-0", kind="fence", epoch=3)
    before, after, elsewhere = (
        w("a", "leader", 0.5, 1.5),
        w("b", "leader", 1.2, 1.3),
        w("c", "leader", 1.2, 1.3),
    )
    before.epoch, after.epoch, elsewhere.epoch = 2, 2, 2
    elsewhere.node = "db-1"
    lost_fence = Op("operator", "admin", 0.1, 0.2, "info", node="db-1", kind="fence", epoch=3)
    result = check([fenced, lost_fence, before, after, elsewhere], replicas({"a", "b", "c"}))
    assert result.acked_after_newer_epoch == [("b", "db-0", 2, 3)]
    assert not result.valid
