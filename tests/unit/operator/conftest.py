"""Fixtures the operator's unit tests share."""

from __future__ import annotations

import pytest

from dvecdb_operator import kube as kube_api


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The (reason, message) of every Event the operator posts, instead of posting them."""
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(
        kube_api,
        "post_event",
        lambda body, *, reason, message, warning=False: seen.append((reason, message)),
    )
    return seen
