"""OpenAPI paths of the admin and replication endpoints (merged into ``/openapi.json``).

The bodies are ``api.schema``'s types (the handlers decode with the same ones); who may call
each path (the cluster token) is added by ``api.openapi`` from the node's keys.
"""

from __future__ import annotations

from typing import Any

from dvecdb_node.api.openapi import body, errors
from dvecdb_node.api.schema import MAX_INT64

_STATUS = {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}


def _admin(summary: str, name: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": body(name),
            "responses": {
                "200": {
                    "description": "The node's status after the change, with its log positions "
                    "(role, epoch, last_epoch, last_seq, received_seq, applied_seq)",
                    "content": _STATUS,
                },
                **errors("400", "409", "503"),
            },
        }
    }


def _query(name: str, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


# Query integers as ``leader._int_param`` reads them: decimal, 0 to 2**63-1.
_COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_INT64}
_NODE_ID = {"type": "string", "minLength": 1, "maxLength": 256}

PATHS: dict[str, Any] = {
    "/v1/admin/promote": _admin(
        "Become leader at this epoch (409 stale_epoch unless above the highest seen, or a "
        "retry by the node that already leads at it, or for the node fenced at it). Optional "
        "members: the cluster size that ack=quorum takes a majority of. Optional lease_token "
        "(the lease_token of the /v1/status the operator decided on): the new leader's lease "
        "runs from it, so a promote that arrives late starts a lapsed lease.",
        "Promote",
    ),
    "/v1/admin/follow": _admin(
        "Follow the leader at this URL and epoch (409 stale_epoch below the highest seen).",
        "Follow",
    ),
    "/v1/admin/fence": _admin("Stop taking writes and following; standby at this epoch.", "Fence"),
    "/v1/admin/confirm": _admin(
        "The operator confirms that this member leads at this epoch: its leader lease runs "
        "lease_seconds from lease_token (the lease_token of the /v1/status the operator "
        "decided on; from now when absent). 409 stale_epoch below this member's epoch; "
        "409 not_leader when it does not lead at exactly this epoch (a higher epoch is "
        "learnt first: a leader steps down). A leader whose lease lapsed (no majority of "
        "members and no operator heard within lease_seconds) answers writes of every ack "
        "level and strong/quorum reads with 503 lease_expired.",
        "Confirm",
    ),
    "/v1/replication/stream": {
        "get": {
            "summary": "Chunked stream of WAL frames (the on-disk framing) from from_seq; a "
            "frame with seq 0 is a heartbeat carrying the leader's last and durable seq and a "
            "lease token (u64 each), sent at least every second or a quarter of the lease. "
            "409 log_diverged {truncate_to} or snapshot_required when the follower's log "
            "(ending at from_seq-1 with prev_epoch) does not continue the leader's.",
            "parameters": [
                _query("from_seq", True, {**_COUNT, "minimum": 1}),
                _query("epoch", True, _COUNT),
                _query("prev_epoch", False, _COUNT),
                _query("node_id", True, _NODE_ID),
                _query("url", False, {"type": "string"}),
            ],
            "responses": {
                "200": {
                    "description": "WAL frames",
                    "content": {"application/x-dvec-wal": {"schema": {"type": "string"}}},
                },
                **errors("400", "409", "503"),
            },
        }
    },
    "/v1/replication/snapshot": {
        "get": {
            "summary": "A tar of a consistent checkpoint; header X-DVec-Snapshot-Seq names "
            "the seq it covers.",
            "parameters": [
                _query("epoch", False, _COUNT),
                _query("node_id", False, {"type": "string"}),
            ],
            "responses": {
                "200": {
                    "description": "Checkpoint tar",
                    "content": {"application/x-tar": {"schema": {"type": "string"}}},
                },
                **errors("400", "409", "503"),
            },
        }
    },
    "/v1/replication/ack": {
        "post": {
            "summary": "A follower's durable (received) and applied positions; lease_token "
            "echoes the last heartbeat's token: acks of a majority renew the leader lease.",
            "requestBody": body("FollowerAck"),
            "responses": {
                "200": {
                    "description": "Leader epoch and last_seq",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **errors("400", "409", "503"),
            },
        }
    },
    "/v1/replication/status": {
        "get": {
            "summary": "Replication detail: persisted epoch, follower state, followers.",
            "responses": {
                "200": {
                    "description": "Replication state",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    },
}
