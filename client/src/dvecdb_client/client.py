"""The Python client of a d-vecDB node (async, with a small blocking wrapper).

``NodeClient`` speaks the node's HTTP API: admin (``promote``/``follow``/``fence``/``confirm``
with the cluster token), status, and the data API. It follows ``not_leader`` answers to the
leader they name (writes and ``strong``/``quorum`` reads only go to a leader), retries
idempotent calls (reads, upserts and deletes by id) on connection failures and 503s, and
remembers the highest write token (``seq`` and ``epoch``) it was given so that
``search(..., consistency="min_seq")`` reads its own writes on any member (or gets 409
``stale`` where that write was lost). Through a sharded cluster's router a write answers an
opaque ``token`` (a position per shard) instead: the client combines the tokens of its writes
and the same ``consistency="min_seq"`` sends them as ``min_token``.

TLS: an ``https://`` URL is verified against ``ca`` (the cluster's CA: a path, or PEM bytes,
as in the Secret ``NAME-tls`` key ``ca.crt``), else ``ssl`` (an SSLContext), else the
system's CAs; ``verify=False`` turns verification off (tests only). A certificate that does
not verify raises ``NodeError`` with code ``tls_untrusted`` at once (never retried).

Errors raise :class:`NodeError` (``status``, ``code``, ``message``, ``body``);
:class:`NotLeader` carries ``leader``. ``SyncNodeClient`` runs the same calls on a private
event loop for scripts.
"""

from __future__ import annotations

import asyncio
import os
import ssl as ssl_module
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
import numpy as np
import numpy.typing as npt
import orjson

from dvecdb_client import tokens
from dvecdb_client.bulk import CONTENT_TYPE as BULK_CONTENT_TYPE
from dvecdb_client.bulk import encode_batch

T = TypeVar("T")
Json = dict[str, Any]

_RETRY_STATUSES = frozenset({502, 503, 504})
_NOT_RETRIED_CODES = frozenset({"ack_timeout", "leadership_lost", "stale"})
PROMOTE_SECONDS = 30.0


