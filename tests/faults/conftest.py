"""Shows the fault suite's summary table at the end of the pytest run (it ran, or not)."""

from __future__ import annotations

import pytest

SUMMARY: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.write_sep("=", "nemesis trials")
        for text in SUMMARY:
            terminalreporter.write_line(text)
