"""The router's Prometheus metrics: what an operator pages on in front of the shards."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RouterMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dvecdb_router_requests",
            "Requests answered by the router, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.fanout_seconds = Histogram(
            "dvecdb_router_fanout_seconds",
            "Time from sending a request to every shard to the last answer.",
            ["operation"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.partial = Counter(
            "dvecdb_router_partial_answers",
            "Searches answered without every shard (allow_partial).",
            registry=self.registry,
        )
        self.unavailable = Counter(
            "dvecdb_router_shard_unavailable",
            "Requests that found no member of a shard to serve them, by shard.",
            ["shard"],
            registry=self.registry,
        )
        self.retries = Counter(
            "dvecdb_router_retries",
            "Requests sent again to another member or a new leader, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.open_circuits = Gauge(
            "dvecdb_router_open_circuits",
            "Members the router is not sending to after repeated failures.",
            registry=self.registry,
        )
        self.leaders = Gauge(
            "dvecdb_router_shards_with_leader",
            "Shards whose leader the router knows.",
            registry=self.registry,
        )
        self.slot_moved_retries = Counter(
            "dvecdb_router_slot_moved_retries",
            "Write parts refused `slot_moved` (their slots were being handed over) and sent again.",
            registry=self.registry,
        )
        self.slot_moving = Counter(
            "dvecdb_router_slot_moving",
            "Writes answered 503 slot_moving: their slots stayed refused past the deadline.",
            registry=self.registry,
        )
        self.hits_dropped = Counter(
            "dvecdb_router_hits_dropped_not_owner",
            "Search hits dropped because the answering shard does not own the hit's slot "
            "(a copy during a move, or a stale one before the source's purge).",
            registry=self.registry,
        )
        self.forwarded = Counter(
            "dvecdb_router_searches_forwarded",
            "Searches answered with the lone owning shard's bytes (nothing to merge).",
            registry=self.registry,
        )
        self.map_version = Gauge(
            "dvecdb_router_slot_map_version",
            "Version of the slot map the router routes by.",
            registry=self.registry,
        )
        # Children by label values: `labels()` on every request costs more than the count.
        self._children: dict[tuple[str, ...], Any] = {}

    def request(self, method: str, route: str, status: str) -> None:
        key = ("request", method, route, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.requests.labels(method, route, status)
        child.inc()

    def fanout(self, operation: str, seconds: float) -> None:
        key = ("fanout", operation)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self.fanout_seconds.labels(operation)
        child.observe(seconds)
