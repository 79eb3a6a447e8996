"""The fast lane of a real ``dvecdb-node``: search connections answered without aiohttp.

Raw sockets, so the wire is what is checked: pipelining, split packets, the hand-off of a
connection to aiohttp on its first other request, errors and metrics like aiohttp's path.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.integration

SEARCH = "/v1/collections/c/search"


class Wire:
    """One keep-alive connection speaking raw HTTP/1.1."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.pending = b""

    def send(self, raw: bytes) -> None:
        self.sock.sendall(raw)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.pending += chunk

    def response(self) -> tuple[int, dict[str, str], Any]:
        while b"\r\n\r\n" not in self.pending:
            self._fill()
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        while len(self.pending) < length:
            self._fill()
        body, self.pending = self.pending[:length], self.pending[length:]
        if "json" not in headers.get("content-type", ""):
            return status, headers, body.decode()
        return status, headers, json.loads(body)

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, TimeoutError):
            return False

    def close(self) -> None:
        self.sock.close()


def request(
    method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: test", f"Content-Length: {len(data)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def query(vector: list[float], **extra: Any) -> dict[str, Any]:
    return {"vector": vector, "k": 2, **extra}


@pytest.fixture
def node(node_factory: Any) -> Any:
    node = node_factory(standalone=True, env={"DVECDB_MAX_BODY_BYTES": "65536"})
    _seed(node)
    return node


def _seed(node: Any, headers: dict[str, str] | None = None) -> None:
    status, _ = node.request(
        "POST", "/v1/collections", {"name": "c", "dimension": 3}, headers=headers
    )
    assert status == 201
    vectors = [
        {"id": "x", "vector": [1, 0, 0], "metadata": {"axis": "x"}},
        {"id": "y", "vector": [0, 1, 0], "metadata": {"axis": "y"}},
        {"id": "z", "vector": [0, 0, 1], "metadata": {"axis": "z"}},
    ]
    status, _ = node.request(
        "PUT", "/v1/collections/c/vectors", {"vectors": vectors}, headers=headers
    )
    assert status == 200


def _ids(body: dict[str, Any]) -> list[str]:
    return [hit["id"] for hit in body["results"][0]]


def test_pipelined_searches_keep_their_order(node: Any) -> None:
    wire = Wire(node.port)
    vectors = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0.1, 1]]
    # A filtered search (answered by a task) in the middle must not overtake or be overtaken.
    bodies = [query(v) for v in vectors[:2]]
    bodies.append(query(vectors[2], filter={"axis": "z"}))
    bodies.append(query(vectors[3]))
    wire.send(b"".join(request("POST", SEARCH, b) for b in bodies))
    firsts = []
    for _ in bodies:
        status, headers, body = wire.response()
        assert status == 200 and "server" not in headers  # answered by the fast lane
        firsts.append(_ids(body)[0])
    assert firsts == ["x", "y", "z", "z"]
    wire.close()


def test_split_packets_are_reassembled(node: Any) -> None:
    wire = Wire(node.port)
    raw = request("POST", SEARCH, query([0, 1, 0]))
    for cut in (5, 40, len(raw) - 3):
        wire.send(raw[:cut])
        time.sleep(0.05)
        wire.send(raw[cut:])
        status, _, body = wire.response()
        assert status == 200 and _ids(body)[0] == "y"
    wire.close()


def test_other_requests_hand_the_connection_to_aiohttp(node: Any) -> None:
    wire = Wire(node.port)
    wire.send(request("POST", SEARCH, query([1, 0, 0])))
    fast = wire.response()
    wire.send(request("GET", "/v1/collections/c") + request("POST", SEARCH, query([1, 0, 0])))
    status, headers, described = wire.response()
    assert status == 200 and described["count"] == 3 and "aiohttp" in headers["server"]
    slow = wire.response()
    assert "aiohttp" in slow[1]["server"]
    assert fast[0] == slow[0] == 200
    assert fast[2] == slow[2]  # the same answer from either server
    wire.close()


