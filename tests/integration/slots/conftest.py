"""Helpers for resharding's node endpoints: raw admin calls (status and whole error body),
ids in and out of a slot set, and a collection's items as the export gives them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest_asyncio

from dvecdb_client.slots import slot_of
from tests.integration.replication.conftest import TOKEN, Group

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


class Admin:
    """Raw calls with the cluster token: ``(status, JSON body)``, errors included."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))

    async def call(
        self,
        url: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        body = data if data is not None else (None if json is None else orjson.dumps(json))
        async with self.session.request(
            method,
            url + path,
            data=body,
            params=params,
            headers={**HEADERS, "Content-Type": content_type},
        ) as resp:
            raw = await resp.read()
            return resp.status, orjson.loads(raw) if raw else None

    async def export(self, url: str, collection: str, slots: str) -> tuple[int, list[Any]]:
        """(cut seq, items) of an export; asserts the stream is whole."""
        async with self.session.get(
            f"{url}/v1/admin/slots/export",
            params={"collection": collection, "slots": slots},
            headers=HEADERS,
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("application/x-ndjson")
            lines = [orjson.loads(line) for line in (await resp.read()).splitlines()]
        head, *items, tail = lines
        assert tail == {"end": True, "count": len(items)}
        return int(head["seq"]), items

    async def close(self) -> None:
        await self.session.close()


def ids_where(prefix: str, count: int, keep: Callable[[int], bool]) -> list[str]:
    """``count`` ids ``prefix-N`` whose slot ``keep`` accepts."""
    out: list[str] = []
    n = 0
    while len(out) < count:
        candidate = f"{prefix}-{n}"
        if keep(slot_of(candidate)):
            out.append(candidate)
        n += 1
    return out


@pytest_asyncio.fixture
async def admin() -> AsyncIterator[Admin]:
    a = Admin()
    yield a
    await a.close()


@pytest_asyncio.fixture
async def group(node_factory: Callable[..., Any]) -> AsyncIterator[Group]:
    g = Group(node_factory)
    yield g
    await g.close()
