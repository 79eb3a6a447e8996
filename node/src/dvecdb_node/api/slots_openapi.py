"""OpenAPI paths of resharding's ``/v1/admin/slots/*`` (merged into ``/openapi.json``).

The bodies are ``api.schema``'s types (the handlers decode with the same ones); the cluster
token they need is added by ``api.openapi`` from the node's keys.
"""

from __future__ import annotations

from typing import Any

from dvecdb_node.api import schema
from dvecdb_node.api.openapi import body, errors

_LEADER = (
    " Leader only (else 409 not_leader with leader). Acknowledged at ack=quorum (503 "
    "ack_timeout: the change may or may not persist)."
)


def _json(name: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}},
    }


def _query(name: str, required: bool, schema_: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema_,
    }


_SLOTS = _query(
    "slots",
    True,
    {"type": "string", "pattern": schema.SLOT_RANGES_PATTERN},
    "Comma-separated slots or inclusive ranges, e.g. 0-1023,4000 (a reversed M-N is N-M)",
)
_COLLECTION = _query(
    "collection", True, {"type": "string", "pattern": schema.NAME_PATTERN}, "The collection"
)

PATHS: dict[str, Any] = {
    "/v1/admin/slots/fence": {
        "post": {
            "summary": "Fence (or unfence) hash slots: from this record on, upserts and deletes "
            "with any id in a fenced slot are refused whole with 409 slot_moved {slots, owner, "
            "map_version}. A log record: followers, restarts, snapshots and a promoted "
            "follower keep it. Idempotent." + _LEADER,
            "requestBody": body("SlotFenceChange"),
            "responses": {
                "200": _json("SlotWritten", "The fence record's seq and epoch"),
                **errors("400", "409", "503"),
            },
        }
    },
    "/v1/admin/slots/apply": {
        "post": {
            "summary": "Resharding's import: upsert, then delete, items of a collection "
            "whatever the fence (the upsert's validation and limits; deleting a missing id "
            "is fine)." + _LEADER,
            "requestBody": body("SlotApply"),
            "responses": {
                "200": _json("SlotApplied", "The last record's seq and epoch; items touched"),
                **errors("400", "404", "409", "413", "503"),
            },
        }
    },
    "/v1/admin/slots/export": {
        "get": {
            "summary": "The collection's items in these slots as NDJSON, streamed: first "
            '{"seq", "epoch"} (the cut: every item is at least as new as seq; replay the '
            'slot log from seq+1), then {"id", "vector", "metadata"} per item, last {"end": '
            'true, "count"} (a stream without it was cut short). Leader only.',
            "parameters": [_COLLECTION, _SLOTS],
            "responses": {
                "200": {
                    "description": "NDJSON lines",
                    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                },
                **errors("400", "404", "409", "503"),
            },
        }
    },
    "/v1/admin/slots/log": {
        "get": {
            "summary": "The upserts and deletes logged from from_seq up to commit_seq (the "
            "highest seq a majority holds; at most limit records read), each cut down to the "
            "ids in the slots (ops left empty are omitted); continue at next_seq. 410 "
            "snapshot_required when the log no longer holds from_seq. Leader only.",
            "parameters": [
                _SLOTS,
                _query(
                    "from_seq",
                    True,
                    {"type": "integer", "minimum": 1, "maximum": schema.MAX_INT64},
                    "First seq to read",
                ),
                _query(
                    "limit",
                    False,
                    {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 1000},
                    "Most log records to read",
                ),
            ],
            "responses": {
                "200": _json("SlotLog", "Ops, next_seq and commit_seq"),
                **errors("400", "409", "410", "503"),
            },
        }
    },
    "/v1/admin/slots/purge": {
        "post": {
            "summary": "Delete every item in these slots (of all collections, or the one "
            "named) as logged deletes, whatever the fence; the fence stays. Idempotent." + _LEADER,
            "requestBody": body("SlotPurge"),
            "responses": {
                "200": _json("SlotPurged", "The last delete's seq and epoch; items deleted"),
                **errors("400", "404", "409", "503"),
            },
        }
    },
}