def test_chunked_bodies_are_parsed_by_aiohttp(node: Any) -> None:
    wire = Wire(node.port)
    data = json.dumps(query([0, 0, 1])).encode()
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
    wire.send(
        f"POST {SEARCH} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + chunked
    )
    status, headers, body = wire.response()
    assert status == 200 and _ids(body)[0] == "z" and "aiohttp" in headers["server"]
    wire.close()


def test_errors_match_the_aiohttp_path(node: Any) -> None:
    cases = [
        (SEARCH, b"{not json", 400, "malformed_json"),
        (SEARCH, json.dumps({"vector": [1, 0]}).encode(), 400, "dimension_mismatch"),
        ("/v1/collections/nope/search", json.dumps(query([1, 0, 0])).encode(), 404, None),
        (SEARCH, json.dumps(query([1, 0, 0], k=0)).encode(), 400, None),
    ]
    for path, data, status, code in cases:
        answers = []
        for lane in ("fast", "aiohttp"):
            wire = Wire(node.port)
            if lane == "aiohttp":
                wire.send(request("GET", "/healthz"))
                wire.response()
            head = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(data)}\r\n\r\n"
            wire.send(head.encode() + data)
            answers.append(wire.response())
            wire.close()
        (fast_status, _, fast_body), (slow_status, _, slow_body) = answers
        assert fast_status == slow_status == status
        assert fast_body == slow_body
        assert code is None or fast_body["error"]["code"] == code


def test_oversized_body_is_refused_by_aiohttp(node: Any) -> None:
    wire = Wire(node.port)
    data = b" " * 70_000
    wire.send(f"POST {SEARCH} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(data)}\r\n\r\n".encode())
    wire.send(data)
    status, _, body = wire.response()
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    wire.close()


def test_connection_close_is_honoured(node: Any) -> None:
    wire = Wire(node.port)
    wire.send(request("POST", SEARCH, query([1, 0, 0]), {"Connection": "close"}))
    status, headers, _ = wire.response()
    assert status == 200 and headers["connection"] == "close"
    assert wire.closed_by_peer()
    wire.close()


def test_lane_connections_and_handoffs_are_exported(node: Any) -> None:
    scraper = Wire(node.port)  # one keep-alive scraper: handed off once, before counting

    def metric(name: str) -> float:
        scraper.send(request("GET", "/metrics"))
        text = scraper.response()[2]
        return float(next(x for x in text.splitlines() if x.startswith(name + " ")).split()[-1])

    before = metric("dvecdb_fastlane_handoffs_total")
    wires = [Wire(node.port) for _ in range(3)]
    for wire in wires:
        wire.send(request("POST", SEARCH, query([1, 0, 0])))
        assert wire.response()[0] == 200
    assert metric("dvecdb_fastlane_connections") == 3
    wires[0].send(request("GET", "/healthz"))
    assert wires[0].response()[0] == 200
    assert metric("dvecdb_fastlane_handoffs_total") == before + 1
    assert metric("dvecdb_fastlane_connections") == 2
    for wire in [*wires, scraper]:
        wire.close()


def test_search_metrics_count_fast_lane_requests(node: Any) -> None:
    def searches(status: str) -> float:
        _, text = node.request("GET", "/metrics")
        prefix = (
            'dvecdb_http_request_duration_seconds_count{method="POST",'
            f'route="/v1/collections/{{name}}/search",status="{status}"}} '
        )
        lines = [line for line in text.splitlines() if line.startswith(prefix)]
        return float(lines[0].split()[-1]) if lines else 0.0

    before_ok, before_bad = searches("200"), searches("400")
    wire = Wire(node.port)
    wire.send(request("POST", SEARCH, query([1, 0, 0])) * 3 + request("POST", SEARCH, {"k": 1}))
    assert [wire.response()[0] for _ in range(4)] == [200, 200, 200, 400]
    wire.close()
    assert searches("200") == before_ok + 3
    assert searches("400") == before_bad + 1


def test_api_key_is_checked(node_factory: Any) -> None:
    node = node_factory(standalone=True, env={"DVECDB_API_KEY": "k3y"})
    _seed(node, headers={"Authorization": "Bearer k3y"})
    expected = {None: 401, "Bearer wrong": 403, "Bearer k3y": 200}
    for auth, status in expected.items():
        wire = Wire(node.port)
        wire.send(
            request("POST", SEARCH, query([1, 0, 0]), {"Authorization": auth} if auth else {})
        )
        got, answered, _ = wire.response()
        assert got == status and "server" not in answered
        wire.close()


