"""Where a search runs, decided once: inline, pooled, or after a wait.

- ``INLINE``: on the event loop, now. A search at the collection's default ef whose rows are
  expected to cost less than a thread hop (0.1-0.5 ms of wake-up). The fast lane answers such
  searches together, one index call per collection, ``k`` and filter.
- ``POOLED``: on the search threads, where hnswlib (which releases the GIL) runs them in
  parallel: a custom ef (a smaller one is index-wide state in hnswlib, so it takes the index
  exclusively), a filter not measured yet (its cost depends on how many labels it allows) and
  anything costlier.
- ``WAIT``: something must be awaited before the index is read (a quorum read confirms the
  leadership, a ``min_seq`` read waits for that record); plan again with ``waited=True``.

The decision is pure; the per-query cost comes from the searcher's measurements. Leadership is
not decided here: :func:`needs_lease` says which reads a member must be leader to answer.
"""

from __future__ import annotations

import enum
from typing import Protocol

from dvecdb_node.storage.filters import Clause
from dvecdb_node.storage.records import Float32Matrix

# A search expected to take less than this runs on the event loop.
INLINE_SEARCH_SECONDS = 0.0005


class Placement(enum.Enum):
    INLINE = "inline"
    POOLED = "pooled"
    WAIT = "wait"


class Query(Protocol):
    """What planning reads of a validated search (``api.validation.SearchRequest``)."""

    @property
    def queries(self) -> Float32Matrix: ...
    @property
    def ef(self) -> int | None: ...
    @property
    def clauses(self) -> list[Clause] | None: ...
    @property
    def consistency(self) -> str: ...
    @property
    def min_seq(self) -> int | None: ...


def needs_lease(consistency: str) -> bool:
    """Reads that only a leader within its lease may answer (409 ``not_leader`` elsewhere)."""
    return consistency in ("strong", "quorum")


def needs_wait(query: Query) -> bool:
    return query.min_seq is not None or query.consistency == "quorum"


def place(
    query: Query, default_ef: int, cost_per_query: float | None, *, waited: bool = False
) -> Placement:
    """Where ``query`` runs on a collection searched at ``default_ef``, whose recent searches
    like it (same filter, or none) cost ``cost_per_query`` seconds of CPU each (None: not
    measured yet); ``waited`` once its waits are over."""
    if not waited and needs_wait(query):
        return Placement.WAIT
    if runs_inline(len(query.queries), query.ef, default_ef, cost_per_query):
        return Placement.INLINE
    return Placement.POOLED


def runs_inline(rows: int, ef: int | None, default_ef: int, cost_per_query: float | None) -> bool:
    """A search at the default ef whose rows are known to cost less than a thread hop."""
    if cost_per_query is None or (ef is not None and ef != default_ef):
        return False
    return rows * cost_per_query < INLINE_SEARCH_SECONDS
