"""Operator logs: full logger names in text, JSON on request, no probe or handler-success
lines unless verbose (issue #15)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from dvecdb_operator import cli, logs

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    watched = [logging.getLogger(n) for n in ("aiohttp.access", "kopf.objects")]
    filters = [logger.filters[:] for logger in watched]
    yield
    root.handlers[:], root.level = handlers, level
    for logger, kept in zip(watched, filters, strict=True):
        logger.filters[:] = kept


def emitted(name: str, message: str, *args: Any, level: int = logging.INFO) -> str:
    """What kopf's stream handler writes for one record logged on `name`."""
    stream = io.StringIO()
    handler = next(h for h in logging.getLogger().handlers if type(h).__module__.startswith("kopf"))
    original = handler.stream  # type: ignore[attr-defined]
    handler.stream = stream  # type: ignore[attr-defined]
    try:
        logging.getLogger(name).log(level, message, *args)
    finally:
        handler.stream = original  # type: ignore[attr-defined]
    return stream.getvalue()


def test_text_logs_carry_the_full_logger_name() -> None:
    logs.configure(log_format="text")
    line = emitted("dvecdb_operator.executor", "Promoted: db-1 leads at epoch 2")
    assert "dvecdb_operator.executor [INFO] Promoted: db-1 leads at epoch 2" in line


def test_json_logs_are_one_object_per_line() -> None:
    logs.configure(log_format="json")
    record = json.loads(emitted("dvecdb_operator.monitor", "pass %d", 3))
    assert record["message"] == "pass 3" and record["severity"] == "info"


def test_probe_access_lines_and_handler_successes_are_dropped_unless_verbose() -> None:
    logs.configure(log_format="text")
    probe = '10.213.0.1 [30/Nov/2026:10:00:00 +0000] "GET /healthz HTTP/1.1" 200 155 "-" "kube"'
    assert emitted("aiohttp.access", probe) == ""
    assert "GET /metrics" in emitted("aiohttp.access", probe.replace("/healthz", "/metrics"))
    assert emitted("kopf.objects", "Handler 'child_changed' succeeded.") == ""
    assert "failed" in emitted("kopf.objects", "Handler 'reconcile' failed.", level=logging.ERROR)
    logging.getLogger("aiohttp.access").filters.clear()
    logging.getLogger("kopf.objects").filters.clear()
    logs.configure(log_format="text", verbose=True)
    assert "/healthz" in emitted("aiohttp.access", probe)


def test_cli_takes_the_log_format(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(logs, "configure", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(cli.kopf, "run", lambda **kwargs: None)
    assert cli.main(["--log-format", "json", "-n", "a"]) == 0
    assert seen == {"log_format": "json", "verbose": False}
    assert cli.build_parser().parse_args([]).log_format == "text"
