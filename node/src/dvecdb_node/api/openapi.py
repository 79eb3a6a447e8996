"""The OpenAPI 3.1 document of the node's HTTP API (v1), served at ``GET /openapi.json``.

Its schemas are generated from ``schema``'s types, the ones the node validates with, and with
this node's limits in them; which operations need a token follows ``auth.check_access``
with this node's keys. Paths and responses are listed here.
"""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

import msgspec

from dvecdb_node.api import schema
from dvecdb_node.api.auth import check_access
from dvecdb_node.api.bulk import CONTENT_TYPE as BULK_TYPE
from dvecdb_node.api.querybody import CONTENT_TYPE as QUERIES_TYPE
from dvecdb_node.credentials import Credentials
from dvecdb_node.errors import NodeError
from dvecdb_node.settings import NodeSettings

_BULK_DESCRIPTION = (
    "Binary bulk upsert. Little-endian: `b'DVB1' | u32 count | u32 dim | u32 meta_len`, then "
    "`count` ids as `u16 byte_len | utf-8`, then `count*dim` float32, then `meta_len` bytes of "
    "a JSON array with one object or null per id (omitted when meta_len is 0). The ids, "
    "vectors and metadata obey the JSON form's rules; a body not of this layout answers 400 "
    "malformed_batch."
)
_QUERIES_DESCRIPTION = (
    "Binary search body. Little-endian: `b'DVQ1' | u32 count | u32 dim | u32 options_len`, "
    "then `count*dim` float32 query vectors, then `options_len` bytes of a JSON object "
    "(SearchOptions: the JSON form's fields but the vectors; omitted when options_len is 0). "
    "A body not of this layout answers 400 malformed_queries. The answer is the JSON form's."
)
_ERRORS = {
    "400": "Invalid input (the error code names the rule)",
    "401": "Missing bearer token",
    "403": "Wrong bearer token",
    "404": "Unknown path, collection or id",
    "409": "Conflict, not_leader (also a strong/quorum read on a non-leader), stale, or "
    "slot_moved (a write with an id in a slot fenced for resharding: nothing of it was made; "
    "the error names slots, owner and map_version)",
    "410": "snapshot_required: the log no longer holds what was asked",
    "413": "Body, batch, query count or metadata too large",
    "503": "recovering (with Retry-After: the store is still loading), storage_error (a "
    "corrupt log or a failed fsync, named), lease_expired (a leader that heard from neither a "
    "majority nor the operator within its lease: no write of any ack level, no strong/quorum "
    "read), ack_timeout / leadership_lost (the write may or may not persist), or a refused "
    "read (see the error code)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema_: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema_}}}


def _ok(name: str, description: str = "OK") -> dict[str, Any]:
    return {"description": description, **_json(_ref(name))}


def errors(*codes: str) -> dict[str, Any]:
    """Error responses (the ``Error`` body) for these statuses."""
    return {code: {"description": _ERRORS[code], **_json(_ref("Error"))} for code in codes}


def body(name: str) -> dict[str, Any]:
    """A required JSON request body of component ``name``."""
    return {"required": True, **_json(_ref(name))}


_DATA_ERRORS = ("400", "404", "409", "413", "503")
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": schema.NAME_PATTERN},
}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": schema.MAX_ID_CHARS},
}
_ACK = {
    "name": "ack",
    "in": "query",
    "required": False,
    "description": "Acknowledgement level (a JSON body's own ack wins)",
    "schema": {"type": "string", "enum": list(schema.ACKS)},
}


def _binary(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "contentEncoding": "binary"}, "description": description}


