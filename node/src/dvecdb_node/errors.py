"""Errors the node answers with: a stable snake_case ``code`` and the HTTP status it maps to.

Storage raises these too, so a check made under the engine's write lock (for example that a
collection still exists) reaches the client as the same JSON error the API layer would give.
"""

from __future__ import annotations

from typing import Any


class NodeError(Exception):
    """An error with a client-facing code; ``extra`` fields are added to the JSON body."""

    status = 400
    code = "bad_request"
    # Seconds a client should wait before retrying (sent as ``Retry-After``), if any.
    retry_after: int | None = None

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra


class InvalidInput(NodeError):
    status = 400
    code = "invalid_input"


class NotFound(NodeError):
    status = 404
    code = "not_found"


class Conflict(NodeError):
    status = 409
    code = "conflict"


class PayloadTooLarge(NodeError):
    status = 413
    code = "payload_too_large"


class Unauthorized(NodeError):
    status = 401
    code = "unauthorized"


class Forbidden(NodeError):
    status = 403
    code = "forbidden"


class NotReady(NodeError):
    status = 503
    code = "not_ready"


class Recovering(NotReady):
    """The store is still loading: any answer about data now would be wrong, not empty."""

    code = "recovering"
    retry_after = 1


class NotLeader(Conflict):
    """A write (or strong read) reached a member that is not the leader."""

    code = "not_leader"

    def __init__(self, leader: str | None, message: str = "this member is not the leader") -> None:
        super().__init__(message, leader=leader)
        self.leader = leader


def collection_not_found(name: str) -> NotFound:
    return NotFound(f"collection {name!r} does not exist", code="collection_not_found")


def collection_exists(name: str) -> Conflict:
    return Conflict(f"collection {name!r} already exists", code="collection_exists")


def dimension_mismatch(expected: int, got: int) -> InvalidInput:
    return InvalidInput(
        f"vector dimension {got} does not match the collection's {expected}",
        code="dimension_mismatch",
    )
