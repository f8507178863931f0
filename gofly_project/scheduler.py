"""The embedded stand-in for Celery beat: runs the periodic tasks in a thread of the server.

Used only on embedded defaults (no broker). Each task runs in the thread, one at a time, at the
interval given in `gofly_project.celery.PERIODIC_TASKS`; production uses beat instead. Tasks in
`IN_SERVER_LOOP` send through the channel layer and run as coroutines on the server's loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from django.db import close_old_connections
from django.utils.module_loading import import_string

from gofly_project.celery import IN_SERVER_LOOP, PERIODIC_TASKS

logger = logging.getLogger(__name__)

# Short enough that a task with a small interval is not delayed much, long enough to cost nothing.
TICK_SECONDS = 5.0
# A coroutine handed to the server's loop that has not finished by then is abandoned for this
# tick; the next tick runs it again (every task here is idempotent).
IN_LOOP_TIMEOUT_SECONDS = 60.0


def _run(name: str, path: str, server_loop: asyncio.AbstractEventLoop | None) -> None:
    if server_loop is not None and name in IN_SERVER_LOOP:
        coroutine = import_string(IN_SERVER_LOOP[name])()
        future = asyncio.run_coroutine_threadsafe(coroutine, server_loop)
        future.result(IN_LOOP_TIMEOUT_SECONDS)
    else:
        import_string(path).run()


def run_due(
    next_run: dict[str, float],
    now: float,
    server_loop: asyncio.AbstractEventLoop | None = None,
) -> list[str]:
    """Run every task whose time has come and schedule its next run; return the names run."""
    ran = []
    for name, (path, interval) in PERIODIC_TASKS.items():
        if next_run.get(name, 0.0) > now:
            continue
        next_run[name] = now + interval
        try:
            _run(name, path, server_loop)
            ran.append(name)
        except Exception:
            logger.exception("scheduler.task_failed", extra={"task": name})
    return ran


def start(
    server_loop: asyncio.AbstractEventLoop | None = None, stop: threading.Event | None = None
) -> threading.Thread:
    stop = stop or threading.Event()

    def loop() -> None:
        next_run: dict[str, float] = {}
        while not stop.is_set():
            run_due(next_run, time.monotonic(), server_loop)
            # This thread lives as long as the server: drop connections past their age.
            close_old_connections()
            stop.wait(TICK_SECONDS)

    thread = threading.Thread(target=loop, name="gofly-scheduler", daemon=True)
    thread.start()
    logger.info("scheduler.started", extra={"tasks": sorted(PERIODIC_TASKS)})
    return thread
