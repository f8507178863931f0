"""Outgoing webhooks: a site's new messages and status changes, POSTed to its webhook URL.

The actions call `record_*` inside the transaction that stores the change: the webhook row is
written with it (`chat.outbox`) and handed to a sender once the transaction has committed.
With a Celery broker the sender is the task `chat.tasks.send_webhook` on a worker; on embedded
defaults there is no worker, and the process sends itself. Either way the hand-over runs in a
small thread pool, so neither a slow receiver nor an unreachable broker holds up the caller or
an event loop.

Delivery is at least once. A try whose outcome is lost (the worker died mid-request, the answer
came after the timeout) is made again with the same `X-Gofly-Delivery`, which receivers use to
drop repeats (docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import threading
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from chat import outbox
from chat.models import Conversation, OutboxEvent, Site

logger = logging.getLogger(__name__)

MESSAGE_CREATED = "message.created"
STATUS_CHANGED = "conversation.status_changed"

# Threads that hand rows over. On embedded defaults each sends, waiting at most
# webhooks.timeout_seconds per try, so a receiver that hangs holds up this many sends at most,
# never the server. With a broker each enqueues, which takes about 6 s to fail when Redis is
# down (redis-py retries the connection three times).
HAND_OVER_THREADS = 4
# Of a receiver's answer only the start is read, to show in the admin when the try failed.
ANSWER_BYTES = 500
USER_AGENT = "gofly-webhooks/1"

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------
# Recording, inside the transaction of the change


def _conversation(conversation: Conversation) -> dict[str, Any]:
    visitor = conversation.visitor
    return {
        "id": conversation.pk,
        "status": conversation.status,
        "visitor": {"id": visitor.public_id, "name": str(visitor)},
        "assignee": conversation.assignee_id,
    }


def _record(site: Site, event: str, occurred_at: str, data: dict[str, Any]) -> int | None:
    if not site.webhook_url:
        return None
    delivery_id = uuid.uuid4()
    payload = {
        "event": event,
        "id": str(delivery_id),
        "occurred_at": occurred_at,
        "site": {"id": site.pk, "key": site.key, "name": site.name},
        **data,
    }
    event_id = outbox.record_webhook(site, delivery_id, payload)
    # robust: the change is stored whatever happens here; the retry job covers a lost hand-off.
    transaction.on_commit(partial(dispatch, [event_id]), robust=True)
    return event_id


def record_message(conversation: Conversation, frame: dict[str, Any]) -> int | None:
    """Record `message.created` for a site with a webhook; returns the outbox row id.

    The caller is inside the transaction that stored the message; conversation.site and
    conversation.visitor must be loaded.
    """
    message = {
        key: frame[key]
        for key in ("id", "seq", "sender", "body", "content_type", "attachment", "created_at")
    }
    data = {"conversation": _conversation(conversation), "message": message}
    return _record(conversation.site, MESSAGE_CREATED, frame["created_at"], data)


def record_status_change(
    conversation: Conversation, previous: str, changed_by: dict[str, Any]
) -> int | None:
    """Record `conversation.status_changed`; same contract as `record_message`."""
    data = {
        "conversation": _conversation(conversation),
        "previous_status": previous,
        "changed_by": changed_by,
    }
    return _record(conversation.site, STATUS_CHANGED, timezone.now().isoformat(), data)


# ---------------------------------------------------------------------------------------------
# Handing rows to a sender, after the commit


def _has_broker() -> bool:
    return not str(settings.CELERY_BROKER_URL).startswith("memory://")


def dispatch(event_ids: list[int]) -> None:
    """Hand committed webhook rows to their sender, from the pool; returns at once.

    A row that cannot be handed over (the broker is down, the process ends first) stays
    pending, and the retry job hands it out again once its lease (`outbox.LEASE_SECONDS`) has
    passed.
    """
    for event_id in event_ids:
        _hand_over_pool().submit(_hand_over, event_id)


def _hand_over_pool() -> ThreadPoolExecutor:
    # Made on first use, so a process that forks (Celery's prefork pool) never inherits one.
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(HAND_OVER_THREADS, thread_name_prefix="gofly-webhook")
        return _pool


def _hand_over(event_id: int) -> None:
    try:
        if _has_broker():
            _enqueue(event_id)
        else:
            send(event_id)
    except Exception as exc:
        # Broker down, or a database error: the row is still pending, so this is a delay.
        logger.warning(
            "webhook.hand_over_failed",
            extra={"outbox": event_id, "error": repr(exc)},
            exc_info=True,
        )
    finally:
        # Pool threads outlive any request; the connection they opened must not linger.
        connections.close_all()


def _enqueue(event_id: int) -> None:
    # Imported here: chat.tasks imports chat.delivery, which imports this module.
    from chat.tasks import send_webhook

    queue = settings.GOFLY["celery"]["webhook_queue"]
    options = {"queue": queue} if queue else {}
    # No publish retries of Celery's own: the outbox is the retry.
    send_webhook.apply_async((event_id,), retry=False, **options)


# ---------------------------------------------------------------------------------------------
# Sending


def encode(payload: dict[str, Any]) -> bytes:
    """The request body; the same bytes on every try of a row."""
    return json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """The `X-Gofly-Signature` header value: `sha256=` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would follow a 301/302 with a GET and no body, losing the event; a redirect is an
    # answer other than 2xx, so the try fails and the admin sees where the URL now points.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def _url_problem(url: str) -> str | None:
    # urllib would also open file:// URLs; the admin form refuses them, a raw update may not.
    # TODO(gofly): refuse URLs that resolve to loopback or private addresses, once sites are
    # set by anyone but the server's own admins (issue 3 closing note); until then an admin
    # may point a webhook at an internal service on purpose.
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"the webhook URL {url!r} is not an http:// or https:// URL; fix it in the site"
    return None


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> str | None:
    """POST the body; None for a 2xx answer, otherwise what went wrong, in one line.

    The timeout bounds the connect and each read, not the whole exchange: a receiver that
    trickles its answer can take longer, which the Celery visibility timeout leaves room for.
    """
    # TODO(gofly): one deadline for the whole exchange, if a receiver is ever seen trickling;
    # it can go when the send moves to an HTTP client with a total timeout.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=timeout) as response:
            response.read(ANSWER_BYTES)
    except urllib.error.HTTPError as exc:
        answer = exc.read(ANSWER_BYTES).decode("utf-8", "replace").strip()
        return f"HTTP {exc.code} from the receiver" + (f": {answer}" if answer else "")
    except urllib.error.URLError as exc:
        return f"cannot reach the receiver: {exc.reason}"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # TimeoutError is an OSError; ValueError is urllib refusing the URL itself.
        return f"{type(exc).__name__}: {exc}"
    return None


