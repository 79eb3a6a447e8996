"""Pure decisions and formatting of the cluster demo: what the API objects say, as text.

Kept apart from the I/O so the unit tests can feed it recorded objects.
"""

from __future__ import annotations

from typing import Any

from localkube.containerpid import host_pid

Json = dict[str, Any]


def ready_addresses(slices: Json) -> list[str]:
    """Addresses of the ready endpoints of a Service's EndpointSlices (no kube-proxy here)."""
    found = {
        address
        for item in slices.get("items") or []
        for endpoint in item.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
        for address in endpoint.get("addresses") or []
    }
    return sorted(found)


def pod_ip(pod: Json | None) -> str | None:
    ip = ((pod or {}).get("status") or {}).get("podIP")
    return str(ip) if ip else None


def container_pid(pod: Json | None) -> int | None:
    """The host pid of the pod's first container (`localkube.containerpid`)."""
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    container_id = str((statuses[0] if statuses else {}).get("containerID") or "")
    return host_pid(container_id) if container_id else None


def restart_count(pod: Json | None) -> int:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return int((statuses[0] if statuses else {}).get("restartCount") or 0)


def healthy_leader(status: Json) -> str | None:
    """The leader's name once the cluster reports Healthy, else None."""
    leader = status.get("leader")
    return str(leader) if status.get("phase") == "Healthy" and leader else None


def member_cell(member: Json) -> str:
    """`demo-1 follower ready lag 0` for one `status.members` item."""
    ready = "ready" if member.get("ready") else "not-ready"
    lag = member.get("lagSeq", member.get("lag_seq"))  # lag_seq: older operators
    lag_text = "lag ?" if lag is None else f"lag {lag}"
    return f"{member.get('name', '?')} {member.get('role', '?')} {ready} {lag_text}"


def status_row(status: Json, elapsed: float | None = None) -> str:
    """One line of the live table: time, phase, leader, epoch, then every member."""
    head = f"{'t+' + format(elapsed, '.1f') + 's':>8}  " if elapsed is not None else ""
    members = " | ".join(member_cell(m) for m in status.get("members") or [])
    return (
        f"{head}{status.get('phase') or '-':<11} leader={status.get('leader') or '-':<7} "
        f"epoch={status.get('epoch', '-')!s:<3} {members}"
    )


def failover_summary(last: Json | None) -> str:
    """`demo-0 -> demo-1 (seq 5012 -> 5012): <reason>` from `status.lastFailover`."""
    if not last:
        return "no failover recorded"
    return (
        f"{last.get('from')} -> {last.get('to')} "
        f"(seq {last.get('fromSeq')} -> {last.get('toSeq')}): {last.get('reason')}"
    )
