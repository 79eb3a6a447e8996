"""Crash safety: a real node ingesting under load is SIGKILLed at random points and restarted;
every acknowledged id must be there with its exact vector."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from dvecdb_client import bulk

pytestmark = pytest.mark.integration
DIM = 8
ROUNDS = 3
WRITERS = 4


async def _writer(
    session: aiohttp.ClientSession,
    url: str,
    prefix: str,
    acked: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> None:
    batch_no = 0
    while True:
        size = int(rng.integers(1, 20))
        ids = [f"{prefix}-{batch_no}-{i}" for i in range(size)]
        vectors = rng.standard_normal((size, DIM)).astype(np.float32)
        batch_no += 1
        try:
            async with session.put(
                f"{url}/v1/collections/c/vectors",
                data=bulk.encode_batch(ids, vectors),
                headers={"Content-Type": bulk.CONTENT_TYPE},
            ) as resp:
                if resp.status != 200:
                    return
                await resp.read()
        except (TimeoutError, aiohttp.ClientError):
            return
        acked.update(zip(ids, vectors, strict=True))


async def _ingest_until_killed(node: Any, acked: dict[str, np.ndarray], seed: int) -> None:
    kill_after = random.Random(seed).uniform(0.1, 1.0)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        writers = [
            asyncio.create_task(
                _writer(session, node.url, f"s{seed}w{w}", acked, np.random.default_rng([seed, w]))
            )
            for w in range(WRITERS)
        ]
        await asyncio.sleep(kill_after)
        await asyncio.to_thread(node.kill)
        async with asyncio.timeout(30):
            await asyncio.gather(*writers)


async def _verify(node: Any, acked: dict[str, np.ndarray]) -> None:
    status, described = node.request("GET", "/v1/collections/c")
    assert status == 200
    assert described["count"] >= len(acked)
    items = list(acked.items())
    async with aiohttp.ClientSession() as session:

        async def check(start: int) -> None:
            for item_id, vector in items[start::8]:
                url = f"{node.url}/v1/collections/c/vectors/{item_id}"
                async with session.get(url) as resp:
                    assert resp.status == 200, f"acknowledged id {item_id} lost"
                    got = np.asarray((await resp.json())["vector"], dtype=np.float32)
                    assert np.array_equal(got, vector), f"vector of {item_id} changed"

        await asyncio.gather(*(check(start) for start in range(8)))


@pytest.mark.parametrize("fsync", ["always", "batch"])
async def test_sigkill_loses_no_acknowledged_write(node_factory: Any, fsync: str) -> None:
    node = node_factory(args=["--fsync", fsync, "--checkpoint-interval-seconds", "1"])
    status, _ = node.request("POST", "/v1/collections", {"name": "c", "dimension": DIM})
    assert status == 201
    acked: dict[str, np.ndarray] = {}
    for round_no in range(ROUNDS):
        before = len(acked)
        await _ingest_until_killed(node, acked, seed=round_no * 7919 + len(fsync))
        assert len(acked) > before, "no write was acknowledged before the kill"
        print(f"round {round_no}: {len(acked)} acknowledged ids")
        await asyncio.to_thread(node.start)
        await _verify(node, acked)


@pytest.fixture
def small_data_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder whose ``data`` sub-folder is a 2 MiB tmpfs (needs root; skipped otherwise)."""
    mount = tmp_path / "data"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield tmp_path
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_answers_507_and_loses_no_acknowledged_write(
    node_factory: Any, small_data_disk: Path
) -> None:
    dim = 256
    node = node_factory(data_dir=small_data_disk, args=["--fsync", "batch"])
    try:
        status, _ = node.request("POST", "/v1/collections", {"name": "c", "dimension": dim})
        assert status == 201
        data = small_data_disk / "data"
        free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
        (data / "ballast").write_bytes(b"\0" * (free - (600 << 10)))
        rng = np.random.default_rng(11)
        acked: dict[str, np.ndarray] = {}
        full: dict[str, Any] = {}
        async with aiohttp.ClientSession() as session:

            async def put(ids: list[str]) -> tuple[int, Any]:
                vectors = rng.standard_normal((len(ids), dim)).astype(np.float32)
                async with session.put(
                    f"{node.url}/v1/collections/c/vectors",
                    data=bulk.encode_batch(ids, vectors),
                    headers={"Content-Type": bulk.CONTENT_TYPE},
                ) as resp:
                    body = await resp.json()
                if resp.status == 200:
                    acked.update(zip(ids, vectors, strict=True))
                return resp.status, body

            for i in range(100):  # 100 x 40 KiB: far more than the 600 KiB left
                status, body = await put([f"b{i}-{j}" for j in range(40)])
                if status != 200:
                    full = body
                    break
            assert status == 507 and full["error"]["code"] == "disk_full", (status, full)
            assert acked
            assert node.request("GET", "/readyz")[0] == 200  # a full disk is no failure
            (data / "ballast").unlink()  # space returns
            status, _ = await put(["late-0", "late-1"])
            assert status == 200
        node.kill()
        node.start()
        await _verify(node, acked)
    finally:
        node.kill()


async def test_a_flipped_byte_in_an_early_wal_segment_keeps_the_node_out_of_service(
    node_factory: Any,
) -> None:
    dim = 256
    node = node_factory(args=["--wal-segment-bytes", str(1 << 16)])
    status, _ = node.request("POST", "/v1/collections", {"name": "c", "dimension": dim})
    assert status == 201
    rng = np.random.default_rng(5)
    for i in range(12):  # 12 x 40 KiB: several 64 KiB segments
        ids = [f"b{i}-{j}" for j in range(40)]
        vectors = rng.standard_normal((40, dim)).astype(np.float32)
        status, _ = node.request(
            "PUT",
            "/v1/collections/c/vectors",
            data=bulk.encode_batch(ids, vectors),
            headers={"Content-Type": bulk.CONTENT_TYPE},
        )
        assert status == 200
    node.kill()
    segments = sorted((node.data_dir / "wal").glob("*.wal"))
    assert len(segments) >= 4
    victim = segments[1]
    damaged = bytearray(victim.read_bytes())
    damaged[100] ^= 0x20
    victim.write_bytes(bytes(damaged))
    before = {p.name: p.stat().st_size for p in segments}
    node.start(wait=False)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        try:
            status, body = node.request("GET", "/readyz", timeout=1.0)
            if status != 503 or "recovering" not in str(body):
                break
        except OSError:
            pass
        assert asyncio.get_running_loop().time() < deadline, node.log()
        await asyncio.sleep(0.1)
    assert status == 503, body
    assert victim.name in str(body) and "byte offset 0" in str(body), body
    after = {p.name: p.stat().st_size for p in sorted((node.data_dir / "wal").glob("*.wal"))}
    assert after == before  # nothing acknowledged was deleted to make the node start
