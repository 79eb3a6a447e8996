"""Where a search runs: the one pure planning function."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from dvecdb_node.search.plan import INLINE_SEARCH_SECONDS, Placement, needs_lease, place
from dvecdb_node.storage.filters import Clause, parse_filter
from dvecdb_node.storage.records import Float32Matrix

pytestmark = pytest.mark.unit

DEFAULT_EF = 64
CHEAP = INLINE_SEARCH_SECONDS / 100


@dataclass
class Query:
    queries: Float32Matrix
    ef: int | None = None
    clauses: list[Clause] | None = None
    consistency: str = "eventual"
    min_seq: int | None = None


def _rows(n: int) -> Float32Matrix:
    return np.zeros((n, 4), dtype=np.float32)


@pytest.mark.parametrize(
    ("query", "cost", "placement"),
    [
        (Query(_rows(1)), CHEAP, Placement.INLINE),
        (Query(_rows(1)), 0.0, Placement.INLINE),  # nothing measured yet
        (Query(_rows(1), consistency="strong"), CHEAP, Placement.INLINE),
        (Query(_rows(1), ef=DEFAULT_EF), CHEAP, Placement.INLINE),
        (Query(_rows(1), ef=DEFAULT_EF * 2), CHEAP, Placement.POOLED),
        (Query(_rows(1), clauses=parse_filter({"g": 1})), CHEAP, Placement.INLINE),
        (Query(_rows(1), clauses=parse_filter({"g": 1})), None, Placement.POOLED),  # unmeasured
        (Query(_rows(1), clauses=parse_filter({"g": 1})), INLINE_SEARCH_SECONDS, Placement.POOLED),
        (Query(_rows(1)), INLINE_SEARCH_SECONDS, Placement.POOLED),
        (Query(_rows(200)), CHEAP, Placement.POOLED),  # 200 rows x cost > a thread hop
        (Query(_rows(1), consistency="quorum"), CHEAP, Placement.WAIT),
        (Query(_rows(1), min_seq=3), CHEAP, Placement.WAIT),
    ],
)
def test_place(query: Query, cost: float | None, placement: Placement) -> None:
    assert place(query, DEFAULT_EF, cost) is placement


def test_after_its_wait_a_search_is_placed_by_its_cost() -> None:
    assert place(Query(_rows(1), min_seq=3), DEFAULT_EF, CHEAP, waited=True) is Placement.INLINE
    quorum = Query(_rows(1), consistency="quorum", clauses=parse_filter({"g": 1}))
    assert place(quorum, DEFAULT_EF, None, waited=True) is Placement.POOLED
    assert place(quorum, DEFAULT_EF, CHEAP, waited=True) is Placement.INLINE


@pytest.mark.parametrize(
    ("consistency", "lease"), [("eventual", False), ("strong", True), ("quorum", True)]
)
def test_needs_lease(consistency: str, lease: bool) -> None:
    assert needs_lease(consistency) is lease
