"""kopf registrations only: each handler is a line that delegates to `runtime`.

Importing this module registers the handlers on kopf's default registry; `cli.main` does so
before `kopf.run`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import kopf

from dvecdb_operator import constants as c
from dvecdb_operator import runtime

_CR = (c.GROUP, c.VERSION, c.PLURAL)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    await runtime.startup(settings, memo)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await runtime.cleanup(memo)


@kopf.on.resume(*_CR)
@kopf.on.create(*_CR)
@kopf.on.update(*_CR, field="spec")
async def reconcile(memo: kopf.Memo, body: kopf.Body, spec: kopf.Spec, **_: Any) -> None:
    await runtime.reconcile(memo, body, spec)


@kopf.daemon(*_CR, cancellation_timeout=10.0)
async def monitor(
    memo: kopf.Memo,
    namespace: str | None,
    name: str,
    uid: str | None,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    assert namespace is not None  # DVecCluster is namespaced
    await runtime.monitor(memo, namespace, name, stopped, uid=uid)


@kopf.daemon(*_CR, id="reshard", cancellation_timeout=10.0)
async def reshard(
    memo: kopf.Memo,
    namespace: str | None,
    name: str,
    uid: str | None,
    stopped: kopf.DaemonStopped,
    **_: Any,
) -> None:
    assert namespace is not None
    await runtime.reshard(memo, namespace, name, stopped, uid=uid)


def _monitor_needs_no_finalizer(registry: kopf.OperatorRegistry) -> None:
    """kopf puts a finalizer on every object a daemon serves, only so that the daemon is
    stopped before the object goes. Nothing outside the cluster needs cleaning (every child
    is owned and collected by Kubernetes), and the monitor stops by itself once the object is
    gone or replaced (`runtime.monitor`); with the finalizer, deleting a cluster after the
    operator was uninstalled hung forever (issue #15). Without it kopf also takes the
    finalizer off objects an older operator left it on. kopf's decorator offers no switch,
    hence the registry's own list is rewritten.
    """
    spawning = registry._spawning
    spawning._handlers = [
        dataclasses.replace(h, requires_finalizer=False) for h in spawning.get_all_handlers()
    ]


_monitor_needs_no_finalizer(kopf.get_default_registry())


@kopf.on.event(
    "apps",
    "v1",
    "statefulsets",
    labels={c.LABEL_MANAGED_BY: c.MANAGER, c.LABEL_CLUSTER: kopf.PRESENT},
)
@kopf.on.event(
    "apps",
    "v1",
    "deployments",
    labels={c.LABEL_MANAGED_BY: c.MANAGER, c.LABEL_CLUSTER: kopf.PRESENT},
)
@kopf.on.event(
    "v1",
    "services",
    labels={c.LABEL_MANAGED_BY: c.MANAGER, c.LABEL_CLUSTER: kopf.PRESENT},
)
@kopf.on.event(
    "networking.k8s.io",
    "v1",
    "networkpolicies",
    labels={c.LABEL_MANAGED_BY: c.MANAGER, c.LABEL_CLUSTER: kopf.PRESENT},
)
@kopf.on.event(
    "policy",
    "v1",
    "poddisruptionbudgets",
    labels={c.LABEL_MANAGED_BY: c.MANAGER, c.LABEL_CLUSTER: kopf.PRESENT},
)
async def child_changed(
    memo: kopf.Memo, type: str | None, labels: kopf.Labels, namespace: str | None, **_: Any
) -> None:
    await runtime.child_changed(memo, type, labels, namespace)
