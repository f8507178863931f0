"""Periodic and background tasks of the chat app."""

from asgiref.sync import async_to_sync
from celery import shared_task
from celery.utils.log import get_task_logger
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.db import connection
from django.utils import timezone

from chat import actions, archive, delivery, outbox, partitions, webhooks

logger = get_task_logger(__name__)


@shared_task(name="chat.tasks.clear_expired_sessions")
def clear_expired_sessions() -> int:
    """Delete expired dashboard sessions; safe to run twice."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    logger.info("sessions.cleared", extra={"deleted": deleted})
    return deleted


@shared_task(name="chat.tasks.ensure_message_partitions")
def ensure_message_partitions() -> list[str]:
    """Create this month's and next month's message partitions if missing; idempotent.

    Runs daily, so next month's partition exists weeks before its first row; nothing on SQLite.
    """
    created = partitions.ensure_partitions(connection)
    logger.info("partitions.ensured", extra={"partitions_created": created})
    return created


@shared_task(name="chat.tasks.relay_outbox", acks_late=True)
def relay_outbox() -> dict[str, int]:
    """Send the outbox rows the relay after commit could not; at least once, so idempotent."""
    return async_to_sync(delivery.relay_due)()


# acks_late: the broker's message is acknowledged only when the task has finished, so a worker
# that dies mid-send leaves it to be delivered again (after celery.visibility_timeout_seconds
# on Redis); reject_on_worker_lost does the same when only the pool process dies. Running twice
# is safe: `webhooks.send` sends only while the row is pending. No Celery retries: the outbox
# schedules the next try itself, with its own backoff and attempt count.
@shared_task(
    name="chat.tasks.send_webhook",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def send_webhook(event_id: int) -> str:
    """POST one webhook outbox row to its site's receiver; at least once, so idempotent."""
    return webhooks.send(event_id)


@shared_task(name="chat.tasks.clear_outbox")
def clear_outbox() -> int:
    """Delete outbox rows delivered longer ago than outbox.keep_done_hours."""
    deleted = outbox.clear_done()
    logger.info("outbox.cleared", extra={"deleted": deleted})
    return deleted


@shared_task(name="chat.tasks.archive_messages", acks_late=True)
def archive_messages(force: bool = False) -> list[str]:
    """Archive months older than archive.after_months, at the configured hour unless forced.

    Idempotent and resumable, so a late-acked repeat after a worker died is harmless.
    """
    if not force and not archive.is_due():
        return []
    moved = archive.run()
    return [f"{result.month:%Y-%m}:{result.rows}" for result in moved]


async def wake_snoozed_and_relay() -> int:
    """Reopen snoozed conversations whose time has come; their notices go out at once."""
    woken = await database_sync_to_async(actions.wake_snoozed, thread_sensitive=False)()
    for recorded in woken:
        await delivery.relay(recorded.outbox_id, recorded.sends)
    return len(woken)


@shared_task(name="chat.tasks.wake_snoozed")
def wake_snoozed() -> int:
    """Reopen snoozed conversations whose time has come; safe to run twice."""
    return async_to_sync(wake_snoozed_and_relay)()
