"""The fencing token: the highest epoch a node has seen, persisted before it is acted on.

The state lives in ``<data_dir>/replication.json`` and is replaced atomically (temp file,
fsync, rename, fsync of the folder), so a crash leaves either the old or the new state. The
rules deciding whether an admin command, a stream or an ack may proceed are pure functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import orjson

FILE_NAME = "replication.json"
Command = Literal["promote", "follow", "fence"]


@dataclass(frozen=True, slots=True)
class EpochState:
    """What survives a restart: the highest epoch seen and what this node was told at it."""

    epoch: int = 0
    # leader, follower, standby (heard of the epoch), fenced (told to stop at it).
    role: str = "standby"
    leader: str | None = None


class EpochStore:
    """Reads and atomically replaces :class:`EpochState` in a data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE_NAME

    def load(self) -> EpochState:
        try:
            raw = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return EpochState()
        except (OSError, orjson.JSONDecodeError) as exc:
            raise RuntimeError(f"unreadable epoch file {self.path}: {exc}") from exc
        leader = raw.get("leader")
        return EpochState(
            epoch=int(raw.get("epoch", 0)),
            role=str(raw.get("role", "standby")),
            leader=str(leader) if leader else None,
        )

    def save(self, state: EpochState) -> None:
        """Durably replace the state (called before the node acts on it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = orjson.dumps({"epoch": state.epoch, "role": state.role, "leader": state.leader})
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def admin_refusal(command: Command, epoch: int, state: EpochState) -> str | None:
    """Why an admin command at ``epoch`` must be refused, or None if it may proceed.

    Lower epochs are always refused. ``promote`` needs a new epoch, except as a retry by the
    node that already led at exactly this epoch (an operator retrying a timed-out call, or
    re-promoting a leader that restarted), or for the node the operator fenced at this
    epoch (DESIGN.md: fence every member at the new epoch, then promote the chosen one at
    it); a node that follows a leader at this epoch, or only heard of it, is refused.
    ``follow`` and ``fence`` accept the current epoch.
    """
    if epoch < 1:
        return "epoch must be a positive integer"
    if epoch < state.epoch:
        return f"epoch {epoch} is lower than the highest seen ({state.epoch})"
    if command == "promote" and epoch == state.epoch and state.role not in ("leader", "fenced"):
        return f"epoch {epoch} was already used; promote needs an epoch above {state.epoch}"
    return None


def peer_refusal(epoch: int, own_epoch: int) -> str | None:
    """Why a stream or ack carrying ``epoch`` must be refused by a node at ``own_epoch``."""
    if epoch < own_epoch:
        return f"epoch {epoch} is older than this node's {own_epoch}"
    return None