def test_disabled_fast_lane_leaves_everything_to_aiohttp(node_factory: Any) -> None:
    node = node_factory(standalone=True, args=["--no-fast-search"])
    _seed(node)
    wire = Wire(node.port)
    wire.send(request("POST", SEARCH, query([1, 0, 0])))
    status, headers, _ = wire.response()
    assert status == 200 and "aiohttp" in headers["server"]
    wire.close()


def test_sigterm_closes_idle_fast_lane_connections(node: Any) -> None:
    wire = Wire(node.port)
    wire.send(request("POST", SEARCH, query([1, 0, 0])))
    assert wire.response()[0] == 200
    started = time.monotonic()
    node.signal(signal.SIGTERM)
    assert node.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 5  # an idle connection does not wait out the grace
    wire.close()


def test_idle_and_trickling_connections_are_closed(node_factory: Any) -> None:
    node = node_factory(standalone=True, env={"DVECDB_KEEPALIVE_SECONDS": "1"})
    _seed(node)
    idle, trickle, busy = Wire(node.port), Wire(node.port), Wire(node.port)
    idle.send(request("POST", SEARCH, query([1, 0, 0])))
    assert idle.response()[0] == 200
    raw = request("POST", SEARCH, query([0, 1, 0]))
    deadline = time.monotonic() + 4
    sent, cut_off = 0, False
    while time.monotonic() < deadline and sent < len(raw):
        try:  # a head a byte at a time, never completing a request
            trickle.send(raw[sent : sent + 1])
        except (BrokenPipeError, ConnectionResetError):
            cut_off = True
            break
        sent += 1
        busy.send(request("POST", SEARCH, query([0, 0, 1])))  # an active link stays open
        assert busy.response()[0] == 200
        time.sleep(0.1)
    assert cut_off or trickle.closed_by_peer()
    assert sent < len(raw)
    assert idle.closed_by_peer()
    busy.send(request("POST", SEARCH, query([0, 0, 1])))
    assert busy.response()[0] == 200
    for wire in (idle, trickle, busy):
        wire.close()


def test_searches_stay_correct_while_writes_hold_the_index(node: Any) -> None:
    """Writes take the index's exclusive lock: lane searches then wait in a task, in order."""
    stop = threading.Event()
    errors: list[str] = []

    def write(worker: int) -> None:
        rng = np.random.default_rng(worker)
        batch = 0
        while not stop.is_set():
            vectors = [
                {"id": f"w{worker}-{batch}-{i}", "vector": rng.random(3).tolist()}
                for i in range(50)
            ]
            status, body = node.request("PUT", "/v1/collections/c/vectors", {"vectors": vectors})
            if status != 200:
                errors.append(f"write {status}: {body}")
            batch += 1

    def search(worker: int) -> int:
        wire = Wire(node.port)
        answered = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            probes = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
            wire.send(b"".join(request("POST", SEARCH, query(v)) for v in probes))
            for _ in probes:
                status, headers, body = wire.response()
                if status != 200 or "server" in headers or len(body["results"][0]) != 2:
                    errors.append(f"search {status} {headers} {body}")
                answered += 1
        wire.close()
        return answered

    writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
    for thread in writers:
        thread.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            answered = sum(pool.map(search, range(4)))
    finally:
        stop.set()
        for thread in writers:
            thread.join(30)
    assert not errors, errors[:3]
    assert answered > 0
    status, described = node.request("GET", "/v1/collections/c")
    assert status == 200 and described["count"] > 3


