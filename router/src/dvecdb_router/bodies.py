"""Request bodies the router reads and rewrites: pure, no I/O.

A search body keeps its form (JSON, or the client's binary ``application/x-dvec-queries``);
the router only edits its options: it takes out its own fields (``allow_partial``,
``min_token``) and sets each shard's ``min_seq``/``min_epoch``. An upsert or delete is split by
the owning shard of each id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from dvecdb_client import querybody


class BodyError(ValueError):
    """The body is not one the router can route (answered 400 with ``code``)."""

    def __init__(self, message: str, code: str = "invalid_input") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SearchBody:
    options: dict[str, Any]
    rebuild: Callable[[dict[str, Any]], bytes]
    content_type: str
    raw: bytes  # as the client sent it: forwarded as is when no option is changed

    @property
    def k(self) -> int:
        k = self.options.get("k", 10)
        return k if isinstance(k, int) and not isinstance(k, bool) else 10


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"the body is not JSON: {exc}", code="invalid_json") from exc
    if not isinstance(doc, dict):
        raise BodyError("the body must be a JSON object")
    return doc


def parse_search(raw: bytes, content_type: str | None) -> SearchBody:
    if content_type == querybody.CONTENT_TYPE:
        try:
            count, dim, options_len = querybody.read_header(raw)
            matrix, extra = querybody.sections(raw, count, dim, options_len)
        except querybody.QueryBodyError as exc:
            raise BodyError(str(exc)) from exc
        options = parse_json_object(extra) if options_len else {}

        def rebuild_binary(new: dict[str, Any]) -> bytes:
            return querybody.join(count, dim, matrix, orjson.dumps(new) if new else b"")

        return SearchBody(options, rebuild_binary, querybody.CONTENT_TYPE, raw)
    return SearchBody(parse_json_object(raw), orjson.dumps, "application/json", raw)


def ids_of(items: object, field: str) -> list[str]:
    """The ids of an upsert's ``vectors`` (objects with ``id``) or a delete's ``ids``."""
    if not isinstance(items, list) or not items:
        raise BodyError(f"{field} must be a non-empty list")
    out: list[str] = []
    for item in items:
        item_id = item.get("id") if isinstance(item, dict) else item
        if field == "ids" and isinstance(item, dict):
            item_id = None
        if not isinstance(item_id, str) or not item_id:
            raise BodyError(f"every entry of {field} needs a non-empty string id")
        out.append(item_id)
    return out
