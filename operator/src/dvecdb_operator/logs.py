"""The operator's log output: text with full logger names, or JSON; no lines for probes.

kopf formats its own logs (`kopf.configure`); its text format cuts logger names to 20
characters, which made `dvecdb_operator.monitor` and `dvecdb_operator.executor` alike. kopf's
liveness endpoint is an aiohttp server whose access log would print a line for every
`/healthz` probe, and kopf logs every handler's success at INFO, also for the child-watching
handler that fires at each change of a StatefulSet, Service or PDB: both drown the lines
that matter (failovers, Events), so they are dropped unless `--verbose`.
"""

from __future__ import annotations

import logging
import re

import kopf

TEXT_FORMAT = "[%(asctime)s] %(name)s [%(levelname)s] %(message)s"
PROBE_PATHS = ("/healthz",)
_SUCCEEDED = re.compile(r"^Handler '[^']+' succeeded\.$")


class DropProbes(logging.Filter):
    """Drops aiohttp access-log lines of the liveness probe."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f" {path} " in message or f" {path}?" in message for path in PROBE_PATHS)


class DropHandlerSuccess(logging.Filter):
    """Drops kopf's `Handler '...' succeeded.` lines (and the Events kopf would post)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and _SUCCEEDED.match(str(record.msg)))


def configure(*, log_format: str = "text", verbose: bool = False) -> None:
    """Set up kopf's logging in the chosen format, then the operator's own changes to it."""
    json_logs = log_format == "json"
    kopf.configure(
        verbose=verbose,
        log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL,
        log_prefix=True,
    )
    if not json_logs:
        for handler in logging.getLogger().handlers:
            if handler.formatter is not None and type(handler).__module__.startswith("kopf"):
                # kopf's formatter class keeps its object prefix; only the pattern changes.
                logging.Formatter.__init__(handler.formatter, TEXT_FORMAT)
    logging.getLogger("dvecdb_operator").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        _add_once(logging.getLogger("aiohttp.access"), DropProbes())
        _add_once(logging.getLogger("kopf.objects"), DropHandlerSuccess())


def _add_once(logger: logging.Logger, found: logging.Filter) -> None:
    if not any(type(f) is type(found) for f in logger.filters):
        logger.addFilter(found)