def test_searches_from_many_connections_are_answered_together(node: Any) -> None:
    """Requests that arrive in one loop iteration share one index search (split over the
    cores the node has): each still gets its own answer, in its connection's order, and a
    client that left meanwhile costs the others nothing."""
    status, _ = node.request("POST", "/v1/collections", {"name": "d", "dimension": 2})
    assert status == 201
    vectors = [{"id": f"d{i}", "vector": [i, 1]} for i in range(5)]
    assert node.request("PUT", "/v1/collections/d/vectors", {"vectors": vectors})[0] == 200
    wire_c = "/v1/collections/c/search"
    wire_d = "/v1/collections/d/search"
    plan: list[list[tuple[str, dict[str, Any], list[str]]]] = [
        [(wire_c, query([1, 0.2, 0]), ["x", "y"]), (wire_c, query([0.1, 0, 1]), ["z", "x"])],
        [(wire_c, query([0, 1, 0], k=1), ["y"])],
        [(wire_d, {"vector": [3.2, 1], "k": 2}, ["d3", "d4"])],
        [(wire_d, {"vector": [0, 1], "k": 1}, ["d0"])],
        *[[(wire_c, query([0, 0.9, 0.1]), ["y", "z"])] for _ in range(5)],
    ]
    wires = [Wire(node.port) for _ in plan]
    leaver = Wire(node.port)
    for wire in [*wires, leaver]:  # accepted, and in the lane, before the node stops
        wire.send(request("POST", wire_c, query([0, 1, 0], k=1)))
        assert wire.response()[0] == 200
    before = _batch_histogram(node)
    node.signal(signal.SIGSTOP)
    try:
        for wire, requests in zip(wires, plan, strict=True):
            wire.send(b"".join(request("POST", path, body) for path, body, _ in requests))
        leaver.send(request("POST", wire_c, query([1, 0, 0])))
        leaver.close()
        time.sleep(0.2)  # every request is in the node's socket buffers
    finally:
        node.signal(signal.SIGCONT)
    for wire, requests in zip(wires, plan, strict=True):
        for _path, _body, expected in requests:
            status, headers, body = wire.response()
            assert status == 200 and "server" not in headers
            assert [hit["id"] for hit in body["results"][0]] == expected
        wire.close()
    count, total = (a - b for a, b in zip(_batch_histogram(node), before, strict=True))
    assert total >= len(plan) + 1  # every search went through a batch (the leaver's maybe too)
    assert count < total  # and at least one index search answered several requests


def _batch_histogram(node: Any) -> tuple[float, float]:
    """(index searches, requests answered by them) of the lane's batches so far."""
    _, text = node.request("GET", "/metrics")
    values = {}
    for line in text.splitlines():
        if line.startswith("dvecdb_fastlane_batch_searches_"):
            name, value = line.split()
            values[name] = float(value)
    return (
        values.get("dvecdb_fastlane_batch_searches_count", 0.0),
        values.get("dvecdb_fastlane_batch_searches_sum", 0.0),
    )


def test_binary_query_bodies_answer_like_json(node: Any) -> None:
    """``application/x-dvec-queries``: the same hits as the JSON form, on both servers."""
    from dvecdb_client.querybody import CONTENT_TYPE, encode_queries

    rows = np.asarray([[1, 0.2, 0], [0.1, 0, 1], [0, 0.9, 0.1]], dtype=np.float32)
    json_answer = Wire(node.port)
    json_answer.send(request("POST", SEARCH, {"vectors": rows.tolist(), "k": 2}))
    want = json_answer.response()[2]["results"]
    json_answer.close()
    assert [[hit["id"] for hit in row] for row in want] == [["x", "y"], ["z", "x"], ["y", "z"]]

    def binary(data: bytes) -> bytes:
        head = f"POST {SEARCH} HTTP/1.1\r\nHost: t\r\nContent-Type: {CONTENT_TYPE}\r\n"
        return (head + f"Content-Length: {len(data)}\r\n\r\n").encode() + data

    bad = encode_queries(rows[:, :2], {"k": 2})
    for lane in ("fast", "aiohttp"):
        wire = Wire(node.port)
        if lane == "aiohttp":
            wire.send(request("GET", "/healthz"))
            wire.response()
        wire.send(binary(encode_queries(rows, {"k": 2})) + binary(bad))
        status, headers, body = wire.response()
        assert status == 200 and ("server" in headers) == (lane == "aiohttp")
        assert body["results"] == want
        status, _, body = wire.response()
        assert status == 400 and body["error"]["code"] == "dimension_mismatch"
        wire.close()
