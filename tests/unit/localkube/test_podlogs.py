"""`localkube logs [--previous]`: which run of a container's log is shown."""

from __future__ import annotations

import pytest

from localkube.podlogs import runs, select

pytestmark = pytest.mark.unit


def run(n: int, text: str) -> str:
    return f"--- localkube: start node at T{n}\n{text}\n"


def test_runs_split_at_each_start_line() -> None:
    text = run(1, "a") + "--- localkube: stopping node: bye\n" + run(2, "b")
    assert runs(text) == [run(1, "a") + "--- localkube: stopping node: bye\n", run(2, "b")]
    assert runs("") == []


def test_current_is_the_last_run_and_previous_the_one_before_it() -> None:
    pod = run(1, "first") + run(2, "second")
    assert select([pod], previous=False) == run(2, "second")
    assert select([pod], previous=True) == run(1, "first")


def test_previous_of_a_recreated_pod_is_the_last_run_of_the_pod_it_replaced() -> None:
    old, new = run(1, "old-a") + run(2, "old-b"), run(3, "new")
    assert select([old, new], previous=True) == run(2, "old-b")
    assert select([new], previous=True) is None  # kubectl: previous container not found
