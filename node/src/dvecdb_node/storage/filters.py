"""Metadata filters: equality and ``in`` on flat metadata, answered from an inverted index.

A filter is ``{"key": value, "other": {"in": [v1, v2]}}``: every key must match (AND); a
value matches by JSON equality, so ``true`` never matches ``1`` and ``"1"`` never matches ``1``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Scalar = str | int | float | bool | None
_ValueKey = tuple[str, Any]


class FilterError(ValueError):
    """A filter is not of the supported form."""


def is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def value_key(value: Scalar) -> _ValueKey:
    """Hashable key with JSON equality: bools apart from numbers, 1 == 1.0."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return ("z", None)


@dataclass(frozen=True, slots=True)
class Clause:
    """``key`` must equal one of ``values``."""

    key: str
    values: frozenset[_ValueKey]


def parse_filter(raw: object) -> list[Clause]:
    """Validate a filter object into clauses; raises :class:`FilterError` with the reason."""
    if not isinstance(raw, Mapping):
        raise FilterError("filter must be an object")
    clauses: list[Clause] = []
    for key, cond in raw.items():
        if not isinstance(key, str) or not key:
            raise FilterError("filter keys must be non-empty strings")
        if isinstance(cond, Mapping):
            if set(cond) != {"in"}:
                raise FilterError(f"filter on {key!r}: only {{'in': [...]}} is supported")
            options = cond["in"]
            if not isinstance(options, list) or not all(is_scalar(v) for v in options):
                raise FilterError(f"filter on {key!r}: 'in' takes a list of scalars")
            clauses.append(Clause(key, frozenset(value_key(v) for v in options)))
        elif is_scalar(cond):
            clauses.append(Clause(key, frozenset([value_key(cond)])))
        else:
            raise FilterError(f"filter on {key!r}: value must be a scalar or {{'in': [...]}}")
    return clauses


def matches(metadata: Mapping[str, Any] | None, clauses: Iterable[Clause]) -> bool:
    """Whether one metadata object passes every clause."""
    meta = metadata or {}
    for clause in clauses:
        if clause.key not in meta:
            return False
        value = meta[clause.key]
        if not is_scalar(value) or value_key(value) not in clause.values:
            return False
    return True


class MetadataIndex:
    """Inverted index key -> value -> labels, so a filter costs set operations, not a scan."""

    def __init__(self) -> None:
        self._postings: dict[str, dict[_ValueKey, set[int]]] = {}

    def add(self, label: int, metadata: Mapping[str, Any] | None) -> None:
        for key, value in (metadata or {}).items():
            if is_scalar(value):
                self._postings.setdefault(key, {}).setdefault(value_key(value), set()).add(label)

    def remove(self, label: int, metadata: Mapping[str, Any] | None) -> None:
        for key, value in (metadata or {}).items():
            if not is_scalar(value):
                continue
            by_value = self._postings.get(key)
            if by_value is None:
                continue
            vk = value_key(value)
            labels = by_value.get(vk)
            if labels is None:
                continue
            labels.discard(label)
            if not labels:
                del by_value[vk]
                if not by_value:
                    del self._postings[key]

    def select(self, clauses: Iterable[Clause]) -> set[int]:
        """Labels whose metadata passes every clause."""
        result: set[int] | None = None
        for clause in sorted(clauses, key=lambda c: self._estimate(c)):
            by_value = self._postings.get(clause.key, {})
            matched: set[int] = set()
            for vk in clause.values:
                matched |= by_value.get(vk, set())
            result = matched if result is None else result & matched
            if not result:
                return set()
        return set() if result is None else result

    def _estimate(self, clause: Clause) -> int:
        by_value = self._postings.get(clause.key, {})
        return sum(len(by_value.get(vk, ())) for vk in clause.values)
