"""The outbox: what a stored change must tell the world, kept in the database until it is told.

`record` runs inside the transaction that stores the change, so the outbox row exists exactly
when the change does. Delivery is at least once: the relay in `chat.delivery` sends right after
the commit and marks the row done; `claim_due` hands rows still pending (the relay failed, or
the process died in between) to a periodic retry with exponential backoff and jitter. Receivers
drop duplicates by `(conversation, seq)`.

Everything here is synchronous ORM code; `chat.delivery` does the sending.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from chat.models import OutboxEvent

logger = logging.getLogger(__name__)

Send = tuple[str, dict[str, Any]]


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


def mark_done(event_id: int) -> None:
    OutboxEvent.objects.filter(pk=event_id, status=OutboxEvent.Status.PENDING).update(
        status=OutboxEvent.Status.DONE, done_at=timezone.now()
    )


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


def mark_retry(event_id: int, error: str, now: datetime | None = None) -> str:
    """Count a failed delivery; schedule the next try, or give up after the last one."""
    now = now or timezone.now()
    with transaction.atomic():
        event = OutboxEvent.objects.select_for_update().get(pk=event_id)
        if event.status != OutboxEvent.Status.PENDING:
            return event.status
        event.attempts += 1
        event.last_error = error[:2000]
        if event.attempts >= _config()["max_attempts"]:
            event.status = OutboxEvent.Status.FAILED
            logger.error("outbox.failed", extra={"outbox": event.pk, "attempts": event.attempts})
        else:
            event.next_attempt_at = now + timedelta(seconds=backoff_seconds(event.attempts))
        event.save(update_fields=["attempts", "last_error", "status", "next_attempt_at"])
    return event.status


def claim_due(now: datetime | None = None) -> list[tuple[int, list[Send]]]:
    """Rows whose turn has come, leased to this caller for a minute.

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
        rows = list(due.values_list("pk", "sends")[: config["batch_size"]])
        OutboxEvent.objects.filter(pk__in=[pk for pk, _ in rows]).update(
            next_attempt_at=now + timedelta(seconds=60)
        )
    return [(pk, [(group, event) for group, event in sends]) for pk, sends in rows]


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
