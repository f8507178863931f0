"""Database connection lifetime under ASGI.

Consumers run their ORM work in a fixed pool of threads, where persistent connections
(`CONN_MAX_AGE`) save a connect per message. HTTP views are different: Django runs each
request's sync code in a thread made for that request, so a connection kept "persistent" there
is never reused and stays open until the thread is collected; under load that exhausted
PostgreSQL's max_connections (docs/performance.md). So connections opened while serving an
HTTP request are closed when it finishes.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import request_finished
from django.db import connections


def close_request_connections(**kwargs: Any) -> None:
    for connection in connections.all(initialized_only=True):
        # Never inside a transaction: the test client wraps requests in one, and a view's
        # caller may too.
        if not connection.in_atomic_block:
            connection.close()


def install() -> None:
    request_finished.connect(close_request_connections, dispatch_uid="gofly.close_request_db")
