"""Node configuration: every CLI flag is also an environment variable ``DVECDB_<NAME>``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dvecdb_client.secrets import key_values
from dvecdb_client.tlsfiles import TlsFiles
from dvecdb_node.credentials import Credentials
from dvecdb_node.storage.engine import EngineOptions, FsyncMode
from dvecdb_node.storage.policy import CheckpointPolicy

AckLevel = Literal["leader", "one", "quorum"]


class NodeSettings(BaseSettings):
    """What a node is started with; the CLI overrides the environment."""

    model_config = SettingsConfigDict(env_prefix="DVECDB_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = Path("./data")
    node_id: str = "node-0"
    standalone: bool = False
    advertise_url: str | None = None
    fsync: FsyncMode = FsyncMode.BATCH
    default_ack: AckLevel = "one"
    # Secrets (dvecdb_node.credentials): comma-separated values, several during a rotation.
    api_key: str | None = None
    read_only_key: str | None = None
    cluster_token: str | None = None
    # A folder of files apiKey, readOnlyKey, clusterToken (a mounted Secret), re-read while
    # the node runs; a file there replaces the setting of its kind.
    secrets_dir: Path | None = None
    secrets_refresh_seconds: float = Field(5.0, gt=0)
    # TLS (dvecdb_node.tls): with a certificate and key the port serves HTTPS only; the CA is
    # what members verify each other against. Files are re-read when they change.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    log_level: str = "INFO"

    # Defaults for collections created without an ``hnsw`` object (the operator sets them
    # from ``spec.node.hnsw``).
    hnsw_m: int = Field(16, ge=2, le=128)
    hnsw_ef_construction: int = Field(200, ge=1, le=4096)
    hnsw_ef_search: int = Field(64, ge=1, le=4096)

    wal_segment_bytes: int = Field(64 << 20, ge=1 << 16)
    checkpoint_interval_seconds: float = Field(300.0, gt=0)
    checkpoint_wal_bytes: int = Field(64 << 20, ge=1 << 16)
    keep_checkpoints: int = Field(2, ge=1)
    # Collections up to this size are copied in memory at a checkpoint, so writes pause only
    # for the copy (not for writing and fsyncing files); larger ones pause writes throughout.
    checkpoint_copy_bytes: int = Field(1 << 30, ge=0)
    # A checkpoint at SIGTERM makes the next start load instead of replaying the log.
    checkpoint_on_shutdown: bool = True
    search_threads: int = Field(4, ge=1, le=64)
    # Plain search connections skip aiohttp's request machinery (api/fastlane.py).
    fast_search: bool = True

    max_body_bytes: int = Field(64 << 20, ge=1 << 10)
    max_batch: int = Field(10_000, ge=1)
    max_metadata_bytes: int = Field(16 << 10, ge=16)
    max_dimension: int = Field(4096, ge=1)
    max_k: int = Field(1000, ge=1)
    max_queries: int = Field(100, ge=1)
    min_seq_wait_seconds: float = Field(5.0, ge=0)
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    # Idle keep-alive connections are closed after this (aiohttp's and the fast lane's).
    keepalive_seconds: float = Field(75.0, gt=0)

    # Replication (replication): ack waits, quorum size, log kept for absent followers.
    ack_timeout_seconds: float = Field(5.0, gt=0)
    cluster_size: int = Field(0, ge=0, le=1000)
    replication_retention_seconds: float = Field(300.0, ge=0)
    max_ready_lag_seq: int = Field(100_000, ge=0)
    # The leader lease (DESIGN.md): a leader that heard from neither a majority of members
    # nor the operator within this many seconds acknowledges no write and serves no
    # strong/quorum read until it hears again. Followers ack at least every quarter of it.
    lease_seconds: float = Field(5.0, gt=0)
    # A follower that lost its leader still serves eventual reads this long after it last
    # heard from one (the read-only Service is not emptied by a failover).
    max_read_staleness_seconds: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _tls_pair(self) -> NodeSettings:
        self.tls_files()  # a certificate without its key (or the reverse) is refused here
        return self

    @property
    def self_url(self) -> str:
        """The URL other members and clients reach this node at."""
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        scheme = "https" if self.tls_files() is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def tls_files(self) -> TlsFiles | None:
        if self.tls_cert_file is None and self.tls_key_file is None:
            return None
        if self.tls_cert_file is None or self.tls_key_file is None:
            raise ValueError("TLS needs both tls_cert_file and tls_key_file")
        return TlsFiles(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    def credentials(self) -> Credentials:
        return Credentials(
            api_keys=key_values(self.api_key),
            read_only_keys=key_values(self.read_only_key),
            cluster_tokens=key_values(self.cluster_token),
        )

    def engine_options(self) -> EngineOptions:
        return EngineOptions(
            fsync=self.fsync,
            segment_bytes=self.wal_segment_bytes,
            checkpoint=CheckpointPolicy(
                interval_seconds=self.checkpoint_interval_seconds,
                wal_bytes=self.checkpoint_wal_bytes,
                min_interval_seconds=min(5.0, self.checkpoint_interval_seconds),
            ),
            keep_checkpoints=self.keep_checkpoints,
            checkpoint_copy_bytes=self.checkpoint_copy_bytes,
        )
