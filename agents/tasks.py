"""Periodic work of the agents app."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from celery import shared_task
from channels.db import database_sync_to_async

from agents import presence
from chat import delivery


async def sweep_and_relay() -> int:
    """One presence sweep; the status broadcasts go out at once. Returns how many changed."""
    changed = await database_sync_to_async(presence.sweep, thread_sensitive=False)()
    for recorded in changed:
        await delivery.relay(recorded.outbox_id, recorded.sends)
    return len(changed)


@shared_task(name="agents.tasks.sweep_presence")
def sweep_presence() -> int:
    """Offline after the grace period, away after inactivity; safe to run twice."""
    return async_to_sync(sweep_and_relay)()
