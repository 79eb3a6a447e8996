"""Typed application state: everything a handler needs, under ``web.AppKey``s."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dvecdb_node.credentials import CredentialStore
from dvecdb_node.metrics import NodeMetrics
from dvecdb_node.role import ClusterHooks, NodeRole
from dvecdb_node.settings import NodeSettings
from dvecdb_node.storage.engine import Engine
from dvecdb_node.tls import Tls

SETTINGS = web.AppKey("settings", NodeSettings)
ENGINE = web.AppKey("engine", Engine)
# TLS contexts of the port and of calls to other members (None: plain HTTP).
TLS = web.AppKey("tls", Tls)
# The bearer secrets in force (re-read from the secrets folder while the node runs).
CREDENTIALS = web.AppKey("credentials", CredentialStore)
ROLE = web.AppKey("role", NodeRole)
# Replication replaces this with its own implementation (``app[HOOKS] = ...``) at startup.
HOOKS = web.AppKey("hooks", ClusterHooks)
METRICS = web.AppKey("metrics", NodeMetrics)
# Set once recovery has finished (successfully or not: see RECOVERY_ERROR).
RECOVERED = web.AppKey("recovered", asyncio.Event)
RECOVERY_ERROR = web.AppKey("recovery_error", list[str])
# Extra OpenAPI paths (replication adds its endpoints here).
OPENAPI_PATHS = web.AppKey("openapi_paths", dict[str, Any])
# Checks that raise NotReady while this node must not serve data reads (replication adds one).
READ_GATES = web.AppKey("read_gates", list[Callable[[], None]])
