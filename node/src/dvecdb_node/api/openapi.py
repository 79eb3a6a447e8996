"""The OpenAPI 3 document of the node's HTTP API (v1), served at ``GET /openapi.json``."""

from __future__ import annotations

from functools import cache
from typing import Any

from dvecdb_node.api.bulk import CONTENT_TYPE as BULK_TYPE
from dvecdb_node.api.querybody import CONTENT_TYPE as QUERIES_TYPE

_BULK_DESCRIPTION = (
    "Binary bulk upsert. Little-endian: `b'DVB1' | u32 count | u32 dim | u32 meta_len`, then "
    "`count` ids as `u16 byte_len | utf-8`, then `count*dim` float32, then `meta_len` bytes of "
    "a JSON array with one object or null per id (omitted when meta_len is 0). "
    "Query parameter `ack` sets the acknowledgement level."
)
_QUERIES_DESCRIPTION = (
    "Binary search body. Little-endian: `b'DVQ1' | u32 count | u32 dim | u32 options_len`, "
    "then `count*dim` float32 query vectors, then `options_len` bytes of a JSON object with the "
    "JSON form's other fields (k, ef, filter, include_metadata, consistency, min_seq, min_epoch; "
    "omitted when options_len is 0). The answer is the JSON form's."
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, **_json(schema)}


_ERRORS = {
    "400": {"description": "Invalid input", **_json(_ref("Error"))},
    "404": {"description": "Unknown collection or id", **_json(_ref("Error"))},
    "409": {
        "description": "Conflict, not_leader (also a strong/quorum read on a non-leader) or stale",
        **_json(_ref("Error")),
    },
    "413": {"description": "Body or batch too large", **_json(_ref("Error"))},
    "503": {
        "description": "recovering (with Retry-After: the store is still loading), "
        "storage_error (a corrupt log or a failed fsync, named), lease_expired (a leader "
        "that heard from neither a majority nor the operator within its lease: no write of "
        "any ack level, no strong/quorum read), ack_timeout / leadership_lost (the write may "
        "or may not persist), or a refused read (see the error code)",
        **_json(_ref("Error")),
    },
}
_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_ACK = {
    "name": "ack",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["leader", "one", "quorum"]},
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            },
            "leader": {"type": "string", "nullable": True},
        },
    },
    "Hnsw": {
        "type": "object",
        "properties": {
            "m": {"type": "integer", "default": 16},
            "ef_construction": {"type": "integer", "default": 200},
            "ef_search": {"type": "integer", "default": 64},
        },
    },
    "CollectionCreate": {
        "type": "object",
        "required": ["name", "dimension"],
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"},
            "dimension": {"type": "integer", "minimum": 1},
            "metric": {"type": "string", "enum": ["l2", "cosine", "ip"], "default": "l2"},
            "hnsw": _ref("Hnsw"),
        },
    },
    "Collection": {
        "allOf": [
            _ref("CollectionCreate"),
            {"type": "object", "properties": {"count": {"type": "integer"}}},
        ]
    },
    "Metadata": {
        "type": "object",
        "description": "Flat object of string, number, boolean or null values.",
        "additionalProperties": {"nullable": True},
    },
    "VectorItem": {
        "type": "object",
        "required": ["id", "vector"],
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 256},
            "vector": {"type": "array", "items": {"type": "number"}},
            "metadata": _ref("Metadata"),
        },
    },
    "Upsert": {
        "type": "object",
        "required": ["vectors"],
        "description": "Duplicate ids in one batch: the last occurrence wins.",
        "properties": {
            "vectors": {"type": "array", "items": _ref("VectorItem")},
            "ack": {"type": "string", "enum": ["leader", "one", "quorum"]},
        },
    },
    "Delete": {
        "type": "object",
        "required": ["ids"],
        "properties": {
            "ids": {"type": "array", "items": {"type": "string"}},
            "ack": {"type": "string", "enum": ["leader", "one", "quorum"]},
        },
    },
    "WriteResult": {
        "type": "object",
        "description": "The write token is (epoch, seq): pass both to a search as min_seq and "
        "min_epoch to read this write on any member.",
        "properties": {
            "seq": {"type": "integer"},
            "epoch": {"type": "integer", "description": "The leader's epoch the write was made at"},
            "count": {"type": "integer"},
        },
    },
    "Search": {
        "type": "object",
        "properties": {
            "vector": {"type": "array", "items": {"type": "number"}},
            "vectors": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "k": {"type": "integer", "default": 10, "minimum": 1},
            "ef": {"type": "integer"},
            "filter": {
                "type": "object",
                "description": '{"key": value} equality, or {"key": {"in": [values]}}',
            },
            "include_metadata": {"type": "boolean", "default": False},
            "consistency": {
                "type": "string",
                "enum": ["eventual", "strong", "min_seq", "quorum"],
                "default": "eventual",
            },
            "min_seq": {
                "type": "integer",
                "description": "Wait (up to a bound) until this member applied this seq, else "
                "409 stale",
            },
            "min_epoch": {
                "type": "integer",
                "description": "With min_seq: the write token's epoch. 409 stale when this "
                "member's record at min_seq has another epoch (that write was lost here)",
            },
        },
    },
    "SearchResult": {
        "type": "object",
        "properties": {
            "results": {
                "type": "array",
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "distance": {"type": "number"},
                            "metadata": _ref("Metadata"),
                        },
                    },
                },
            },
            "seq": {"type": "integer"},
        },
    },
    "Status": {
        "type": "object",
        "properties": {
            "node_id": {"type": "string"},
            "role": {"type": "string", "enum": ["leader", "follower", "standby"]},
            "epoch": {"type": "integer", "description": "Highest epoch this member has seen"},
            "last_epoch": {"type": "integer", "description": "Epoch of the last log record"},
            "last_seq": {"type": "integer", "description": "Seq of the last log record"},
            "received_seq": {
                "type": "integer",
                "description": "Log end held durably (the failover compares positions)",
            },
            "applied_seq": {"type": "integer"},
            "durable_seq": {"type": "integer", "description": "Same as received_seq"},
            "lease_token": {
                "type": "integer",
                "description": "This member's clock (ms): pass it to /v1/admin/promote or "
                "/v1/admin/confirm, whose lease then runs from this moment",
            },
            "last_ack_seconds": {
                "type": "number",
                "nullable": True,
                "description": "On a non-leader: seconds since it last acked a leader with a "
                "lease token (null: never since start). That leader's lease may run up to "
                "lease_seconds past it: a failover that could not fence the old leader waits "
                "it out before promoting.",
            },
            "storage_error": {
                "type": "string",
                "nullable": True,
                "description": "Why the store cannot serve (corrupt log, failed fsync)",
            },
            "leader": {"type": "string", "nullable": True},
            "followers": {"type": "array", "items": {"type": "object"}},
            "lease": {
                "type": "object",
                "description": "On a leader: its lease (DESIGN.md). Pass token to "
                "POST /v1/admin/confirm as lease_token.",
                "properties": {
                    "valid": {"type": "boolean"},
                    "expires_in_seconds": {
                        "type": "number",
                        "nullable": True,
                        "description": "null: never lapses (standalone)",
                    },
                    "token": {"type": "integer"},
                },
            },
        },
    },
}


