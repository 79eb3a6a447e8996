"""A strict reader of HTTP/1.1 request heads, for the fast lane only.

It accepts a narrow, plainly well-formed subset (request line ``METHOD SP /path SP
HTTP/1.1``, ``Name: value`` lines, a ``Content-Length``) and answers :data:`HANDOFF` for
anything else, so every unusual request (chunked bodies, ``Expect``, folded or repeated
framing headers, query strings, percent-encoding, HTTP/1.0, upgrades, stray CR or LF) is
parsed by aiohttp's full parser instead. Pure: bytes in, a value out.

Regular expressions do the byte-level work in C: the whole head costs a few microseconds,
which matters when the search behind it takes a hundred.
"""

from __future__ import annotations

import re
from typing import Final, Literal, NamedTuple

HANDOFF: Final = "handoff"
Handoff = Literal["handoff"]

_END = b"\r\n\r\n"
_SEND_ELSEWHERE = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"})
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_REQUEST_LINE = re.compile(rb"([A-Za-z]+) (/[^ ?%#\r\n]*) HTTP/1\.1\r\n")
# Every line a ``token: value`` with no CR or LF inside: obs-fold, bare lines, spaces in
# names and lone CR/LF all fail, and hand the request off.
_FIELDS = re.compile(rb"(?:" + _TOKEN + rb":[^\r\n]*\r\n)*")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):([^\r\n]*)\r\n")


class Head(NamedTuple):  # a tuple: built once per request, and frozen dataclasses cost 4x
    method: bytes
    path: bytes
    content_length: int
    authorization: bytes | None
    content_type: bytes | None  # the media type, lower case, without parameters
    close: bool  # the client sent ``Connection: close``
    size: int  # bytes of the head, including the blank line


def parse_head(buf: bytes | bytearray, max_head: int) -> Head | Handoff | None:
    """The request head at the start of ``buf``; None while incomplete."""
    end = buf.find(_END, 0, max_head + len(_END))
    if end < 0:
        return HANDOFF if len(buf) > max_head else None
    block = bytes(buf[: end + 2])  # the request line and each field, with their CRLF
    line = _REQUEST_LINE.match(block)
    if line is None:
        return HANDOFF
    start = line.end()
    if _FIELDS.fullmatch(block, start) is None:
        return HANDOFF
    length: int | None = None
    authorization: bytes | None = None
    content_type: bytes | None = None
    close = False
    for name, raw in _FIELD.findall(block, start):
        key = name.lower()
        value = raw.strip(b" \t")
        if key == b"content-length":
            if length is not None or not value.isdigit() or len(value) > 15:
                return HANDOFF
            length = int(value)
        elif key == b"authorization":
            if authorization is not None:
                return HANDOFF
            authorization = value
        elif key == b"content-type":
            if content_type is not None:
                return HANDOFF
            content_type = value.partition(b";")[0].strip().lower()
        elif key == b"connection":
            tokens = {t.strip().lower() for t in value.split(b",")}
            if b"upgrade" in tokens:
                return HANDOFF
            close = close or b"close" in tokens
        elif key in _SEND_ELSEWHERE:
            return HANDOFF
    method = line[1]
    if length is None:
        if method == b"POST":
            return HANDOFF
        length = 0
    return Head(method, line[2], length, authorization, content_type, close, end + len(_END))
