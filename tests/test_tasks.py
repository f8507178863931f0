"""Periodic jobs: the embedded scheduler and a real Celery worker run the same tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from chat import tasks
from gofly_project import scheduler
from tests.conftest import require_redis

ROOT = Path(__file__).resolve().parent.parent


def expired_session() -> Session:
    return Session.objects.create(
        session_key=uuid.uuid4().hex, session_data="x", expire_date=timezone.now() - timedelta(1)
    )


# Transactional: the outbox relay runs its ORM work in another thread, which must see the rows.
@pytest.mark.django_db(transaction=True)
def test_scheduler_runs_due_tasks_then_waits_for_their_interval(settings):
    # Not the archive hour, so the archive job (tested in test_archive) only looks at the clock.
    archive = {**settings.GOFLY["archive"], "hour": (timezone.localtime().hour + 12) % 24}
    settings.GOFLY = {**settings.GOFLY, "archive": archive}
    expired_session()
    live = Session.objects.create(
        session_key="live", session_data="x", expire_date=timezone.now() + timedelta(1)
    )
    next_run: dict[str, float] = {}

    assert scheduler.run_due(next_run, now=1000.0) == [
        "clear-expired-sessions",
        "ensure-message-partitions",
        "relay-outbox",
        "clear-outbox",
        "archive-messages",
        "sweep-presence",
        "wake-snoozed",
    ]
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session_key]
    expired_session()
    assert scheduler.run_due(next_run, now=1001.0) == []
    assert Session.objects.count() == 2
    assert "clear-expired-sessions" in scheduler.run_due(next_run, now=1000.0 + 6 * 3600)
    assert Session.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_celery_worker_runs_the_task_from_the_broker(tmp_path):
    redis_url = require_redis()
    expired_session()
    queue = "gofly-test-" + uuid.uuid4().hex[:8]
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        database_url = f"sqlite:///{db['NAME']}"
    else:
        database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "GOFLY_DATA_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "gofly_project",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        tasks.clear_expired_sessions.apply_async(queue=queue)
        deadline = time.monotonic() + 60
        while Session.objects.exists() and time.monotonic() < deadline:
            assert worker.poll() is None, worker.stdout.read()
            time.sleep(0.2)
        assert not Session.objects.exists()
    finally:
        worker.terminate()
        worker.wait(20)
