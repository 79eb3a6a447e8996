"""The nemesis's schedule: drawn from the seed alone, within the trial, within its budget."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from .nemesis import KINDS, plan

pytestmark = pytest.mark.unit


def test_a_seed_draws_the_same_schedule_every_time() -> None:
    assert plan(42, duration=4.0, mode="quorum") == plan(42, duration=4.0, mode="quorum")
    assert plan(42, duration=4.0, mode="quorum") != plan(43, duration=4.0, mode="quorum")


def test_one_mode_never_overlaps_faults() -> None:
    for seed in range(300):
        steps = plan(seed, duration=4.0, mode="one")
        assert steps, seed
        for before, after in itertools.pairwise(steps):
            assert after.at >= before.end, (seed, steps)


def test_faults_end_inside_the_trial_and_outlast_detection_when_there_is_room() -> None:
    for seed in range(300):
        for step in plan(seed, duration=4.0, mode="quorum", detection=1.0):
            assert 0 < step.at < step.end <= 4.0, (seed, step)
            if step.at < 2.0 and not (step.kind == "kill" and step.variant == 1):
                assert step.duration >= 1.3, (seed, step)


def test_quorum_mode_overlaps_two_members_and_never_two_leader_faults_at_once() -> None:
    overlapping = 0
    for seed in range(300):
        steps = plan(seed, duration=4.0, mode="quorum")
        for a, b in itertools.pairwise(steps):
            if b.at < a.end:
                overlapping += 1
                assert not (a.target == b.target == "leader"), (seed, steps)
    assert overlapping > 50


def test_every_kind_and_operator_restarts_mid_failover_are_drawn() -> None:
    kinds: Counter[str] = Counter()
    restarts = []
    for seed in range(300):
        for step in plan(seed, duration=4.0, mode="one", detection=1.0):
            kinds[step.kind] += 1
            if step.operator_restart_after is not None:
                restarts.append(step)
    assert set(kinds) == set(KINDS)
    assert restarts and all(s.target == "leader" for s in restarts)
    assert all(s.operator_restart_after >= 1.0 for s in restarts)  # type: ignore[operator]
