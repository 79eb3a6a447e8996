"""A strict reader of HTTP/1.1 request heads, for the fast lane only.

It accepts a narrow, plainly well-formed subset (request line ``METHOD SP /path SP
HTTP/1.1``, ``Name: value`` lines, a ``Content-Length``) and answers :data:`HANDOFF` for
anything else, so every unusual request (chunked bodies, ``Expect``, folded or repeated
framing headers, query strings, percent-encoding, HTTP/1.0, upgrades) is parsed by aiohttp's
full parser instead. Pure: bytes in, a value out.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

HANDOFF: Final = "handoff"
Handoff = Literal["handoff"]

_END = b"\r\n\r\n"
_SEND_ELSEWHERE = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"})


class Head(NamedTuple):  # a tuple: built once per request, and frozen dataclasses cost 4x
    method: bytes
    path: bytes
    content_length: int
    authorization: bytes | None
    close: bool  # the client sent ``Connection: close``
    size: int  # bytes of the head, including the blank line


def parse_head(buf: bytes | bytearray, max_head: int) -> Head | Handoff | None:
    """The request head at the start of ``buf``; None while incomplete."""
    end = buf.find(_END, 0, max_head + len(_END))
    if end < 0:
        return HANDOFF if len(buf) > max_head else None
    lines = bytes(buf[:end]).split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1" or not parts[0].isalpha():
        return HANDOFF
    method, path = parts[0], parts[1]
    if not path.startswith(b"/") or b"?" in path or b"%" in path or b"#" in path:
        return HANDOFF
    length: int | None = None
    authorization: bytes | None = None
    close = False
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or b" " in name or b"\t" in name:
            return HANDOFF  # obs-fold, a bare line or a malformed name
        key = name.lower()
        value = value.strip(b" \t")
        if key == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 15:
                return HANDOFF
            length = int(value)
        elif key == b"authorization":
            if authorization is not None:
                return HANDOFF
            authorization = value
        elif key == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"upgrade" in tokens:
                return HANDOFF
            close = close or b"close" in tokens
        elif key in _SEND_ELSEWHERE:
            return HANDOFF
    if length is None:
        if method == b"POST":
            return HANDOFF
        length = 0
    return Head(method, path, length, authorization, close, end + len(_END))
