"""Typed application state of the replication layer."""

from __future__ import annotations

from aiohttp import web

from dvecdb_node.replication.manager import ReplicationManager

MANAGER = web.AppKey("replication", ReplicationManager)
