"""The bench's Qdrant runner against the cached Qdrant binary (skipped where it is not built).

The binary is built once outside the repo (DESIGN.md, "Performance method"); these tests check
that the runner serves it on loopback from a scratch folder and that stopping it ends it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dvecbench import qdrant
from dvecbench.httpc import Client


@pytest.fixture(scope="module")
def binary() -> Path:
    try:
        return qdrant.cached_binary()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp writes them) listening on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, hexport = local.partition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


@pytest.mark.integration
def test_serves_searches_on_loopback_and_stops_by_pid(binary: Path) -> None:
    with qdrant.running(binary) as (url, procs):
        pid = procs.pid("qdrant")
        port = int(url.rsplit(":", 1)[1])
        assert _listening(port) == {"0100007F"}  # 127.0.0.1 only
        client = Client(url)
        try:
            config = {"vectors": {"size": 2, "distance": "Euclid"}}
            client.json("PUT", "/collections/t", {**config, "hnsw_config": {"m": 16}})
            points = [{"id": i, "vector": [float(i), 0.0]} for i in range(10)]
            client.json("PUT", "/collections/t/points?wait=true", {"points": points})
            found = client.json("POST", "/collections/t/points/query", {"query": [6.9, 0.1]})
            assert [p["id"] for p in found["result"]["points"][:2]] == [7, 6]
        finally:
            client.close()
        data_dir = procs.log_dir / "data"
        assert (data_dir / "storage" / "collections" / "t").is_dir()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not data_dir.exists()  # the scratch folder goes with it


@pytest.mark.unit
def test_the_binary_is_looked_up_by_version_and_profile_in_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVECDB_CACHE", str(tmp_path))
    where = tmp_path / "qdrant-1.2.3-perf" / "qdrant"
    with pytest.raises(FileNotFoundError, match=str(where)):
        qdrant.cached_binary("1.2.3")
    where.parent.mkdir()
    where.write_text("#!/bin/sh\n")
    where.chmod(0o755)
    assert qdrant.cached_binary("1.2.3") == where
