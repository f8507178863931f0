"""Outgoing webhooks: recorded with the change, signed, retried, and survived by a dead worker.

The receiver is the only fake, and it is a real HTTP server on 127.0.0.1: it records what it
gets, checks the signature, answers as a test tells it (200, 500, or hang until released), and
applies each delivery's effect once, dropping repeats by X-Gofly-Delivery as a real one should.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.test import Client
from django.utils import timezone

from chat import actions, delivery, outbox, webhooks
from chat.models import OutboxEvent, Site
from tests.conftest import make_agent, new_visitor_session, require_redis
from tests.processes import free_port as _free_port

ROOT = Path(__file__).resolve().parent.parent
# Longest a hanging answer waits to be released; a test that forgets to release still ends.
HANG_LIMIT_SECONDS = 60.0


class Receiver:
    """A webhook receiver on 127.0.0.1 that a test steers; see the module docstring."""

    def __init__(self) -> None:
        self.secret = ""
        self.answers: list[str] = []  # what to answer next: "ok", "fail" or "hang"; then "ok"
        self.requests: list[dict[str, Any]] = []
        self.effects: list[str] = []  # delivery ids applied, each once
        self.repeats = 0
        self.in_hand = threading.Event()  # a hanging request has arrived
        self.release = threading.Event()
        self.hang_over = threading.Event()  # the hanging request has been handled
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/gofly"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers["Content-Length"]))
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        signed = hmac.compare_digest(request.headers.get("X-Gofly-Signature", ""), expected)
        delivery_id = request.headers.get("X-Gofly-Delivery", "")
        with self.lock:
            answer = self.answers.pop(0) if self.answers else "ok"
            self.requests.append({"headers": dict(request.headers), "body": body, "signed": signed})
        if answer == "hang":
            self.in_hand.set()
            self.release.wait(HANG_LIMIT_SECONDS)
        if answer == "fail" or not signed:
            self._answer(request, 500, b"boom")
        else:
            # Applied before answering: if the sender never sees the 200 (it died, or gave up
            # waiting), it tries again, and the repeat must change nothing.
            with self.lock:
                if delivery_id in self.effects:
                    self.repeats += 1
                else:
                    self.effects.append(delivery_id)
            self._answer(request, 200, b"ok")
        if answer == "hang":
            self.hang_over.set()

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        try:
            request.send_response(status)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body)
        except OSError:
            pass  # the sender is gone: what a receiver sees when a worker dies mid-request

    def delivery_ids(self) -> list[str]:
        return [r["headers"]["X-Gofly-Delivery"] for r in self.requests]

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def hooked_site(site, receiver) -> Site:
    site.webhook_url = receiver.url
    site.save(update_fields=["webhook_url"])
    receiver.secret = site.webhook_secret
    return site


@pytest.fixture
def embedded_sender(settings):
    """Send as on embedded defaults, from the thread pool, whichever broker the run has."""
    settings.CELERY_BROKER_URL = "memory://"


def webhook_rows():
    return OutboxEvent.objects.filter(kind=OutboxEvent.Kind.WEBHOOK).order_by("id")


def wait_for(condition, seconds: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


def post(site: Site, client_id: str = "c1", body: str = "where is my order?"):
    visitor = new_visitor_session(site).visitor
    return actions.post_visitor_message(visitor.pk, client_id=client_id, body=body)


# ---------------------------------------------------------------------------------------------
# Recording


@pytest.mark.django_db
def test_message_records_webhook_row_in_its_transaction(
    hooked_site, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        posted = post(hooked_site)

    row = webhook_rows().get()
    payload = row.payload
    assert row.status == "pending" and row.site_id == hooked_site.pk
    assert payload["event"] == "message.created"
    assert payload["id"] == str(row.delivery_id)
    assert payload["site"] == {"id": hooked_site.pk, "key": hooked_site.key, "name": "Shop"}
    assert payload["conversation"]["id"] == posted.conversation_id
    assert payload["conversation"]["status"] == "open"
    assert payload["message"] == {
        "id": posted.frame["id"],
        "seq": 1,
        "sender": {"kind": "visitor", "name": posted.frame["sender"]["name"]},
        "body": "where is my order?",
        "content_type": "text",
        "attachment": None,
        "created_at": posted.frame["created_at"],
    }
    # The channel fan-out is still its own row, unchanged; the webhook is handed over on commit.
    assert OutboxEvent.objects.filter(kind="channels").get().pk == posted.recorded.outbox_id
    assert len(callbacks) == 1


@pytest.mark.django_db
def test_rolled_back_message_leaves_no_webhook_row(
    hooked_site, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(*args, **kwargs):
        raise RuntimeError("insert failed")

    # Given the write fails after the webhook row was recorded in the transaction
    monkeypatch.setattr(outbox, "record", broken)
    with django_capture_on_commit_callbacks() as callbacks, pytest.raises(RuntimeError):
        post(hooked_site)

    # Then nothing of it remains, and nothing is handed to a sender
    assert OutboxEvent.objects.count() == 0
    assert hooked_site.conversations.count() == 0
    assert callbacks == []


@pytest.mark.django_db
def test_site_without_webhook_url_records_no_row(site):
    post(site)
    post(site, client_id="c2")
    assert not webhook_rows().exists()
    assert OutboxEvent.objects.filter(kind="channels").count() == 2


@pytest.mark.django_db
def test_status_changes_are_recorded_with_who_changed_them(hooked_site):
    agent = make_agent("alice", hooked_site)
    posted = post(hooked_site)
    visitor_id = hooked_site.visitors.get().pk

    actions.set_conversation_status(agent.user, posted.conversation_id, "resolved")
    actions.set_conversation_status(agent.user, posted.conversation_id, "resolved")  # no change
    actions.post_visitor_message(visitor_id, client_id="c2", body="one more thing")

    events = [
        (
            row.payload["event"],
            row.payload.get("previous_status"),
            row.payload["conversation"]["status"],
            row.payload.get("changed_by", {}).get("kind"),
        )
        for row in webhook_rows()
    ]
    assert events == [
        ("message.created", None, "open", None),
        ("conversation.status_changed", "open", "resolved", "agent"),
        ("conversation.status_changed", "resolved", "open", "visitor"),
        ("message.created", None, "open", None),
    ]


def test_webhook_url_must_be_http(db):
    site = Site(name="Shop", webhook_url="file:///etc/passwd")
    with pytest.raises(ValidationError) as refused:
        site.full_clean()
    assert "webhook_url" in refused.value.error_dict


@pytest.mark.django_db
def test_admin_sets_the_webhook_url_and_refuses_other_schemes(site):
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    page = client.get(f"/admin/chat/site/{site.pk}/change/").content.decode()
    assert 'name="webhook_url"' in page and site.webhook_secret in page
    form = {
        "name": site.name,
        "key": site.key,
        "allowed_origins": "",
        "widget_title": site.widget_title,
        "widget_color": site.widget_color,
        "welcome_message": site.welcome_message,
        "default_language": "en",
        "typing_preview": "on",
        "timezone": "UTC",
        "business_hours": "{}",
        "webhook_secret": "s3cret",
    }

    refused = client.post(
        f"/admin/chat/site/{site.pk}/change/", {**form, "webhook_url": "file:///etc/passwd"}
    )
    saved = client.post(
        f"/admin/chat/site/{site.pk}/change/",
        {**form, "webhook_url": "https://crm.example.com/hooks/gofly"},
    )

    assert refused.status_code == 200  # the form again, with its error
    assert saved.status_code == 302
    site.refresh_from_db()
    assert (site.webhook_url, site.webhook_secret) == (
        "https://crm.example.com/hooks/gofly",
        "s3cret",
    )


@pytest.mark.django_db
def test_each_site_gets_its_own_secret(site, other_site):
    assert len(site.webhook_secret) == 64
    assert site.webhook_secret != other_site.webhook_secret


# ---------------------------------------------------------------------------------------------
# Sending


@pytest.mark.django_db
def test_send_posts_signed_json_and_marks_the_row_done(hooked_site, receiver):
    post(hooked_site)
    row = webhook_rows().get()

    assert webhooks.send(row.pk) == "sent"

    [request] = receiver.requests
    headers = request["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Gofly-Event"] == "message.created"
    assert headers["X-Gofly-Delivery"] == str(row.delivery_id)
    expected = hmac.new(hooked_site.webhook_secret.encode(), request["body"], hashlib.sha256)
    assert headers["X-Gofly-Signature"] == "sha256=" + expected.hexdigest()
    assert request["signed"]
    assert json.loads(request["body"]) == row.payload
    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == ("done", 1, "")
    assert receiver.effects == [str(row.delivery_id)]


@pytest.mark.django_db
def test_send_after_done_does_nothing(hooked_site, receiver):
    post(hooked_site)
    row = webhook_rows().get()
    assert webhooks.send(row.pk) == "sent"

    assert webhooks.send(row.pk) == "skipped"

    assert len(receiver.requests) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("done", 1)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded_sender")
async def test_failed_try_is_retried_with_the_same_delivery_id(hooked_site, receiver):
    # Given the receiver fails the first try
    receiver.answers = ["fail"]
    await actions_in_thread(post, hooked_site)
    await wait_async(lambda: len(receiver.requests) == 1, "the first try")
    row = await wait_for_row(lambda row: row.attempts == 1 and row.last_error)
    assert row.status == "pending"
    assert row.last_error == "HTTP 500 from the receiver: boom"
    assert row.next_attempt_at > timezone.now()

    # When the retry job's turn comes
    await db_in_thread(
        lambda: webhook_rows().update(
            created_at=timezone.now() - timedelta(minutes=1), next_attempt_at=timezone.now()
        )
    )
    counts = await delivery.relay_due()

    # Then the same delivery is sent again, byte for byte, and the row is done after two tries
    assert counts["webhooks"] == 1
    row = await wait_for_row(lambda row: row.status == "done")
    assert row.attempts == 2
    first, second = receiver.requests
    assert receiver.delivery_ids() == [str(row.delivery_id)] * 2
    assert first["body"] == second["body"] and second["signed"]
    assert receiver.effects == [str(row.delivery_id)]


@pytest.mark.django_db
def test_row_fails_after_max_attempts_and_shows_in_admin(hooked_site, receiver, settings):
    settings.GOFLY["outbox"] = {**settings.GOFLY["outbox"], "max_attempts": 3}
    receiver.answers = ["fail"] * 5
    post(hooked_site)
    row = webhook_rows().get()

    assert [webhooks.send(row.pk) for _ in range(4)] == ["pending", "pending", "failed", "skipped"]

    assert len(receiver.requests) == 3
    assert len(set(receiver.delivery_ids())) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("failed", 3)
    user = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    listing = client.get("/admin/chat/outboxevent/?status__exact=failed&kind__exact=webhook")
    assert listing.status_code == 200
    assert "HTTP 500 from the receiver" in listing.content.decode()
    page = client.get(f"/admin/chat/outboxevent/{row.pk}/change/")
    assert str(row.delivery_id) in page.content.decode()


@pytest.mark.django_db
def test_a_try_that_never_finished_counts_toward_max_attempts(hooked_site, receiver, settings):
    settings.GOFLY["outbox"] = {**settings.GOFLY["outbox"], "max_attempts": 2}
    post(hooked_site)
    row = webhook_rows().get()
    # Two tries began and neither reported back (their workers died).
    OutboxEvent.objects.filter(pk=row.pk).update(attempts=2)

    assert webhooks.send(row.pk) == "skipped"

    assert receiver.requests == []
    row.refresh_from_db()
    assert (row.status, row.last_error) == ("failed", "try 2 of 2 did not finish")


@pytest.mark.django_db
def test_hanging_receiver_times_out_and_the_row_waits_for_a_retry(hooked_site, receiver, settings):
    settings.GOFLY["webhooks"] = {"timeout_seconds": 0.5}
    receiver.answers = ["hang"]
    post(hooked_site)
    row = webhook_rows().get()

    started = time.monotonic()
    assert webhooks.send(row.pk) == "pending"

    assert time.monotonic() - started < 5
    row.refresh_from_db()
    assert "timed out" in row.last_error
    assert row.attempts == 1


@pytest.mark.parametrize(
    "url,error",
    [
        ("http://127.0.0.1:{closed}/hook", "cannot reach the receiver: [Errno 111]"),
        ("file:///etc/passwd", "is not an http:// or https:// URL"),
        ("not a url", "is not an http:// or https:// URL"),
    ],
)
@pytest.mark.django_db
def test_bad_url_is_logged_and_retried_without_a_crash(hooked_site, caplog, url, error):
    post(hooked_site)
    row = webhook_rows().get()
    # A raw update, as a script might do: the admin form would refuse the last two.
    Site.objects.filter(pk=hooked_site.pk).update(webhook_url=url.format(closed=_free_port()))

    with caplog.at_level(logging.WARNING, logger="chat.webhooks"):
        assert webhooks.send(row.pk) == "pending"

    row.refresh_from_db()
    assert error in row.last_error
    [record] = [r for r in caplog.records if r.getMessage() == "webhook.send_failed"]
    assert record.outbox == row.pk and error in record.error


@pytest.mark.django_db
def test_row_of_a_site_whose_webhook_was_turned_off_is_settled_unsent(hooked_site, receiver):
    post(hooked_site)
    row = webhook_rows().get()
    Site.objects.filter(pk=hooked_site.pk).update(webhook_url="")

    assert webhooks.send(row.pk) == "off"

    assert receiver.requests == []
    row.refresh_from_db()
    assert row.status == "done"
    assert "webhook URL was emptied" in row.last_error


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("embedded_sender")
def test_embedded_defaults_send_from_a_thread_after_commit(hooked_site, receiver):
    # Given a receiver that takes its time
    receiver.answers = ["hang"]

    # When a message is stored, the caller is not kept waiting for the webhook
    started = time.monotonic()
    post(hooked_site)
    assert time.monotonic() - started < 2
    wait_for(receiver.in_hand.is_set, what="the webhook request")

    # And once the receiver answers, the row is done
    receiver.release.set()
    wait_for(lambda: webhook_rows().get().status == "done", what="the row to be done")
    assert receiver.effects == [str(webhook_rows().get().delivery_id)]


# Async helpers for the tests above that drive the retry job.


async def actions_in_thread(function, *args):
    from asgiref.sync import sync_to_async

    return await sync_to_async(function, thread_sensitive=False)(*args)


async def db_in_thread(function):
    return await actions_in_thread(function)


async def wait_async(condition, what: str, seconds: float = 20.0) -> None:
    import asyncio

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_for_row(condition, seconds: float = 20.0) -> OutboxEvent:
    import asyncio

    deadline = time.monotonic() + seconds
    while True:
        row = await db_in_thread(lambda: webhook_rows().get())
        if condition(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"row never reached the state awaited: {row.__dict__}")
        await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# A Celery worker killed while it holds the send


class Worker:
    """A real `celery worker` in a process group of its own, so the test can kill all of it."""

    def __init__(self, env: dict[str, str], queue: str, log: Path) -> None:
        self.log = log
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "gofly_project",
                    "worker",
                    "--pool=prefork",
                    "--concurrency=1",
                    "-Q",
                    queue,
                    "--without-mingle",
                    "--without-gossip",
                    "-l",
                    "info",
                ],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError("the worker exited: " + self.log.read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL the main process and its pool children: no chance to ack or requeue."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(20)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


def _database_url_for_workers() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def _forget_queue(redis_url: str, queue: str) -> None:
    """Delete what kombu keeps in Redis for the test's queue (its bindings)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"*{queue}*"):
        client.delete(key)
    client.close()


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_send_redelivers_and_the_effect_happens_once(
    hooked_site, receiver, settings, tmp_path, capsys
):
    redis_url = require_redis()
    assert settings.CELERY_BROKER_URL.startswith("redis"), settings.CELERY_BROKER_URL
    # A queue of this test's own: no other worker takes the send, and the workers here take
    # nothing else.
    queue = "gofly-test-webhooks-" + uuid.uuid4().hex[:8]
    settings.GOFLY = {
        **settings.GOFLY,
        "celery": {**settings.GOFLY["celery"], "webhook_queue": queue},
    }
    visibility = 5
    env = {
        **os.environ,
        # The test's own database: transactional, so what the test commits the worker sees.
        "DATABASE_URL": _database_url_for_workers(),
        "REDIS_URL": redis_url,
        "GOFLY_DATA_DIR": str(tmp_path),
        "GOFLY_CELERY_VISIBILITY_TIMEOUT_SECONDS": str(visibility),
        "GOFLY_WEBHOOKS_TIMEOUT_SECONDS": "4",
    }
    log = tmp_path / "workers.log"
    workers: list[Worker] = []
    try:
        # Given a worker inside the send, its request held by a receiver that does not answer
        receiver.answers = ["hang"]
        workers.append(Worker(env, queue, log))
        post(hooked_site)
        row = webhook_rows().get()
        deadline = time.monotonic() + 60
        while not receiver.in_hand.wait(0.2):
            workers[0].check_alive()
            assert time.monotonic() < deadline, "the worker never sent: " + log.read_text()
        taken_at = time.monotonic()

        # When the whole worker is killed, and only then the receiver answers, to no one
        workers[0].kill()
        killed_at = time.monotonic()
        receiver.release.set()
        assert receiver.hang_over.wait(10)
        row.refresh_from_db()
        assert (row.status, row.attempts) == ("pending", 1)

        # Then a second worker gets the task again once the visibility timeout has passed
        time.sleep(max(0.0, taken_at + visibility + 0.5 - time.monotonic()))
        workers.append(Worker(env, queue, log))
        deadline = time.monotonic() + 90
        while webhook_rows().get().status != "done":
            workers[1].check_alive()
            assert time.monotonic() < deadline, "never redelivered: " + log.read_text()[-3000:]
            time.sleep(0.2)
        done_after = time.monotonic() - killed_at
        # Nothing more comes: the redelivered task was the only one, and it found the row done
        # if it ran again.
        time.sleep(1.0)
    finally:
        for worker in workers:
            worker.stop()
        _forget_queue(redis_url, queue)

    row = webhook_rows().get()
    counts = {
        "test": "webhook_worker_killed_mid_send",
        "database": connection.vendor,
        "requests_received": len(receiver.requests),
        "distinct_delivery_ids": len(set(receiver.delivery_ids())),
        "all_signed": all(r["signed"] for r in receiver.requests),
        "row_status": row.status,
        "row_attempts": row.attempts,
        "effects_applied": len(receiver.effects),
        "repeats_dropped": receiver.repeats,
        "visibility_timeout_seconds": visibility,
        "seconds_from_kill_to_done": round(done_after, 1),
    }
    with capsys.disabled():
        print("\n" + json.dumps(counts))
    assert counts["requests_received"] >= 2
    assert counts["distinct_delivery_ids"] == 1
    assert counts["all_signed"]
    assert (row.status, row.attempts) == ("done", 2)
    assert counts["effects_applied"] == 1
    assert counts["repeats_dropped"] == counts["requests_received"] - 1
