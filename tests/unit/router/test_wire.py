"""The router's lean HTTP/1.1 client against a scripted loopback peer: bodies framed by
length, by chunks and by the end of the connection; keep-alive reuse; a connection the peer
closed while idle is replaced; failures raise what aiohttp raised."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
import pytest_asyncio

from dvecdb_router import wire as wire_module
from dvecdb_router.wire import Wire, dechunk, parse_head, request_target

pytestmark = pytest.mark.unit

# A request's head -> the answer's pieces (None: hang up instead).
Script = Callable[[bytes], list[bytes] | None]
ACCEPTED = {"connections": 0}  # connections the peer accepted


def test_heads_and_chunks_are_read_as_http_1_1_frames_them() -> None:
    head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX: y")
    assert (head.status, head.length, head.chunked, head.keep_alive) == (200, 12, False, True)
    head = parse_head(b"HTTP/1.1 503 No\r\ntransfer-encoding: chunked\r\nConnection: close")
    assert (head.status, head.length, head.chunked, head.keep_alive) == (503, None, True, False)
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1").keep_alive
    with pytest.raises(ValueError):
        parse_head(b"SPDY/3 200 OK")
    buffer = bytearray(b"3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\nNEXT")
    assert dechunk(buffer) == b"abcde" and buffer == b"NEXT"
    partial = bytearray(b"3\r\nabc\r\n2\r\nd")
    assert dechunk(partial) is None and partial == b"3\r\nabc\r\n2\r\nd"
    assert request_target("/v1/collections/a b/vectors/é") == (
        "/v1/collections/a%20b/vectors/%C3%A9"
    )


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[tuple[str, list[Script], list[bytes]]]:
    """A loopback server answering each request with the next script; records requests."""
    scripts: list[Script] = []
    seen: list[bytes] = []

    ACCEPTED["connections"] = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ACCEPTED["connections"] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                seen.append(head + await reader.readexactly(length))
                pieces = scripts.pop(0)(head)
                if pieces is None:
                    break
                for piece in pieces:
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)  # the answer arrives in parts
                if pieces[-1] == b"" or any(b"HTTP/1.0" in p for p in pieces):
                    break  # (an empty last piece: hang up after the answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", scripts, seen
    server.close()
    await server.wait_closed()


async def test_answers_are_read_whatever_frames_them_and_connections_are_reused(
    peer: tuple[str, list[Script], list[bytes]],
) -> None:
    url, scripts, seen = peer
    wire = Wire(None, timeout=5)
    try:
        scripts.append(lambda h: [b"HTTP/1.1 200 OK\r\nContent-Len", b"gth: 5\r\n\r\nhe", b"llo"])
        scripts.append(lambda h: [b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n", b"2"
                                  b"\r\nno\r\n0\r\n\r\n"])  # fmt: skip
        scripts.append(lambda h: [b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the end"])
        got = await wire.request(url, "POST", "/v1/x y", b"{}", {"a": "b c"}, {"X-K": "v"})
        assert got == (200, b"hello")
        assert seen[0].startswith(b"POST /v1/x%20y?a=b%20c HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b"\r\nX-K: v\r\nContent-Length: 2\r\n\r\n{}" in seen[0]
        assert await wire.request(url, "GET", "/two") == (404, b"no")
        assert await wire.request(url, "GET", "/three") == (200, b"until the end")
        assert len(wire._idle[url]) == 0  # the HTTP/1.0 answer ended its connection
        # The peer hangs up on an idle connection: the next request goes on a new one.
        scripts.append(lambda h: [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"])
        scripts.append(lambda h: None)
        scripts.append(lambda h: [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"])
        assert await wire.request(url, "GET", "/four") == (200, b"a")
        assert len(wire._idle[url]) == 1
        assert await wire.request(url, "GET", "/five") == (200, b"b")
        assert [s.split(b" ")[1] for s in seen[3:]] == [b"/four", b"/five", b"/five"]
    finally:
        await wire.close()


async def test_failures_raise_what_aiohttp_raised(
    peer: tuple[str, list[Script], list[bytes]],
) -> None:
    url, scripts, _ = peer
    wire = Wire(None, timeout=0.3)
    try:
        scripts.append(lambda h: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
        with pytest.raises(TimeoutError):
            await wire.request(url, "GET", "/slow")
        scripts.append(lambda h: [b"garbage\r\n\r\n"])
        with pytest.raises(aiohttp.ClientError):
            await wire.request(url, "GET", "/bad")
        scripts.append(lambda h: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", b""])
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await wire.request(url, "GET", "/cut")
        with pytest.raises(aiohttp.ClientConnectionError):
            await wire.request("http://127.0.0.1:1", "GET", "/refused")
    finally:
        await wire.close()


async def test_requests_to_one_member_beyond_the_limit_wait_for_a_connection(
    peer: tuple[str, list[Script], list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, scripts, seen = peer
    monkeypatch.setattr(wire_module, "PER_MEMBER", 2)
    wire = Wire(None, timeout=5)
    try:
        for _ in range(6):
            scripts.append(lambda h: [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok"])
        answers = await asyncio.gather(*(wire.request(url, "GET", f"/{i}") for i in range(6)))
        assert answers == [(200, b"ok")] * 6 and len(seen) == 6
        assert ACCEPTED["connections"] == 2
    finally:
        await wire.close()
