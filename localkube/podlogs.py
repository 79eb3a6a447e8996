"""Pure selection of a container's log as `kubectl logs [--previous]` would show it.

The process kubelet appends every run of a container to one file per pod folder
(`<state>/pods/<ns>_<name>_<uid>/<container>.log`), each run opened by a
`--- localkube: start <container> at <time>` line. The current run is the last section of
the newest folder; the previous one is the section before it, or, when the pod was made
again (a StatefulSet member deleted and recreated, as in an upgrade), the last run of the
pod of the same name before it.
"""

from __future__ import annotations

from collections.abc import Sequence

START_MARK = "--- localkube: start "


def runs(text: str) -> list[str]:
    """The file's runs, oldest first, each from its start line (text before any: a run)."""
    found: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(START_MARK) and current:
            found.append("".join(current))
            current = []
        current.append(line)
    if current:
        found.append("".join(current))
    return found


def select(pods: Sequence[str], *, previous: bool) -> str | None:
    """The current (or previous) run among the log files of successive pods of one name,
    oldest pod first; None when there is none."""
    all_runs = [run for text in pods for run in runs(text)]
    wanted = -2 if previous else -1
    return all_runs[wanted] if len(all_runs) >= -wanted else None
