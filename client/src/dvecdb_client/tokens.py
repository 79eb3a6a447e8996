"""The write token of a routed write: one (epoch, seq) per shard, opaque to users.

``t1.`` then base64url (no padding) of JSON ``[[shard, epoch, seq], ...]``. A search with
``min_token`` waits, on each shard, for that shard's record (``min_seq``, ``min_epoch``), so a
client reads its own writes across shards. Tokens from several writes combine by taking the
later record per shard (:func:`combine`). The router makes and reads them; the Python client
combines the tokens of its writes (it lives here so both share one codec).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

import orjson

PREFIX = "t1."
Position = tuple[int, int]  # (epoch, seq)


class TokenError(ValueError):
    """Not a token this router made."""


def encode(positions: Mapping[int, Position]) -> str:
    doc = sorted([shard, epoch, seq] for shard, (epoch, seq) in positions.items())
    return PREFIX + base64.urlsafe_b64encode(orjson.dumps(doc)).rstrip(b"=").decode("ascii")


def decode(token: str) -> dict[int, Position]:
    if not isinstance(token, str) or not token.startswith(PREFIX):
        raise TokenError("min_token is not a write token of this router")
    raw = token[len(PREFIX) :]
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise TokenError(f"min_token does not decode: {exc}") from exc
    out: dict[int, Position] = {}
    if not isinstance(doc, list):
        raise TokenError("min_token does not decode to a list of positions")
    for entry in doc:
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in entry)
        ):
            raise TokenError("min_token holds a malformed position")
        shard, epoch, seq = entry
        out[shard] = (epoch, seq)
    return out


def combine(*tokens: Mapping[int, Position]) -> dict[int, Position]:
    """The later position per shard (by seq; a later epoch wins a tie)."""
    out: dict[int, Position] = {}
    for positions in tokens:
        for shard, (epoch, seq) in positions.items():
            held = out.get(shard)
            if held is None or (seq, epoch) > (held[1], held[0]):
                out[shard] = (epoch, seq)
    return out
