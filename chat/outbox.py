"""The outbox: what a stored change must tell the world, kept in the database until it is told.

`record` and `record_webhook` run inside the transaction that stores the change, so the outbox
row exists exactly when the change does. Delivery is at least once: right after the commit the
relay in `chat.delivery` sends a channel-layer row and `chat.webhooks` a webhook row, and each
marks its row done; `claim_due` hands rows still pending (the send failed, or the process died
in between) to a periodic retry with exponential backoff and jitter. Sockets drop duplicates by
`(conversation, seq)`, webhook receivers by the delivery id.

Everything here is synchronous ORM code; `chat.delivery` and `chat.webhooks` do the sending.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chat.models import OutboxEvent, Site

logger = logging.getLogger(__name__)

Send = tuple[str, dict[str, Any]]

# How long a row handed to a sender is left to it before the retry job may hand it out again.
# Well above the longest send (a webhook waits webhooks.timeout_seconds, 10 s by default).
LEASE_SECONDS = 60


class Claimed(NamedTuple):
    """A row the retry job took: channel-layer rows carry their sends, webhook rows none."""

    event_id: int
    kind: str
    sends: list[Send]


@dataclass(frozen=True)
class Recorded:
    """The outbox row written with a change, and what it sends: relay it after the commit."""

    outbox_id: int
    sends: list[Send]


def visitor_group(visitor_id: int) -> str:
    return f"visitor.{visitor_id}"


def site_agents_group(site_id: int) -> str:
    return f"site.{site_id}.agents"


def message_sends(
    frame: dict[str, Any], *, site_id: int, visitor_id: int, assignee_id: int | None
) -> list[Send]:
    event = {"type": "chat.message", "frame": frame, "assignee": assignee_id}
    return [(visitor_group(visitor_id), event), (site_agents_group(site_id), event)]


def conversation_sends(site_id: int, visitor_id: int, summary: dict[str, Any]) -> list[Send]:
    """Agents get the whole summary; the visitor only the id and status."""
    assignee = summary["assignee"]["id"] if summary["assignee"] else None
    brief = {"id": summary["id"], "status": summary["status"]}
    return [
        (
            site_agents_group(site_id),
            {"type": "chat.conversation", "summary": summary, "assignee": assignee},
        ),
        (
            visitor_group(visitor_id),
            {"type": "chat.conversation", "summary": brief, "assignee": assignee},
        ),
    ]


def _config() -> dict[str, Any]:
    return settings.GOFLY["outbox"]


def record_sends(sends: list[Send]) -> Recorded:
    """`record`, returning what the caller relays after its commit."""
    return Recorded(record(sends), sends)


def record(sends: list[Send]) -> int:
    """Write the outbox row; the caller is inside the transaction that stores the change."""
    return OutboxEvent.objects.create(sends=[[group, event] for group, event in sends]).pk


def record_webhook(site: Site, delivery_id: uuid.UUID, payload: dict[str, Any]) -> int:
    """Write a webhook row; the caller is inside the transaction that stores the change.

    The row is leased from the start: its sender is handed it after the commit, and the retry
    job steps in only if that send has not finished (or not begun) within the lease.
    """
    now = timezone.now()
    return OutboxEvent.objects.create(
        kind=OutboxEvent.Kind.WEBHOOK,
        site=site,
        delivery_id=delivery_id,
        payload=payload,
        created_at=now,
        next_attempt_at=now + timedelta(seconds=LEASE_SECONDS),
    ).pk


def record_bot(conversation: Any, message_id: int) -> int:
    """Write the row that makes the site's bot answer a visitor message (nlp.service).

    Leased from the start, like a webhook row: the socket that carried the message runs the
    bot right after the commit, and the retry job steps in only if that has not finished.
    """
    now = timezone.now()
    return OutboxEvent.objects.create(
        kind=OutboxEvent.Kind.BOT,
        site_id=conversation.site_id,
        payload={"conversation": conversation.pk, "message": message_id},
        created_at=now,
        next_attempt_at=now + timedelta(seconds=LEASE_SECONDS),
    ).pk


def mark_done(event_id: int, note: str = "") -> None:
    """Mark a pending row delivered; `note` says why when it was settled without a send."""
    fields: dict[str, Any] = {"status": OutboxEvent.Status.DONE, "done_at": timezone.now()}
    if note:
        fields["last_error"] = note
    OutboxEvent.objects.filter(pk=event_id, status=OutboxEvent.Status.PENDING).update(**fields)


def start_attempt(event_id: int, kind: str, now: datetime | None = None) -> OutboxEvent | None:
    """Count a try before it is made and lease the row to it; None unless a pending `kind` row.

    Counting first means a try that never finishes (its worker was killed) still counts, so a
    row that keeps killing workers is given up after `max_attempts` like one that keeps failing.
    """
    now = now or timezone.now()
    with transaction.atomic():
        event = (
            OutboxEvent.objects.select_for_update(of=("self",))
            .select_related("site")
            .filter(pk=event_id, kind=kind)
            .first()
        )
        if event is None or event.status != OutboxEvent.Status.PENDING:
            return None
        if event.attempts >= _config()["max_attempts"]:
            # The last allowed try began but never reported back.
            event.status = OutboxEvent.Status.FAILED
            event.last_error = f"try {event.attempts} of {event.attempts} did not finish"
            event.save(update_fields=["status", "last_error"])
            logger.error("outbox.failed", extra={"outbox": event.pk, "attempts": event.attempts})
            return None
        event.attempts += 1
        event.next_attempt_at = now + timedelta(seconds=LEASE_SECONDS)
        event.save(update_fields=["attempts", "next_attempt_at"])
    return event


def defer(event_id: int) -> None:
    """Keep a row that was sent pending, for the retry job to send it once more.

    Used right after the channel layer recovered, when a send may have reached no subscriber.
    """
    OutboxEvent.objects.filter(pk=event_id, status=OutboxEvent.Status.PENDING).update(
        next_attempt_at=timezone.now()
    )


def backoff_seconds(attempts: int) -> float:
    """Delay before the next try after `attempts` failures: doubling, capped, with jitter.

    With the defaults (base 2 s, cap 600 s, 10 attempts) the waits are about 1–2, 2–4, 4–8 … s,
    reaching the cap at the tenth, so a row is given up after roughly 10–20 minutes.
    """
    config = _config()
    ceiling = min(
        config["backoff_max_seconds"], config["backoff_base_seconds"] * 2 ** (attempts - 1)
    )
    # Jitter spreads the retries of many rows that failed together (one Redis outage).
    return ceiling * random.uniform(0.5, 1.0)


def mark_retry(
    event_id: int, error: str, now: datetime | None = None, *, counted: bool = False
) -> str:
    """Count a failed delivery; schedule the next try, or give up after the last one.

    `counted`: the try was already counted by `start_attempt`.
    """
    now = now or timezone.now()
    with transaction.atomic():
        event = OutboxEvent.objects.select_for_update().get(pk=event_id)
        if event.status != OutboxEvent.Status.PENDING:
            return event.status
        if not counted:
            event.attempts += 1
        event.last_error = error[:2000]
        if event.attempts >= _config()["max_attempts"]:
            event.status = OutboxEvent.Status.FAILED
            logger.error("outbox.failed", extra={"outbox": event.pk, "attempts": event.attempts})
        else:
            event.next_attempt_at = now + timedelta(seconds=backoff_seconds(event.attempts))
        event.save(update_fields=["attempts", "last_error", "status", "next_attempt_at"])
    return event.status


def claim_due(now: datetime | None = None) -> list[Claimed]:
    """Rows whose turn has come, leased to this caller for `LEASE_SECONDS`.

    Rows younger than `retry_after_seconds` are left to the relay that wrote them. The lease
    (next_attempt_at pushed forward) keeps two retry jobs from sending the same row at once;
    where the database can, locked rows are skipped rather than waited for.
    """
    config = _config()
    now = now or timezone.now()
    with transaction.atomic():
        due = OutboxEvent.objects.filter(
            status=OutboxEvent.Status.PENDING,
            next_attempt_at__lte=now,
            created_at__lte=now - timedelta(seconds=config["retry_after_seconds"]),
        ).order_by("next_attempt_at")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        rows = list(due.values_list("pk", "kind", "sends")[: config["batch_size"]])
        OutboxEvent.objects.filter(pk__in=[pk for pk, _, _ in rows]).update(
            next_attempt_at=now + timedelta(seconds=LEASE_SECONDS)
        )
    return [
        Claimed(pk, kind, [(group, event) for group, event in sends]) for pk, kind, sends in rows
    ]


def retry_now(event_ids: list[int]) -> int:
    """Put failed or pending rows back in line for the next retry run (admin action)."""
    return (
        OutboxEvent.objects.filter(pk__in=event_ids)
        .exclude(status=OutboxEvent.Status.DONE)
        .update(
            status=OutboxEvent.Status.PENDING,
            attempts=0,
            next_attempt_at=timezone.now(),
        )
    )


def clear_done(now: datetime | None = None) -> int:
    """Delete rows delivered longer ago than `keep_done_hours`."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=_config()["keep_done_hours"])
    deleted, _ = OutboxEvent.objects.filter(
        status=OutboxEvent.Status.DONE, done_at__lt=cutoff
    ).delete()
    return deleted
