"""How a secret's text holds several values: one rule for every reader of a key.

A key (an API key, a cluster token) may hold several values at once, separated by commas or
newlines, so a rotation can add the new value before removing the old one. The node accepts
any of them; senders (operator, router, members) send the first.
"""

from __future__ import annotations


def key_values(text: str | None) -> tuple[str, ...]:
    """Values separated by commas or newlines, stripped, without blanks."""
    if not text:
        return ()
    return tuple(v.strip() for v in text.replace("\n", ",").split(",") if v.strip())