def send(event_id: int) -> str:
    """Make one try at a webhook row; safe to run twice. Returns what became of the row.

    Sends only while the row is pending, so a task delivered again after the row was done does
    nothing ("skipped"). The try is counted before the request goes out (see
    `outbox.start_attempt`); a 2xx answer marks the row done, anything else schedules a retry
    with backoff, or fails the row after `outbox.max_attempts` tries.
    """
    event = outbox.start_attempt(event_id, kind=OutboxEvent.Kind.WEBHOOK)
    if event is None:
        return "skipped"
    site = event.site
    extra = {"outbox": event_id, "site": site.pk, "attempts": event.attempts}
    if not site.webhook_url:
        outbox.mark_done(event_id, note="not sent: the site's webhook URL was emptied")
        logger.info("webhook.turned_off", extra=extra)
        return "off"
    body = encode(event.payload)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Gofly-Event": event.payload["event"],
        "X-Gofly-Delivery": str(event.delivery_id),
        "X-Gofly-Signature": signature(site.webhook_secret, body),
    }
    timeout = float(settings.GOFLY["webhooks"]["timeout_seconds"])
    error = _url_problem(site.webhook_url) or _post(site.webhook_url, body, headers, timeout)
    if error is None:
        outbox.mark_done(event_id)
        logger.info("webhook.sent", extra=extra)
        return "sent"
    status = outbox.mark_retry(event_id, error, counted=True)
    logger.warning("webhook.send_failed", extra={**extra, "error": error, "status": status})
    return status
