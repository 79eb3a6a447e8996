"""The nemesis: a seeded schedule of faults (pure) and the executor that applies it.

``plan(seed, ...)`` draws the faults of one trial: SIGKILL (then a restart, half of them back
within the detection time), SIGSTOP/SIGCONT,
a full disk, and partitions that cut chosen links only: operator<->leader, leader<->one
follower, one way only, a member isolated from everyone, or a majority/minority split with the
operator on either side. A fault aimed at the leader may carry an operator restart placed
inside the failover it provokes (after detection). In ``one`` mode faults never overlap (at most
one faulty member at a time, the ``ack=one`` budget); in ``quorum`` mode two may, on different
members (no disk is ever destroyed, so ``ack=quorum`` must always hold).

Targets are roles ("leader", "follower"), resolved when the fault starts from the operator's
status, so a replayed seed draws the same schedule even though timings differ.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from . import network
from .cluster import Cluster
from .history import FAULT, INFO, History, Op, complete
from .operator_driver import OperatorDriver

Mode = Literal["one", "quorum"]

KINDS = (
    "kill",
    "pause",
    "disk",
    "isolate",
    "operator-leader",
    "leader-follower",
    "one-way",
    "minority",
)


@dataclass(frozen=True)
class Step:
    """One fault: what, on which role, when (seconds into the trial) and for how long."""

    at: float
    kind: str
    target: Literal["leader", "follower"]
    duration: float
    operator_restart_after: float | None = None  # seconds after ``at``
    variant: int = 0  # kind-specific choice (one-way direction, operator's side of a split)

    @property
    def end(self) -> float:
        return self.at + self.duration


def plan(
    seed: int, *, duration: float, mode: Mode, detection: float = 1.0, start: float = 0.3
) -> list[Step]:
    """The trial's faults, drawn from ``seed`` alone."""
    rng = random.Random(seed)
    steps: list[Step] = []
    t = start + rng.uniform(0.0, 0.4)
    while t < duration - 1.0:
        step = _draw(rng, t, duration, detection)
        steps.append(step)
        end = step.end
        if mode == "quorum" and rng.random() < 0.5:
            # A second fault overlapping the first; a follower if the first hits the leader.
            at = min(t + rng.uniform(0.0, step.duration * 0.8), duration - 1.0)
            other = _draw(rng, at, duration, detection)
            if step.target == "leader":
                other = Step(other.at, other.kind, "follower", other.duration, None, other.variant)
            steps.append(other)
            end = max(end, other.end)
        t = end + rng.uniform(0.3, 0.8)
    return steps


def _draw(rng: random.Random, at: float, duration: float, detection: float) -> Step:
    kind = rng.choice(KINDS)
    target: Literal["leader", "follower"] = "leader" if rng.random() < 0.6 else "follower"
    if kind == "operator-leader":
        target = "leader"
    length = rng.uniform(detection + 0.3, detection + 2.0)
    variant = rng.randrange(2)
    if kind == "kill" and variant == 1:
        # Back within detection: only the pod's restart count tells the operator (a certain
        # death signal, no waiting), and the restarted leader is a standby that must not lead.
        length = rng.uniform(0.1, 0.5)
    length = min(length, max(0.5, duration - at - 0.2))
    restart = None
    if target == "leader" and rng.random() < 0.35:
        restart = detection + rng.uniform(0.0, 0.8)
    return Step(at, kind, target, length, restart, variant)


class Nemesis:
    """Applies a plan to the real cluster and records each fault as a history operation."""

    def __init__(
        self, cluster: Cluster, driver: OperatorDriver, history: History, t0: float
    ) -> None:
        self.cluster = cluster
        self.driver = driver
        self.history = history
        self.t0 = t0
        self.faulty: set[int] = set()
        self.tasks: list[asyncio.Task[None]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self, steps: list[Step]) -> None:
        self.tasks = [asyncio.create_task(self._run_step(step)) for step in steps]
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _resolve(self, step: Step) -> tuple[int, int | None]:
        """(member the fault hits, the leader index) from the operator's current view."""
        names = [node.name for node in self.cluster.nodes]
        leader_name = self.driver.status.get("leader")
        leader = names.index(leader_name) if leader_name in names else None
        rng = random.Random(hash((step.at, step.kind)))
        free = [i for i in range(len(names)) if i not in self.faulty]
        if step.target == "leader" and leader is not None and leader not in self.faulty:
            return leader, leader
        followers = [i for i in free if i != leader] or free or list(range(len(names)))
        return rng.choice(followers), leader

    async def _run_step(self, step: Step) -> None:
        await asyncio.sleep(max(0.0, step.at - self.now()))
        target, leader = self._resolve(step)
        self.faulty.add(target)
        node = self.cluster.nodes[target]
        op = self.history.invoke(
            Op("nemesis", FAULT, self.now(), kind=step.kind, node=node.name, members=[node.name])
        )
        restart = None
        if step.operator_restart_after is not None:
            restart = asyncio.create_task(self._restart_operator(step.operator_restart_after))
        try:
            heal = self._start(step, target, leader)
            await asyncio.sleep(step.duration)
            heal()
        finally:
            self.faulty.discard(target)
            complete(op, INFO, self.now())
            if restart is not None:
                await restart

    async def _restart_operator(self, after: float) -> None:
        await asyncio.sleep(after)
        op = self.history.invoke(Op("nemesis", FAULT, self.now(), kind="operator-restart"))
        await self.driver.restart()
        complete(op, INFO, self.now())

    def _start(self, step: Step, target: int, leader: int | None) -> Callable[[], None]:
        """Begin the fault; returns what ends it."""
        node = self.cluster.nodes[target]
        net = self.cluster.net
        others = [n for n in self.cluster.nodes if n.index != target]
        if step.kind == "kill":
            node.kill()
            self.driver.pod_died(node.name)

            def restart() -> None:
                node.start()
                self.driver.pod_started(node.name)

            return restart
        if step.kind == "pause":
            node.pause()
            return node.resume
        if step.kind == "disk":
            node.fill_disk()
            return node.free_disk
        rules: list[network.Rule] = []
        if step.kind == "isolate":
            for address in [*(n.ip for n in others), network.OPERATOR_IP, network.CLIENT_IP]:
                rules += net.cut(target, address)
        elif step.kind == "operator-leader":
            rules += net.cut(target, network.OPERATOR_IP)
        elif step.kind in ("leader-follower", "one-way"):
            # The link between the target and the leader (or, if the target leads, a follower).
            end = leader if leader is not None and leader != target else others[0].index
            peer_ip = self.cluster.nodes[end].ip
            if step.kind == "leader-follower":
                rules += net.cut(target, peer_ip)
            elif step.variant == 0:
                rules += net.cut(target, peer_ip, send=True, receive=False)  # cannot send
            else:
                rules += net.cut(target, peer_ip, send=False, receive=True)  # cannot hear
        elif step.kind == "minority":
            for other in others:
                rules += net.cut(target, other.ip)
            if step.variant == 0:  # the operator is on the majority's side
                rules += net.cut(target, network.OPERATOR_IP)
            else:  # the operator sees only the minority
                for other in others:
                    rules += net.cut(other.index, network.OPERATOR_IP)
        else:
            raise ValueError(f"unknown fault kind {step.kind}")
        return lambda: net.restore(rules)
