"""Replication metrics, read at scrape time from the manager."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dvecdb_node.replication.manager import ReplicationManager


class ReplicationCollector(Collector):
    def __init__(self, manager: ReplicationManager) -> None:
        self._manager = manager

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        manager = self._manager
        lag_seq = GaugeMetricFamily(
            "dvecdb_replication_lag_seq",
            "Records the follower has not applied yet (on the leader, per follower).",
            labels=["follower"],
        )
        lag_seconds = GaugeMetricFamily(
            "dvecdb_replication_lag_seconds",
            "Age of the oldest write the follower has not applied (on the leader).",
            labels=["follower"],
        )
        received = GaugeMetricFamily(
            "dvecdb_replication_received_seq",
            "Seq the follower holds durably (on the leader, per follower).",
            labels=["follower"],
        )
        connected = GaugeMetricFamily(
            "dvecdb_replication_connected_followers", "Followers streaming from this leader."
        )
        count = 0
        if manager.role.is_leader and manager.engine.ready:
            for entry in manager.followers():
                label = [str(entry["node_id"])]
                lag_seq.add_metric(label, entry["lag_seq"])
                lag_seconds.add_metric(label, entry["lag_seconds"])
                received.add_metric(label, entry["received_seq"])
                count += int(bool(entry["connected"]))
        connected.add_metric([], count)
        yield lag_seq
        yield lag_seconds
        yield received
        yield connected
        lease = GaugeMetricFamily(
            "dvecdb_leader_lease_valid",
            "1 while this leader's lease holds (a majority or the operator heard from within "
            "lease_seconds); 0 on a leader that acknowledges no write, and on other members.",
        )
        lease.add_metric([], int(manager.role.is_leader and manager.role.lease_valid))
        yield lease
        blocked = GaugeMetricFamily(
            "dvecdb_reads_refused",
            "1 while this member refuses data reads (not agreed with a leader, or too stale).",
        )
        blocked.add_metric([], int(manager.reads_blocked))
        yield blocked
        follower = manager.follower
        snapshots = GaugeMetricFamily(
            "dvecdb_replication_snapshots_installed",
            "Snapshots this follower installed since it was told to follow.",
        )
        snapshots.add_metric([], follower.snapshots_installed if follower else 0)
        yield snapshots
