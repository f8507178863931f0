"""The embedded stand-in for Celery beat: runs the periodic tasks in a thread of the server.

Used only on embedded defaults (no broker). Each task runs in the thread, one at a time, at the
interval given in `gofly_project.celery.PERIODIC_TASKS`; production uses beat instead.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections
from django.utils.module_loading import import_string

from gofly_project.celery import PERIODIC_TASKS

logger = logging.getLogger(__name__)

# Short enough that a task with a small interval is not delayed much, long enough to cost nothing.
TICK_SECONDS = 5.0


def run_due(next_run: dict[str, float], now: float) -> list[str]:
    """Run every task whose time has come and schedule its next run; return the names run."""
    ran = []
    for name, (path, interval) in PERIODIC_TASKS.items():
        if next_run.get(name, 0.0) > now:
            continue
        next_run[name] = now + interval
        try:
            import_string(path).run()
            ran.append(name)
        except Exception:
            logger.exception("scheduler.task_failed", extra={"task": name})
    return ran


def start(stop: threading.Event | None = None) -> threading.Thread:
    stop = stop or threading.Event()

    def loop() -> None:
        next_run: dict[str, float] = {}
        while not stop.is_set():
            run_due(next_run, time.monotonic())
            # This thread lives as long as the server: drop connections past their age.
            close_old_connections()
            stop.wait(TICK_SECONDS)

    thread = threading.Thread(target=loop, name="gofly-scheduler", daemon=True)
    thread.start()
    logger.info("scheduler.started", extra={"tasks": sorted(PERIODIC_TASKS)})
    return thread
