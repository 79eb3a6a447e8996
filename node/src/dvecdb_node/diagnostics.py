"""``SIGUSR1`` logs the stack of every asyncio task: how to see what a hung node waits on.

Thread dumps (py-spy) show only the event loop's frame; a stuck admin command or follower is
an awaiting coroutine, visible only through its task.
"""

from __future__ import annotations

import asyncio
import io
import logging
import signal

log = logging.getLogger(__name__)


def task_stacks() -> str:
    """Every task of the running loop with its awaiting stack, as text."""
    out = io.StringIO()
    tasks = asyncio.all_tasks()
    out.write(f"{len(tasks)} asyncio tasks\n")
    for task in sorted(tasks, key=lambda t: t.get_name()):
        task.print_stack(limit=12, file=out)
    return out.getvalue()


def install_task_dump() -> None:
    """Log :func:`task_stacks` on ``SIGUSR1`` (no-op where the loop cannot take signals)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGUSR1, lambda: log.warning("%s", task_stacks()))
    except (NotImplementedError, RuntimeError):
        log.debug("SIGUSR1 task dump not available on this loop")
