"""Sending to the sockets that may see a change, through the channel layer.

Only this module sends to groups. Durable changes go through the outbox (`chat.outbox`): the
consumer that stored them calls `relay` after the commit, and `relay_due` retries whatever is
still pending, handing webhook rows to `chat.webhooks` and bot rows to `run_bot`. Typing and
read notices are ephemeral and sent directly, best effort.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from chat import outbox, webhooks
from chat.models import OutboxEvent
from chat.outbox import Send, site_agents_group, visitor_group

logger = logging.getLogger(__name__)

# After the channel layer has failed, a PUBLISH can succeed before this process's subscriptions
# are back (measured: the first seconds after a Redis restart reached nobody). Rows relayed in
# that window are sent again by the retry job until it has passed; receivers drop repeats.
SETTLE_SECONDS = 30.0
_last_failure = float("-inf")

# Bot answers under way on this loop; held so that the loop does not drop them half-way.
_bot_tasks: set[asyncio.Task] = set()

__all__ = [
    "relay",
    "run_bot",
    "run_bot_soon",
    "relay_due",
    "deliver_typing",
    "deliver_read",
    "site_agents_group",
    "visitor_group",
]


async def _send_all(sends: list[Send]) -> str | None:
    """Send each (group, event); return the first error as text, or None when all went out."""
    global _last_failure
    layer = get_channel_layer()
    for group, event in sends:
        try:
            await layer.group_send(group, event)
        except Exception as exc:
            _last_failure = time.monotonic()
            logger.warning("delivery.group_send_failed", extra={"group": group}, exc_info=True)
            return f"{type(exc).__name__}: {exc}"
    return None


def settling() -> bool:
    """Whether the layer failed recently enough that a successful send may have reached no one."""
    return time.monotonic() - _last_failure < SETTLE_SECONDS


async def relay(event_id: int, sends: list[Send]) -> bool:
    """Deliver one outbox row right after its commit; on failure leave it to the retry job.

    Never raises for a delivery problem: the change is stored, and the sender must get its ack.
    """
    error = await _send_all(sends)
    try:
        if error is None and settling():
            await database_sync_to_async(outbox.defer, thread_sensitive=False)(event_id)
        elif error is None:
            await database_sync_to_async(outbox.mark_done, thread_sensitive=False)(event_id)
        else:
            await database_sync_to_async(outbox.mark_retry, thread_sensitive=False)(event_id, error)
    except Exception:
        # The row stays pending and the retry job sends it again: at least once.
        logger.exception("delivery.outbox_update_failed", extra={"outbox": event_id})
    return error is None


async def relay_due() -> dict[str, int]:
    """One retry run: send every outbox row whose time has come. Returns counts.

    Channel-layer rows are sent here (`delivered`, `failed`); webhook rows are only handed to
    their sender (`webhooks`), so a slow receiver never holds up this run or its event loop.
    """
    claimed = await database_sync_to_async(outbox.claim_due, thread_sensitive=False)()
    counts = {"claimed": len(claimed), "delivered": 0, "failed": 0, "webhooks": 0}
    webhook_ids = [row.event_id for row in claimed if row.kind == OutboxEvent.Kind.WEBHOOK]
    if webhook_ids:
        webhooks.dispatch(webhook_ids)  # submits to a thread pool and returns at once
        counts["webhooks"] = len(webhook_ids)
    for row in claimed:
        if row.kind == OutboxEvent.Kind.BOT:
            await run_bot(row.event_id)
            counts["bot"] = counts.get("bot", 0) + 1
            continue
        if row.kind == OutboxEvent.Kind.WEBHOOK:
            continue
        if await relay(row.event_id, row.sends):
            counts["delivered"] += 1
        else:
            counts["failed"] += 1
    if claimed:
        logger.info("outbox.retried", extra=counts)
    return counts


async def run_bot(event_id: int) -> None:
    """Have the bot answer one `bot` outbox row, in a worker thread, then relay its reply."""
    from nlp import service  # imported here: nlp imports chat

    handle = database_sync_to_async(service.handle_bot_event, thread_sensitive=False)
    for recorded in await handle(event_id):
        await relay(recorded.outbox_id, recorded.sends)


def run_bot_soon(event_id: int) -> None:
    """Start `run_bot` on the running loop and return: the sender's socket never waits for it.

    Should this process die first, the row is still pending and the retry job runs it.
    """
    task = asyncio.get_running_loop().create_task(run_bot(event_id))
    _bot_tasks.add(task)
    task.add_done_callback(_bot_tasks.discard)


async def _send(group: str, event: dict[str, Any]) -> None:
    await _send_all([(group, event)])


async def deliver_typing(group: str, frame: dict[str, Any], assignee: int | None) -> None:
    await _send(group, {"type": "chat.typing", "frame": frame, "assignee": assignee})


async def deliver_read(group: str, frame: dict[str, Any], assignee: int | None) -> None:
    await _send(group, {"type": "chat.read", "frame": frame, "assignee": assignee})
