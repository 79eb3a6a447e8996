"""The fast lane's head reader takes only plain HTTP/1.1 and hands everything else on."""

from __future__ import annotations

import pytest

from dvecdb_node.api.fastlane import route_name
from dvecdb_node.api.http1 import HANDOFF, Head, parse_head

pytestmark = pytest.mark.unit

PLAIN = (
    b"POST /v1/collections/c/search HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n"
    b"Authorization: Bearer s3cret\r\nContent-Type: application/json\r\n\r\n"
)


def test_plain_head_is_read() -> None:
    head = parse_head(PLAIN + b'{"vector":[]}', 16384)
    assert isinstance(head, Head)
    assert (head.method, head.path, head.content_length) == (
        b"POST",
        b"/v1/collections/c/search",
        12,
    )
    assert head.authorization == b"Bearer s3cret"
    assert head.size == len(PLAIN)
    assert head.close is False
    assert route_name(head) == "c"


def test_incomplete_head_waits_and_oversized_head_hands_off() -> None:
    assert parse_head(PLAIN[:-3], 16384) is None
    assert parse_head(b"POST / HTTP/1.1\r\nX: " + b"a" * 100, 64) == HANDOFF


def test_content_type_is_its_media_type() -> None:
    raw = PLAIN.replace(b"application/json", b"Application/X-Dvec-Queries ; v=1")
    head = parse_head(raw, 16384)
    assert isinstance(head, Head) and head.content_type == b"application/x-dvec-queries"
    head = parse_head(PLAIN.replace(b"Content-Type: application/json\r\n", b""), 16384)
    assert isinstance(head, Head) and head.content_type is None


def test_connection_close_is_seen() -> None:
    head = parse_head(PLAIN.replace(b"Host: x", b"Connection: keep-alive, Close"), 16384)
    assert isinstance(head, Head) and head.close


@pytest.mark.parametrize(
    "raw",
    [
        PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
        PLAIN.replace(b"Content-Length: 12", b"Transfer-Encoding: chunked"),
        PLAIN.replace(b"Host: x", b"Expect: 100-continue"),
        PLAIN.replace(b"Host: x", b"Content-Length: 12"),  # repeated framing header
        PLAIN.replace(b"Content-Length: 12", b"Content-Length: +12"),
        PLAIN.replace(b"Content-Length: 12", b"Content-Length: 1e3"),
        PLAIN.replace(b"Host: x", b"Host: x\r\n folded"),
        PLAIN.replace(b"Host: x", b"Host : x"),
        PLAIN.replace(b"Host: x", b"NoColonHere"),
        PLAIN.replace(b"/search", b"/search?x=1"),
        PLAIN.replace(b"/c/", b"/%63/"),
        PLAIN.replace(b"Host: x", b"Connection: Upgrade"),
        PLAIN.replace(b"Authorization: Bearer s3cret", b"Authorization: a\r\nAuthorization: b"),
        PLAIN.replace(b"Host: x", b"Content-Type: text/plain"),  # a second Content-Type
        PLAIN.replace(b"Content-Length: 12\r\n", b""),  # a POST without a length
        PLAIN.replace(b"Host: x", b"Host: x\ny: z"),  # a bare LF inside a line
        PLAIN.replace(b"Host: x", b"Host: x\rY: z"),  # a bare CR
        PLAIN.replace(b"/c/search", b"/c\r/search"),
        b"POST  /v1/collections/c/search HTTP/1.1\r\n\r\n",
        b"GET http://x/v1 HTTP/1.1\r\n\r\n",
    ],
)
def test_unusual_requests_go_to_aiohttp(raw: bytes) -> None:
    assert parse_head(raw, 16384) == HANDOFF


@pytest.mark.parametrize(
    "first_line",
    [
        b"GET /v1/collections/c/search HTTP/1.1",
        b"POST /v1/collections/search HTTP/1.1",
        b"POST /v1/collections/a/b/search HTTP/1.1",
        b"POST /v1/collections/c/vectors HTTP/1.1",
        b"POST /v1/collections//search HTTP/1.1",
    ],
)
def test_only_collection_searches_are_fast(first_line: bytes) -> None:
    raw = first_line + b"\r\nContent-Length: 0\r\n\r\n"
    head = parse_head(raw, 16384)
    assert isinstance(head, Head)
    assert route_name(head) is None
