"""Prometheus metrics of one node, in a registry of its own (tests build many apps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dvecdb_node.storage.engine import Engine

_LATENCY_BUCKETS = (
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class NodeMetrics:
    """Request, WAL and checkpoint metrics; also the engine's :class:`StorageObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_seconds = Histogram(
            "dvecdb_http_request_duration_seconds",
            "HTTP request latency by route.",
            ["method", "route", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # labels() costs a lock and a tuple hash per call; one child per (method, route, status)
        # is looked up once and kept, which matters on the search hot path.
        self._request_children: dict[tuple[str, str, int], Histogram] = {}
        self.wal_bytes = Counter(
            "dvecdb_wal_written_bytes", "Bytes appended to the WAL.", registry=self.registry
        )
        self.fsync_seconds = Histogram(
            "dvecdb_wal_fsync_duration_seconds",
            "WAL fsync latency.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.checkpoint_seconds = Histogram(
            "dvecdb_checkpoint_duration_seconds",
            "Checkpoint duration.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        # What writes (and a follower's apply) wait for during a checkpoint: the page-worthy part.
        self.checkpoint_pause_seconds = Histogram(
            "dvecdb_checkpoint_write_pause_seconds",
            "How long a checkpoint held writes back.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.slot_moved = Counter(
            "dvecdb_slot_moved",
            "Writes refused with 409 slot_moved (an id in a slot fenced for resharding).",
            registry=self.registry,
        )
        self.fastlane_connections = Gauge(
            "dvecdb_fastlane_connections",
            "Open connections answered by the search fast lane.",
            registry=self.registry,
        )
        self.fastlane_handoffs = Counter(
            "dvecdb_fastlane_handoffs",
            "Connections the fast lane handed to aiohttp (a request it does not take).",
            registry=self.registry,
        )
        self.fastlane_batch = Histogram(
            "dvecdb_fastlane_batch_searches",
            "Search requests the fast lane answered with one index search (its batches).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self.request_seconds.labels(method, route, str(status))
            self._request_children[key] = child
        child.observe(seconds)

    # StorageObserver
    def wal_appended(self, nbytes: int) -> None:
        self.wal_bytes.inc(nbytes)

    def fsync_done(self, seconds: float) -> None:
        self.fsync_seconds.observe(seconds)

    def checkpoint_done(self, seconds: float, paused: float) -> None:
        self.checkpoint_seconds.observe(seconds)
        self.checkpoint_pause_seconds.observe(paused)

    def watch_engine(self, engine: Engine, epoch: Callable[[], int]) -> None:
        """Export the engine's positions and collection sizes, read at scrape time."""
        self.registry.register(_EngineCollector(engine, epoch))


class _EngineCollector(Collector):
    def __init__(self, engine: Engine, epoch: Callable[[], int]) -> None:
        self._engine = engine
        self._epoch = epoch

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        engine = self._engine
        ready = engine.ready
        positions = {
            "dvecdb_last_seq": ("Newest seq appended to the WAL.", engine.last_seq),
            "dvecdb_applied_seq": ("Newest seq applied to the indexes.", engine.applied_seq),
            "dvecdb_durable_seq": ("Newest seq fsynced.", engine.durable_seq),
            "dvecdb_checkpoint_seq": ("Seq covered by the newest checkpoint.",
                                      engine.checkpoint_seq),
            "dvecdb_epoch": ("Epoch this node writes or follows at.", self._epoch()),
            "dvecdb_ready": ("1 once recovery is done.", int(ready)),
        }  # fmt: skip
        for name, (doc, value) in positions.items():
            yield GaugeMetricFamily(name, doc, value=value)
        vectors = GaugeMetricFamily(
            "dvecdb_collection_vectors", "Live vectors per collection.", labels=["collection"]
        )
        graphs = GaugeMetricFamily(
            "dvecdb_filter_value_graphs",
            "Ready graphs of filtered metadata values per collection (storage.values): each "
            "holds a copy of its value's vectors.",
            labels=["collection"],
        )
        wal_size = GaugeMetricFamily("dvecdb_wal_size_bytes", "Bytes of retained WAL segments.")
        tombstones = GaugeMetricFamily(
            "dvecdb_index_tombstones",
            "Deleted elements still in a collection's HNSW graph (storage.compaction removes "
            "them once they pass a share of the live count).",
            labels=["collection"],
        )
        compactions = CounterMetricFamily(
            "dvecdb_index_compactions",
            "Compactions of a collection's HNSW index since it was loaded.",
            labels=["collection"],
        )
        yield GaugeMetricFamily(
            "dvecdb_fenced_slots",
            "Hash slots fenced for resharding (ordinary writes to them answer 409 slot_moved).",
            value=len(engine.slot_fences),
        )
        if ready:
            for collection in engine.collections():
                vectors.add_metric([collection.name], collection.count)
                graphs.add_metric([collection.name], collection.value_graphs)
                tombstones.add_metric([collection.name], collection.tombstones)
                compactions.add_metric([collection.name], collection.compactions)
            wal_size.add_metric([], engine.wal.size_bytes())
        yield vectors
        yield graphs
        yield tombstones
        yield compactions
        yield wal_size