@cache
def openapi_document() -> dict[str, Any]:
    """The document (built once)."""
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "OK"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: recovered (and replicating within bounds)",
                "responses": {"200": {"description": "Ready"}, "503": _ERRORS["409"]},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text format", "content": {"text/plain": {}}}},
            }
        },
        "/v1/status": {
            "get": {"summary": "Node status", "responses": {"200": _ok(_ref("Status"))}}
        },
        "/v1/collections": {
            "get": {
                "summary": "List collections",
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "collections": {"type": "array", "items": _ref("Collection")}
                            },
                        }
                    )
                },
            },
            "post": {
                "summary": "Create a collection",
                "requestBody": {"required": True, **_json(_ref("CollectionCreate"))},
                "responses": {"201": _ok(_ref("Collection"), "Created"), **_ERRORS},
            },
        },
        "/v1/collections/{name}": {
            "parameters": [_NAME],
            "get": {
                "summary": "Describe a collection (with count)",
                "responses": {"200": _ok(_ref("Collection")), **_ERRORS},
            },
            "delete": {
                "summary": "Drop a collection",
                "responses": {"200": {"description": "Dropped"}, **_ERRORS},
            },
        },
        "/v1/collections/{name}/vectors": {
            "parameters": [_NAME, _ACK],
            "put": {
                "summary": "Upsert a batch of vectors",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("Upsert")},
                        BULK_TYPE: {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": _BULK_DESCRIPTION,
                            }
                        },
                    },
                },
                "responses": {"200": _ok(_ref("WriteResult")), **_ERRORS},
            },
        },
        "/v1/collections/{name}/vectors/{id}": {
            "parameters": [
                _NAME,
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
            ],
            "get": {
                "summary": "One vector with its metadata",
                "responses": {"200": _ok(_ref("VectorItem")), **_ERRORS},
            },
        },
        "/v1/collections/{name}/vectors/delete": {
            "parameters": [_NAME],
            "post": {
                "summary": "Delete vectors by id",
                "requestBody": {"required": True, **_json(_ref("Delete"))},
                "responses": {"200": _ok(_ref("WriteResult")), **_ERRORS},
            },
        },
        "/v1/collections/{name}/search": {
            "parameters": [_NAME],
            "post": {
                "summary": "k-nearest-neighbour search",
                "description": "Distances as hnswlib reports them: squared L2, 1-cos, 1-ip.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": _ref("Search")},
                        QUERIES_TYPE: {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": _QUERIES_DESCRIPTION,
                            }
                        },
                    },
                },
                "responses": {"200": _ok(_ref("SearchResult")), **_ERRORS},
            },
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "d-vecDB node API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
    }