_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Liveness: the process serves",
            "responses": {
                "200": _ok("Probe"),
                "500": {"description": "recovery_failed", **_json(_ref("Error"))},
            },
        }
    },
    "/readyz": {
        "get": {
            "summary": "Readiness: recovered (and replicating within bounds)",
            "responses": {"200": _ok("Probe", "Ready"), **errors("503")},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics",
            "responses": {
                "200": {"description": "text format", "content": {"text/plain": {}}},
            },
        }
    },
    "/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", **_json({"type": "object"})}},
        }
    },
    "/v1/status": {
        "get": {"summary": "Node status", "responses": {"200": _ok("Status"), **errors("503")}}
    },
    "/v1/collections": {
        "get": {
            "summary": "List collections",
            "responses": {"200": _ok("Collections"), **errors("503")},
        },
        "post": {
            "summary": "Create a collection",
            "parameters": [_ACK],
            "requestBody": body("CollectionCreate"),
            "responses": {"201": _ok("Created", "Created"), **errors(*_DATA_ERRORS)},
        },
    },
    "/v1/collections/{name}": {
        "parameters": [_NAME],
        "get": {
            "summary": "Describe a collection (with count)",
            "responses": {"200": _ok("Collection"), **errors(*_DATA_ERRORS)},
        },
        "patch": {
            "summary": "Change a collection's live settings (the default ef_search)",
            "description": "A replicated write: the change is a log record, so followers, "
            "restarts and snapshots keep it, and it is acknowledged at the ack level like "
            "other writes (a follower answers 409 not_leader). Settings fixed at creation "
            "(name, dimension, metric, hnsw.m, hnsw.ef_construction) answer 400 "
            "immutable_setting.",
            "parameters": [_ACK],
            "requestBody": body("CollectionUpdate"),
            "responses": {"200": _ok("Updated"), **errors(*_DATA_ERRORS)},
        },
        "delete": {
            "summary": "Drop a collection",
            "parameters": [_ACK],
            "responses": {"200": _ok("Dropped", "Dropped"), **errors(*_DATA_ERRORS)},
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
                    BULK_TYPE: _binary(_BULK_DESCRIPTION),
                },
            },
            "responses": {"200": _ok("WriteResult"), **errors(*_DATA_ERRORS)},
        },
    },
    "/v1/collections/{name}/vectors/{id}": {
        "parameters": [_NAME, _ID],
        "get": {
            "summary": "One vector with its metadata",
            "description": "As OpenAPI matches a concrete path before a templated one, "
            "GET .../vectors/delete is not this operation (405: that path takes POST).",
            "responses": {"200": _ok("StoredVector"), **errors(*_DATA_ERRORS)},
        },
    },
    "/v1/collections/{name}/vectors/delete": {
        "parameters": [_NAME],
        "post": {
            "summary": "Delete vectors by id",
            "requestBody": body("Delete"),
            "responses": {"200": _ok("WriteResult"), **errors(*_DATA_ERRORS)},
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
                    QUERIES_TYPE: _binary(_QUERIES_DESCRIPTION),
                },
            },
            "responses": {"200": _ok("SearchResult"), **errors(*_DATA_ERRORS)},
        },
    },
}


@functools.cache
def components(limits: schema.Limits) -> dict[str, Any]:
    """The schemas of every body, request and response, from ``schema``'s types."""
    kinds = schema.bodies(limits)
    types = [*kinds.types(), schema.CollectionUpdate, *schema.ADMIN_BODIES, *schema.RESPONSES]
    _, found = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    for name in found:
        found[name].pop("title", None)
    found["Search"].update(schema.SEARCH_RULES)
    found["SearchOptions"].update(schema.OPTIONS_RULES)
    return found


def _own(schemas: dict[str, Any], settings: NodeSettings) -> dict[str, Any]:
    """The schemas with what only this node knows: it follows no leader at its own URL
    (``ReplicationManager.follow`` refuses it, trailing slashes ignored)."""
    own = copy.deepcopy(schemas)
    leader = own["Follow"]["properties"]["leader"]
    leader["not"] = {"pattern": f"^{re.escape(settings.self_url)}/*$"}
    return own


def _security(method: str, path: str, creds: Credentials) -> list[dict[str, list[str]]] | None:
    """Who may call ``method path`` (``auth.check_access`` with these keys): None if anyone."""

    def opens(offered: str | None) -> bool:
        try:
            check_access(method.upper(), path, offered, creds)
        except NodeError:
            return False
        return True

    if opens(None):
        return None
    schemes = [
        ("apiKey", creds.api_keys[0] if creds.api_keys else None),
        ("readOnlyKey", creds.read_only_keys[0] if creds.read_only_keys else None),
        ("clusterToken", creds.cluster_token),
    ]
    return [{scheme: []} for scheme, secret in schemes if secret and opens(secret)]


def openapi_document(
    settings: NodeSettings,
    extra_paths: dict[str, Any] | None = None,
    credentials: Credentials | None = None,
) -> Any:
    """The document of a node with these settings, with ``extra_paths`` (replication's);
    its security from ``credentials`` (the ones in force; the settings' when not given)."""
    creds = credentials if credentials is not None else settings.credentials()
    paths: dict[str, Any] = copy.deepcopy({**_PATHS, **(extra_paths or {})})
    secured = False
    for path, item in paths.items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            security = _security(method, path, creds)
            if security is None:
                continue
            secured = True
            operation["security"] = security
            operation["responses"].update(errors("401", "403"))
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "d-vecDB node API", "version": "1"},
        "paths": paths,
        "components": {"schemas": _own(components(schema.Limits.of(settings)), settings)},
    }
    if secured:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "http", "scheme": "bearer", "description": "The data API key"},
            "readOnlyKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "A key that may list, describe, get and search (not write)",
            },
            "clusterToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "The cluster token (admin and replication; also the data API)",
            },
        }
    return document
