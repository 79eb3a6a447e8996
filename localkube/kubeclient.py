"""A small asyncio REST client for the API server, enough for the kubelet's loops.

The kubelet talks to the API server with the admin client certificate. A plain aiohttp
client keeps it async end to end and typed as JSON objects, which is all the kubelet needs.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

Json = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server, with its status and Status message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_cert: Path
    client_cert: Path
    client_key: Path


class KubeClient:
    """JSON requests against one API server; use as an async context manager."""

    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        self._creds = creds
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> KubeClient:
        context = ssl.create_default_context(cafile=str(self._creds.ca_cert))
        context.load_cert_chain(str(self._creds.client_cert), str(self._creds.client_key))
        self._session = aiohttp.ClientSession(
            base_url=self._creds.server,
            connector=aiohttp.TCPConnector(ssl=context, limit=8),
            timeout=self._timeout,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Json:
        if self._session is None:
            raise RuntimeError("KubeClient used outside `async with`")
        data: str | None = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = content_type
        async with self._session.request(
            method, path, data=data, params=params, headers=headers
        ) as resp:
            text = await resp.text()
            try:
                payload: Json = json.loads(text) if text else {}
            except ValueError:
                payload = {"message": text[:500]}
            if resp.status >= 400:
                raise ApiError(
                    resp.status,
                    str(payload.get("reason", resp.reason)),
                    str(payload.get("message", "")),
                )
            return payload

    async def get(self, path: str, params: dict[str, str] | None = None) -> Json:
        return await self.request("GET", path, params=params)

    async def get_or_none(self, path: str) -> Json | None:
        try:
            return await self.get(path)
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    async def items(self, path: str, params: dict[str, str] | None = None) -> list[Json]:
        result = await self.get(path, params)
        items: list[Json] = result.get("items", [])
        return items

    async def create(self, path: str, body: Json) -> Json:
        return await self.request("POST", path, body)

    async def merge_patch(self, path: str, body: Json) -> Json:
        return await self.request("PATCH", path, body, content_type=MERGE_PATCH)

    async def delete(self, path: str, body: Json | None = None) -> Json:
        return await self.request("DELETE", path, body)
