"""JSON errors: ``{"error": {"code", "message", ...}}`` for every failure, never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from dvecdb_node.errors import NodeError, NotLeader

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    503: "not_ready",
}


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """orjson-encoded response (faster than aiohttp's default encoder)."""
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message, **extra}}
    if "leader" in extra:
        body["leader"] = extra["leader"]
    return body


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    return json_response(error_body(code, message, **extra), status=status, headers=headers)


def node_error_parts(exc: NodeError) -> tuple[bytes, dict[str, str]]:
    """The JSON body and extra headers of a :class:`NodeError` (shared by both servers)."""
    headers: dict[str, str] = {}
    if isinstance(exc, NotLeader) and exc.leader:
        headers["X-DVec-Leader"] = exc.leader
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    body = error_body(exc.code, exc.message, **exc.extra)
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), headers


def from_node_error(exc: NodeError) -> web.Response:
    body, headers = node_error_parts(exc)
    return web.Response(
        body=body, status=exc.status, content_type="application/json", headers=headers
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NodeError as exc:
        return from_node_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason if exc.status != 413 else "request body too large"
        # A 405 names the methods the path takes (RFC 9110): aiohttp's Allow header.
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, message, headers=allow)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")
