"""Three real ``dvecdb-node`` processes, each in its namespace with its data on a small tmpfs.

The tmpfs is what makes a full disk cheap and exact (``fill_disk`` takes every free byte,
``free_disk`` gives them back) and it keeps a killed process's writes, as a disk does. Logs live
outside it so a full disk never hides them. Every process is ended by its pid; mounts and the
folder are named after the run's slot (``network.claim``), so a crashed run's leftovers are
removed by the next run that holds that slot, and two runs never touch each other's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from . import network

BASE = Path("/tmp/dvecdb-faults")


def root() -> Path:
    """This run's folder: its slot's mounts, logs and failed trials' histories."""
    return BASE / f"slot-{network.SLOT}"


PORT = 8080
TOKEN = "faults-cluster-token"
TMPFS_SIZE = "48m"
FILLER = "filler"


def _mounted(path: Path) -> bool:
    with open("/proc/mounts") as mounts:
        return any(line.split()[1] == str(path) for line in mounts)


def _node_flags_supported() -> set[str]:
    """Which optional flags this tree's node accepts (``--lease-seconds`` arrives later)."""
    out = subprocess.run(
        [sys.executable, "-m", "dvecdb_node", "--help"], capture_output=True, text=True
    ).stdout
    return {flag for flag in ("--lease-seconds",) if flag in out}


@dataclass
class Node:
    """One member: ``db-<index>`` at ``node_ip(index):PORT``."""

    index: int
    flags: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    restarts: int = 0

    @property
    def name(self) -> str:
        return f"db-{self.index}"

    @property
    def ip(self) -> str:
        return network.node_ip(self.index)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{PORT}"

    @property
    def mount(self) -> Path:
        return root() / f"disk-{self.index}"

    @property
    def data_dir(self) -> Path:
        return self.mount / "data"

    @property
    def log_path(self) -> Path:
        return root() / "logs" / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        command = [
            *network.exec_prefix(self.index),
            sys.executable,
            "-m",
            "dvecdb_node",
            "--host",
            self.ip,
            "--port",
            str(PORT),
            "--advertise-url",
            self.url,
            "--data-dir",
            str(self.data_dir),
            "--node-id",
            self.name,
            *self.flags,
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                start_new_session=True,
            )
        self.paused = False

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is None:
            return
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.paused = False

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def fill_disk(self) -> None:
        """Take every free byte of the node's tmpfs."""
        stats = os.statvfs(self.mount)
        free = stats.f_bavail * stats.f_frsize
        with contextlib.suppress(OSError), open(self.mount / FILLER, "wb") as filler:
            os.posix_fallocate(filler.fileno(), 0, max(free, 1))

    def free_disk(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.mount / FILLER)

    def wipe(self) -> None:
        """A fresh, empty data folder for the next trial (the mount stays)."""
        for entry in self.mount.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self.data_dir.mkdir()
        self.restarts = 0

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@dataclass
class Cluster:
    """The namespaces, mounts and node processes; ``close`` removes all of it."""

    size: int = 3
    lease_seconds: float = 0.5
    net: network.Network = field(init=False)
    nodes: list[Node] = field(init=False, default_factory=list)
    _slot: IO[bytes] | None = field(init=False, default=None)

    def open(self) -> Cluster:
        self._slot = network.claim()
        cleanup()
        self.net = network.Network(self.size)
        (root() / "logs").mkdir(parents=True, exist_ok=True)
        try:
            self.net.create()
            supported = _node_flags_supported()
            flags = [
                "--fsync",
                "batch",
                "--ack-timeout-seconds",
                "1",
                "--cluster-size",
                str(self.size),
                "--no-checkpoint-on-shutdown",
            ]
            if "--lease-seconds" in supported:
                flags += ["--lease-seconds", str(self.lease_seconds)]
            env = {"DVECDB_CLUSTER_TOKEN": TOKEN, "DVECDB_MIN_SEQ_WAIT_SECONDS": "1"}
            for index in range(self.size):
                node = Node(index, flags, env)
                node.mount.mkdir(parents=True, exist_ok=True)
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "dvfz", str(node.mount)],
                    check=True,
                    capture_output=True,
                )
                self.nodes.append(node)
        except BaseException:
            self.close()
            raise
        return self

    def reset(self) -> None:
        """Stop every process and give each node an empty data folder, logs truncated."""
        self.stop_all()
        self.net.heal()
        for node in self.nodes:
            node.wipe()
            node.log_path.write_bytes(b"")

    def stop_all(self) -> None:
        for node in self.nodes:
            node.resume()
            node.kill()
            node.free_disk()

    def close(self) -> None:
        for node in self.nodes:
            node.resume()
            node.kill()
        self.nodes.clear()
        cleanup()
        if self._slot is not None:
            self._slot.close()  # releases the slot's lock
            self._slot = None


def cleanup() -> None:
    """End processes left in our namespaces (by pid), unmount our tmpfs, remove the network."""
    for index in range(network.MAX_NODES):
        netns = network.netns_name(index)
        pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)
    time.sleep(0.05)
    for index in range(network.MAX_NODES):
        mount = root() / f"disk-{index}"
        while _mounted(mount):
            subprocess.run(["umount", "-l", str(mount)], capture_output=True, check=False)
    network.cleanup()
