"""Pure drift check: does a live object still carry every field we asked for?

The API server adds defaults and status, so "equal" is the wrong test; "our fields are a
subset of the live ones" is the right one. An apply is sent only on drift, which keeps an
operator that watches its own children from patching on every event.
"""

from __future__ import annotations

from typing import Any

from dvecdb_operator.quantity import InvalidQuantityError, parse_quantity

# Maps whose values are resource quantities, which the API server stores in canonical form
# (`2` as "2", "1.5" as "1500m", "1024Mi" as "1Gi"): compared by value, not by text.
QUANTITY_MAPS = frozenset({"limits", "requests"})


def contains(actual: Any, desired: Any, *, quantities: bool = False) -> bool:
    """True when every field in `desired` is present with the same value in `actual`."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return False
        # A None in `desired` means "absent" (a merge patch deletes the key).
        return all(
            contains(actual[k], v, quantities=quantities or k in QUANTITY_MAPS)
            if k in actual
            else v is None
            for k, v in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(contains(a, d) for a, d in zip(actual, desired, strict=True))
    if isinstance(desired, bool) or isinstance(actual, bool):
        return actual is desired
    if quantities and actual != desired:
        return _same_quantity(actual, desired)
    if isinstance(desired, int | float) and isinstance(actual, int | float):
        return float(actual) == float(desired)
    return bool(actual == desired)


def _same_quantity(actual: Any, desired: Any) -> bool:
    try:
        return parse_quantity(actual) == parse_quantity(desired)
    except InvalidQuantityError:
        return False


def drifted(actual: dict[str, Any] | None, desired: dict[str, Any]) -> bool:
    """Whether `desired` must be applied: the object is missing or lost one of our fields."""
    if actual is None:
        return True
    return not (
        contains(
            actual.get("metadata", {}).get("labels", {}), desired["metadata"].get("labels", {})
        )
        and contains(
            actual.get("metadata", {}).get("ownerReferences", []),
            desired["metadata"].get("ownerReferences", []),
        )
        and all(contains(actual.get(k), v) for k, v in desired.items() if k not in ("metadata",))
    )
