"""Pure computation of a pod's status (phase, conditions, IPs) from its containers' states."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True)
class PodFacts:
    """What the worker knows about a pod at one moment."""

    restart_policy: str
    pod_ip: str | None
    host_ip: str
    start_time: str
    network_ready: bool
    init_done: bool
    init_statuses: Sequence[Json]
    statuses: Sequence[Json]
    failed_message: str | None = None  # a pod-level failure (volume set-up refused, ...)


def _terminated(status: Json) -> Json | None:
    state: Json | None = status.get("state", {}).get("terminated")
    return state


def phase(facts: PodFacts) -> str:
    """Pending until a container ran; Succeeded/Failed only when nothing will run again."""
    if facts.failed_message is not None:
        return "Failed"
    if not facts.init_done:
        for status in facts.init_statuses:
            term = _terminated(status)
            if term and term["exitCode"] != 0 and facts.restart_policy == "Never":
                return "Failed"
        return "Pending"
    statuses = facts.statuses
    if any("running" in s.get("state", {}) for s in statuses):
        return "Running"
    terminated = [_terminated(s) for s in statuses]
    if statuses and all(terminated):
        codes = [t["exitCode"] for t in terminated if t]
        if facts.restart_policy == "Always":
            return "Running"
        if all(code == 0 for code in codes):
            return "Succeeded"
        if facts.restart_policy == "Never":
            return "Failed"
    if any(s.get("restartCount", 0) > 0 or s.get("lastState") for s in statuses):
        return "Running"
    return "Pending"


def _condition(kind: str, ok: bool, now: str, reason: str | None = None) -> Json:
    condition: Json = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    if reason and not ok:
        condition["reason"] = reason
    return condition


def pod_status(facts: PodFacts, now: str, previous: Json | None = None) -> Json:
    """The status to write; transition times are kept when a condition did not change."""
    containers_ready = bool(facts.statuses) and all(s.get("ready") for s in facts.statuses)
    conditions = [
        _condition("PodReadyToStartContainers", facts.network_ready, now),
        _condition("Initialized", facts.init_done, now, "ContainersNotInitialized"),
        _condition("ContainersReady", containers_ready, now, "ContainersNotReady"),
        _condition("Ready", containers_ready, now, "ContainersNotReady"),
        _condition("PodScheduled", True, now),
    ]
    before = {c["type"]: c for c in (previous or {}).get("conditions") or []}
    for condition in conditions:
        old = before.get(condition["type"])
        if old and old.get("status") == condition["status"] and old.get("lastTransitionTime"):
            condition["lastTransitionTime"] = old["lastTransitionTime"]
    status: Json = {
        "phase": phase(facts),
        "conditions": conditions,
        "hostIP": facts.host_ip,
        "hostIPs": [{"ip": facts.host_ip}],
        "startTime": facts.start_time,
        "containerStatuses": list(facts.statuses),
        "qosClass": (previous or {}).get("qosClass", "BestEffort"),
    }
    if facts.init_statuses:
        status["initContainerStatuses"] = list(facts.init_statuses)
    if facts.pod_ip:
        status["podIP"] = facts.pod_ip
        status["podIPs"] = [{"ip": facts.pod_ip}]
    if facts.failed_message is not None:
        status["reason"] = "Failed"
        status["message"] = facts.failed_message
    return status


def comparable(status: Json) -> Json:
    """A status without timestamps that change on every computation, for change detection."""
    trimmed = dict(status)
    trimmed["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]
    ]
    return trimmed