class NodeError(Exception):
    """An error answer from a node (or ``status`` 0 when it could not be reached)."""

    def __init__(self, status: int, code: str, message: str, body: Json | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


class NotLeader(NodeError):
    """The member is not the leader; ``leader`` is the URL it named (or None)."""

    def __init__(self, status: int, message: str, leader: str | None, body: Json | None = None):
        super().__init__(status, "not_leader", message, body)
        self.leader = leader


def _error_from(status: int, raw: bytes, headers: Mapping[str, str]) -> NodeError:
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        text = raw.decode(errors="replace")[:200]
        return NodeError(status, "http_error", text or f"HTTP {status}")
    code = str(error.get("code", "http_error"))
    message = str(error.get("message", ""))
    if code == "not_leader":
        leader = error.get("leader") or headers.get("X-DVec-Leader")
        return NotLeader(status, message, str(leader) if leader else None, error)
    return NodeError(status, code, message, error)


def tls_context(
    *,
    ca: str | os.PathLike[str] | bytes | None = None,
    verify: bool = True,
    ssl: ssl_module.SSLContext | bool = True,
) -> ssl_module.SSLContext | bool:
    """What https requests verify against: `ca` (a file or PEM bytes), else `ssl`; False with
    `verify=False`."""
    if not verify:
        return False
    if ca is None:
        return ssl
    if isinstance(ca, bytes):
        return ssl_module.create_default_context(cadata=ca.decode())
    return ssl_module.create_default_context(cafile=os.fspath(ca))


class NodeClient:
    """See the module docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
        retries: int = 3,
        retry_delay: float = 0.1,
        follow_leader: bool = True,
        ssl: ssl_module.SSLContext | bool = True,
        ca: str | os.PathLike[str] | bytes | None = None,
        verify: bool = True,
        server_hostname: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # Connecting by address (a Service's ClusterIP found in the cluster DNS): the name the
        # server's certificate must carry, as curl's --connect-to (None: the URL's host).
        self.server_hostname = server_hostname
        # For https URLs: an SSLContext trusting the cluster's CA (True: the system's CAs).
        self.ssl = tls_context(ca=ca, verify=verify, ssl=ssl)
        self.leader_url: str | None = None
        self.token = token
        self.api_key = api_key
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = retries
        self.retry_delay = retry_delay
        self.follow_leader = follow_leader
        self.last_write_seq = 0
        self.last_write_epoch: int | None = None
        # Through a router: every shard's latest position this client wrote at.
        self._write_positions: dict[int, tokens.Position] = {}
        self._session = session
        self._own_session = session is None

    # -------------------------------------------------------------- lifecycle
    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl))
            self._own_session = True
        return self._session

    # ------------------------------------------------------------------- core
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        admin: bool = False,
        write: bool = False,
        idempotent: bool = False,
        time_limit: float | None = None,
    ) -> Any:
        """One call: JSON in and out; follows not_leader for writes, retries when allowed."""
        attempts = 1 + (self.retries if idempotent else 0)
        redirects = 3 if (write and self.follow_leader) else 0
        base = (self.leader_url or self.base_url) if write else self.base_url
        body = data if data is not None else (orjson.dumps(json) if json is not None else None)
        send_headers = {"Content-Type": "application/json"} if data is None else {}
        send_headers.update(headers or {})
        secret = self.token if admin else (self.api_key or self.token)
        if secret:
            send_headers["Authorization"] = f"Bearer {secret}"
        limit = aiohttp.ClientTimeout(total=time_limit) if time_limit is not None else self.timeout
        attempt = 0
        while True:
            try:
                async with self._http().request(
                    method,
                    base + path,
                    data=body,
                    params=params,
                    headers=send_headers,
                    timeout=limit,
                    ssl=self.ssl,
                    server_hostname=self.server_hostname if base == self.base_url else None,
                ) as resp:
                    raw = await resp.read()
                    if resp.status < 400:
                        return orjson.loads(raw) if raw else {}
                    error = _error_from(resp.status, raw, resp.headers)
            except aiohttp.ClientConnectorCertificateError as exc:
                # Not transient: retrying cannot make an untrusted certificate trusted.
                raise NodeError(
                    0, "tls_untrusted", f"{base}: the server's certificate is not trusted: {exc}"
                ) from exc
            except aiohttp.ClientConnectorSSLError as exc:
                # The handshake failed (e.g. https to a plain HTTP port): not transient either.
                raise NodeError(
                    0, "tls_error", f"{base}: the TLS handshake failed (is it TLS?): {exc}"
                ) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = NodeError(0, "unreachable", f"{base}: {type(exc).__name__}: {exc}")
            if isinstance(error, NotLeader) and redirects > 0 and error.leader:
                redirects -= 1
                base = self.leader_url = error.leader.rstrip("/")
                continue
            retryable = error.status == 0 or (
                error.status in _RETRY_STATUSES and error.code not in _NOT_RETRIED_CODES
            )
            attempt += 1
            if not retryable or attempt >= attempts:
                if write and error.status == 0 and self.leader_url:
                    self.leader_url = None  # ask the configured member next time
                raise error
            await asyncio.sleep(self.retry_delay * (2 ** (attempt - 1)))

    def _wrote(self, result: Json) -> Json:
        seq, epoch = result.get("seq"), result.get("epoch")
        if isinstance(seq, int) and seq > self.last_write_seq:
            self.last_write_seq = seq
            self.last_write_epoch = epoch if isinstance(epoch, int) else None
        token = result.get("token")
        if isinstance(token, str):
            try:
                positions = tokens.decode(token)
            except tokens.TokenError:
                return result  # not one this client can combine: the caller has it
            self._write_positions = tokens.combine(self._write_positions, positions)
        return result

    @property
    def last_write_token(self) -> str | None:
        """The combined router token of this client's writes (None: none went through one)."""
        return tokens.encode(self._write_positions) if self._write_positions else None

    # ------------------------------------------------------------ operations
    async def healthz(self) -> Json:
        return await self.request("GET", "/healthz", idempotent=True)  # type: ignore[no-any-return]

    async def readyz(self) -> bool:
        try:
            await self.request("GET", "/readyz")
        except NodeError:
            return False
        return True

    async def status(self) -> Json:
        return await self.request("GET", "/v1/status", idempotent=True)  # type: ignore[no-any-return]

    async def replication_status(self) -> Json:
        result = await self.request("GET", "/v1/replication/status", admin=True, idempotent=True)
        return result  # type: ignore[no-any-return]

    async def _lease_token(self) -> int | None:
        """A fresh lease token of the member (``lease_token`` of its ``/v1/status``)."""
        status = await self.status()
        token = status.get("lease_token")
        if not isinstance(token, int):
            lease = status.get("lease")
            token = lease.get("token") if isinstance(lease, dict) else None
        return token if isinstance(token, int) else None

    async def promote(
        self, epoch: int, *, members: int | None = None, lease_token: int | None = None
    ) -> Json:
        """Make the member lead at ``epoch``.

        A follower first applies every record it has received, which after a burst of writes
        takes longer than a status call: the time limit is at least ``PROMOTE_SECONDS``. The
        new leader's lease runs from ``lease_token`` (a fresh status is read for one when it
        is not given): a promote that reaches a frozen member after the operator moved on
        makes a leader whose lease has already lapsed.
        """
        if lease_token is None:
            lease_token = await self._lease_token()
        body: Json = {"epoch": epoch}
        if members is not None:
            body["members"] = members
        if lease_token is not None:
            body["lease_token"] = lease_token
        limit = max(self.timeout.total or 0.0, PROMOTE_SECONDS)
        result = await self.request(
            "POST", "/v1/admin/promote", json=body, admin=True, time_limit=limit
        )
        return result  # type: ignore[no-any-return]

    async def follow(self, leader: str, epoch: int) -> Json:
        body = {"leader": leader, "epoch": epoch}
        return await self.request("POST", "/v1/admin/follow", json=body, admin=True)  # type: ignore[no-any-return]

    async def fence(self, epoch: int) -> Json:
        body = {"epoch": epoch}
        return await self.request("POST", "/v1/admin/fence", json=body, admin=True)  # type: ignore[no-any-return]

    async def confirm(self, epoch: int, *, lease_token: int | None = None) -> Json:
        """Renew the leader's operator lease at ``epoch`` (409 ``stale_epoch`` or
        ``not_leader`` when the member does not lead at exactly that epoch).

        The lease runs from ``lease_token`` (``lease_token`` of a ``/v1/status`` answer);
        without one, a fresh status is read first: a confirmation that reaches a leader late
        (it was frozen, the link was slow) then renews only from when the leader answered,
        never from when the request arrived.
        """
        if lease_token is None:
            lease_token = await self._lease_token()
        body: Json = {"epoch": epoch}
        if lease_token is not None:
            body["lease_token"] = lease_token
        return await self.request("POST", "/v1/admin/confirm", json=body, admin=True)  # type: ignore[no-any-return]

    # ------------------------------------------------------------ collections
    async def create_collection(
        self,
        name: str,
        dimension: int,
        metric: str = "l2",
        *,
        hnsw: Mapping[str, int] | None = None,
        ack: str | None = None,
    ) -> Json:
        body: Json = {"name": name, "dimension": dimension, "metric": metric}
        if hnsw:
            body["hnsw"] = dict(hnsw)
        params = {"ack": ack} if ack else None
        result = await self.request("POST", "/v1/collections", json=body, params=params, write=True)
        return self._wrote(result)

    async def list_collections(self) -> list[Json]:
        result = await self.request("GET", "/v1/collections", idempotent=True)
        return list(result["collections"])

    async def get_collection(self, name: str) -> Json:
        return await self.request("GET", f"/v1/collections/{name}", idempotent=True)  # type: ignore[no-any-return]

    async def update_collection(self, name: str, *, ef_search: int, ack: str | None = None) -> Json:
        """Change a collection's default search ef on every member, without a restart.

        A replicated write (a log record): answers the collection as it now is with the
        write token (``seq``, ``epoch``). Retried like a read: the value is absolute, so a
        repeat changes nothing more.
        """
        body: Json = {"hnsw": {"ef_search": ef_search}}
        params = {"ack": ack} if ack else None
        result = await self.request(
            "PATCH",
            f"/v1/collections/{name}",
            json=body,
            params=params,
            write=True,
            idempotent=True,
        )
        return self._wrote(result)

    async def drop_collection(self, name: str, *, ack: str | None = None) -> Json:
        params = {"ack": ack} if ack else None
        result = await self.request("DELETE", f"/v1/collections/{name}", params=params, write=True)
        return self._wrote(result)

    # ---------------------------------------------------------------- vectors
    async def upsert(
        self,
        collection: str,
        vectors: Sequence[Mapping[str, Any]],
        *,
        ack: str | None = None,
        retry: bool = True,
    ) -> Json:
        """JSON upsert of ``[{id, vector, metadata?}]``; returns ``{seq, epoch, count}``."""
        body: Json = {"vectors": [dict(v) for v in vectors]}
        if ack:
            body["ack"] = ack
        result = await self.request(
            "PUT",
            f"/v1/collections/{collection}/vectors",
            json=body,
            write=True,
            idempotent=retry,
        )
        return self._wrote(result)

    async def upsert_bulk(
        self,
        collection: str,
        ids: Sequence[str],
        vectors: npt.ArrayLike,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        ack: str | None = None,
        retry: bool = True,
    ) -> Json:
        """Binary bulk upsert (float32 without JSON); returns ``{seq, epoch, count}``."""
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        meta = [dict(m) if m is not None else None for m in metadata] if metadata else None
        data = encode_batch(list(ids), matrix, meta)
        result = await self.request(
            "PUT",
            f"/v1/collections/{collection}/vectors",
            data=data,
            params={"ack": ack} if ack else None,
            headers={"Content-Type": BULK_CONTENT_TYPE},
            write=True,
            idempotent=retry,
        )
        return self._wrote(result)

    async def delete(
        self, collection: str, ids: Sequence[str], *, ack: str | None = None, retry: bool = True
    ) -> Json:
        body: Json = {"ids": list(ids)}
        if ack:
            body["ack"] = ack
        result = await self.request(
            "POST",
            f"/v1/collections/{collection}/vectors/delete",
            json=body,
            write=True,
            idempotent=retry,
        )
        return self._wrote(result)

    async def get(self, collection: str, item_id: str) -> Json | None:
        """One vector with metadata, or None if the id is absent."""
        try:
            result = await self.request(
                "GET", f"/v1/collections/{collection}/vectors/{item_id}", idempotent=True
            )
        except NodeError as exc:
            if exc.code == "vector_not_found":
                return None
            raise
        return result  # type: ignore[no-any-return]

    async def search(
        self,
        collection: str,
        vector: npt.ArrayLike | None = None,
        *,
        vectors: npt.ArrayLike | None = None,
        k: int = 10,
        ef: int | None = None,
        filter: Mapping[str, Any] | None = None,
        include_metadata: bool = False,
        consistency: str | None = None,
        min_seq: int | None = None,
        min_epoch: int | None = None,
        min_token: str | None = None,
    ) -> Json:
        """k-NN search; ``consistency="min_seq"`` without ``min_seq`` uses the last write's
        token (seq and epoch), or through a router the combined ``min_token`` of the writes."""
        body: Json = {"k": k, "include_metadata": include_metadata}
        if vector is not None:
            body["vector"] = np.asarray(vector, dtype=np.float32).tolist()
        if vectors is not None:
            body["vectors"] = np.asarray(vectors, dtype=np.float32).tolist()
        if ef is not None:
            body["ef"] = ef
        if filter:
            body["filter"] = dict(filter)
        if consistency == "min_seq":
            if min_seq is None and min_token is None and self._write_positions:
                min_token = self.last_write_token
            elif min_seq is None and min_token is None:
                min_seq = self.last_write_seq
                min_epoch = self.last_write_epoch if min_epoch is None else min_epoch
            consistency = None
        if min_token is not None:
            body["min_token"] = min_token
        if consistency:
            body["consistency"] = consistency
        if min_seq is not None:
            body["min_seq"] = min_seq
        if min_epoch is not None:
            body["min_epoch"] = min_epoch
        # strong and quorum reads are served by the leader only: route them like writes.
        at_leader = body.get("consistency") in ("strong", "quorum")
        return await self.request(  # type: ignore[no-any-return]
            "POST",
            f"/v1/collections/{collection}/search",
            json=body,
            idempotent=True,
            write=at_leader,
        )


class SyncNodeClient:
    """Blocking wrapper: each call runs the async client's on a private event loop thread."""

    def __init__(self, base_url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.client = self._call(self._make(base_url, options))

    @staticmethod
    async def _make(base_url: str, options: dict[str, Any]) -> NodeClient:
        return NodeClient(base_url, **options)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.client, name)
        if not callable(method):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if isinstance(result, Awaitable):
                return self._call(_await(result))
            return result

        return call

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._call(self.client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> SyncNodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _await(awaitable: Awaitable[T]) -> T:
    return await awaitable
