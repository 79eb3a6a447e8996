"""OpenAPI paths of the admin and replication endpoints (merged into ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_SECURED: list[dict[str, list[str]]] = [{"clusterToken": []}]


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*extra: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "400": {"description": "Invalid input", **_json(_ERROR)},
        "401": {"description": "Missing cluster token", **_json(_ERROR)},
        "403": {"description": "Wrong cluster token", **_json(_ERROR)},
    }
    for code in extra:
        out[code] = {"description": "See the error code", **_json(_ERROR)}
    return out


def _admin(summary: str, required: list[str], props: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "security": _SECURED,
            "requestBody": {
                "required": True,
                **_json({"type": "object", "required": required, "properties": props}),
            },
            "responses": {
                "200": {
                    "description": "The node's status after the change, with its log positions "
                    "(role, epoch, last_epoch, last_seq, received_seq, applied_seq)",
                    **_json({"$ref": "#/components/schemas/Status"}),
                },
                **_errors("409", "503"),
            },
        }
    }


_EPOCH = {"type": "integer", "minimum": 1}


def _query(name: str, required: bool, kind: str = "integer") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": {"type": kind}}


PATHS: dict[str, Any] = {
    "/v1/admin/promote": _admin(
        "Become leader at this epoch (409 stale_epoch unless above the highest seen, or a "
        "retry by the node that already leads at it, or for the node fenced at it). Optional "
        "members: the cluster size that ack=quorum takes a majority of. Optional lease_token "
        "(the lease_token of the /v1/status the operator decided on): the new leader's lease "
        "runs from it, so a promote that arrives late starts a lapsed lease.",
        ["epoch"],
        {
            "epoch": _EPOCH,
            "members": {"type": "integer", "minimum": 1},
            "lease_token": {"type": "integer", "minimum": 0},
        },
    ),
    "/v1/admin/follow": _admin(
        "Follow the leader at this URL and epoch (409 stale_epoch below the highest seen).",
        ["leader", "epoch"],
        {"leader": {"type": "string"}, "epoch": _EPOCH},
    ),
    "/v1/admin/fence": _admin(
        "Stop taking writes and following; standby at this epoch.", ["epoch"], {"epoch": _EPOCH}
    ),
    "/v1/admin/confirm": _admin(
        "The operator confirms that this member leads at this epoch: its leader lease runs "
        "lease_seconds from lease_token (the lease_token of the /v1/status the operator "
        "decided on; from now when absent). 409 stale_epoch below this member's epoch; "
        "409 not_leader when it does not lead at exactly this epoch (a higher epoch is "
        "learnt first: a leader steps down). A leader whose lease lapsed (no majority of "
        "members and no operator heard within lease_seconds) answers writes of every ack "
        "level and strong/quorum reads with 503 lease_expired.",
        ["epoch"],
        {"epoch": _EPOCH, "lease_token": {"type": "integer", "minimum": 0}},
    ),
    "/v1/replication/stream": {
        "get": {
            "summary": "Chunked stream of WAL frames (the on-disk framing) from from_seq; a "
            "frame with seq 0 is a heartbeat carrying the leader's last and durable seq and a "
            "lease token (u64 each), sent at least every second or a quarter of the lease. "
            "409 log_diverged {truncate_to} or snapshot_required when the follower's log "
            "(ending at from_seq-1 with prev_epoch) does not continue the leader's.",
            "security": _SECURED,
            "parameters": [
                _query("from_seq", True),
                _query("epoch", True),
                _query("prev_epoch", False),
                _query("node_id", True, "string"),
                _query("url", False, "string"),
            ],
            "responses": {
                "200": {
                    "description": "WAL frames",
                    "content": {"application/x-dvec-wal": {"schema": {"type": "string"}}},
                },
                **_errors("409", "503"),
            },
        }
    },
    "/v1/replication/snapshot": {
        "get": {
            "summary": "A tar of a consistent checkpoint; header X-DVec-Snapshot-Seq names "
            "the seq it covers.",
            "security": _SECURED,
            "parameters": [_query("epoch", False), _query("node_id", False, "string")],
            "responses": {
                "200": {
                    "description": "Checkpoint tar",
                    "content": {"application/x-tar": {"schema": {"type": "string"}}},
                },
                **_errors("409", "503"),
            },
        }
    },
    "/v1/replication/ack": {
        "post": {
            "summary": "A follower's durable (received) and applied positions; lease_token "
            "echoes the last heartbeat's token: acks of a majority renew the leader lease.",
            "security": _SECURED,
            "requestBody": {
                "required": True,
                **_json(
                    {
                        "type": "object",
                        "required": ["node_id", "epoch", "received_seq", "applied_seq"],
                        "properties": {
                            "node_id": {"type": "string"},
                            "epoch": _EPOCH,
                            "received_seq": {"type": "integer"},
                            "applied_seq": {"type": "integer"},
                            "lease_token": {"type": "integer"},
                        },
                    }
                ),
            },
            "responses": {"200": {"description": "Leader epoch and last_seq"}, **_errors("409")},
        }
    },
    "/v1/replication/status": {
        "get": {
            "summary": "Replication detail: persisted epoch, follower state, followers.",
            "security": _SECURED,
            "responses": {"200": {"description": "Replication state", **_json({})}},
        }
    },
}
