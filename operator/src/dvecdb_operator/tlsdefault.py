"""Whether TLS is on for a cluster (pure): an operator upgrade never turns it on.

`spec.tls.enabled` defaults to true in the CRD, and the API server fills that default in on
objects made before TLS existed, so the spec alone cannot tell "the user asked for TLS" from
"nobody said anything". Turning TLS on restarts every member and moves the router to https:
plain-HTTP clients would break without anyone asking. Hence the operator records, the first
time it reconciles a cluster, what TLS is for it when nobody says (`status.tlsDefault`):

- `enabled` for a cluster this operator (or one with TLS) runs from the start;
- `disabled` for a cluster that ran before TLS existed: its StatefulSet serves plain HTTP, or,
  with no StatefulSet, its status holds what an older operator wrote (phase, members, ...).

Then, in order: `spec.tls.enabled: false` turns TLS off; `spec.tls.secretName` or `issuerRef`
(never defaults: the user wrote them) or the annotation `dvecdb.io/tls: enabled` turn it on;
`dvecdb.io/tls: disabled` turns it off; else the recorded default decides. An explicit
`enabled: true` cannot be told from the default (the API server fills defaults in before
`managedFields` are computed, so the creator "owns" defaulted fields too): it does not opt a
pre-TLS cluster in; the annotation does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dvecdb_operator import constants as c
from dvecdb_operator.spec import ClusterSpec
from dvecdb_operator.tlsplan import serving_scheme

ANNOTATION_TLS: Final = f"{c.GROUP}/tls"
STATUS_KEY: Final = "tlsDefault"
ENABLED: Final = "enabled"
DISABLED: Final = "disabled"
# Fields the operators before TLS wrote in a cluster's status (status.py since the first
# operator): any of them means an older operator ran this cluster.
OLD_STATUS_KEYS: Final = frozenset(
    {"phase", "members", "conditions", "leader", "epoch", "readyMembers", "replicas"}
)
KEPT_OFF: Final = (
    "TLS stays off: this cluster ran before the operator had TLS, and an operator upgrade"
    f" does not turn it on. To turn it on, annotate the cluster {ANNOTATION_TLS}=enabled"
    " (or set spec.tls.secretName or spec.tls.issuerRef): members restart one at a time"
    " and the router moves to https, so clients must then trust the cluster's CA."
)


@dataclass(frozen=True)
class TlsChoice:
    """TLS on or off, and the one line that says why (status.tls.message when off)."""

    enabled: bool
    why: str

    @property
    def kept_off(self) -> bool:
        """Off only because the cluster predates TLS (what status and an Event report)."""
        return not self.enabled and self.why == KEPT_OFF


def recorded_default(status: Mapping[str, Any] | None) -> str | None:
    value = (status or {}).get(STATUS_KEY)
    return value if value in (ENABLED, DISABLED) else None


def serves_tls(statefulset: Mapping[str, Any]) -> bool:
    """The StatefulSet's pods are started with a certificate."""
    template = (statefulset.get("spec") or {}).get("template") or {}
    return serving_scheme(template) == "https"


def first_default(
    status: Mapping[str, Any] | None, statefulsets: Iterable[Mapping[str, Any]]
) -> str:
    """The default to record for a cluster met without one. What runs decides first (a lost
    record on a TLS cluster finds its TLS StatefulSets); with nothing running, the status."""
    found = list(statefulsets)
    if found:
        return ENABLED if any(serves_tls(s) for s in found) else DISABLED
    if OLD_STATUS_KEYS & set(status or {}):
        return DISABLED
    return ENABLED


def choose(spec: ClusterSpec, annotations: Mapping[str, str] | None, default: str) -> TlsChoice:
    """TLS on or off for `spec`, the cluster's annotations and its recorded default."""
    tls = spec.tls
    if not tls.enabled:
        return TlsChoice(False, "spec.tls.enabled is false")
    if tls.secret_name is not None or tls.issuer_ref is not None:
        return TlsChoice(True, "spec.tls names the certificates' source")
    asked = (annotations or {}).get(ANNOTATION_TLS)
    if asked == ENABLED:
        return TlsChoice(True, f"annotation {ANNOTATION_TLS}={ENABLED}")
    if asked == DISABLED:
        return TlsChoice(False, f"annotation {ANNOTATION_TLS}={DISABLED}")
    if default == DISABLED:
        return TlsChoice(False, KEPT_OFF)
    return TlsChoice(True, "on by default")


def effective_spec(spec: ClusterSpec, choice: TlsChoice) -> ClusterSpec:
    """`spec` with `tls.enabled` as chosen (what the builders and `tlsreconcile` read)."""
    if spec.tls.enabled == choice.enabled:
        return spec
    return spec.model_copy(update={"tls": spec.tls.model_copy(update={"enabled": choice.enabled})})
