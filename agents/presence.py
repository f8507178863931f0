"""Presence: agents' status follows their dashboard sockets.

Every open dashboard socket is an AgentSocket row; several tabs are several rows and one
presence. A socket's opening, its pings (the dashboard sends one every 25 s) and its closing
stamp `Agent.presence_seen_at`. The sweep, run every few seconds by beat or the embedded
scheduler, takes offline an agent whose stamp is older than `agents.offline_grace_seconds`:
the last tab closed and none came back, or the server holding them died without a word (a
SIGKILL closes nothing). It also takes online agents with no activity for
`agents.away_after_seconds` to away; activity brings them back.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent, AgentSocket, AgentStatus, StatusTrigger
from agents.status import change_status
from chat import assignment
from chat.errors import GoflyError
from chat.outbox import Recorded

logger = logging.getLogger(__name__)


def _config() -> dict[str, Any]:
    return settings.GOFLY["agents"]


def socket_opened(agent_id: int, channel_name: str) -> list[Recorded]:
    """Count the socket; an offline agent comes online (and takes from the waiting line)."""
    now = timezone.now()
    with transaction.atomic():
        AgentSocket.objects.update_or_create(
            channel_name=channel_name,
            defaults={"agent_id": agent_id, "opened_at": now, "seen_at": now},
        )
        Agent.objects.filter(pk=agent_id).update(presence_seen_at=now, last_activity_at=now)
    if Agent.objects.get(pk=agent_id).status != AgentStatus.OFFLINE:
        return []
    return _change(agent_id, AgentStatus.ONLINE, StatusTrigger.CONNECTED)


def socket_seen(agent_id: int, channel_name: str, active: bool) -> list[Recorded]:
    """A ping: the socket lives; with `active`, the agent used the dashboard since the last."""
    now = timezone.now()
    AgentSocket.objects.filter(channel_name=channel_name).update(seen_at=now)
    changes: dict[str, datetime] = {"presence_seen_at": now}
    if active:
        changes["last_activity_at"] = now
    Agent.objects.filter(pk=agent_id).update(**changes)
    return note_activity(agent_id) if active else []


def note_activity(agent_id: int) -> list[Recorded]:
    """The agent did something; undo an away the idle timer set (never a chosen one)."""
    Agent.objects.filter(pk=agent_id).update(last_activity_at=timezone.now())
    agent = Agent.objects.only("status", "status_trigger").get(pk=agent_id)
    if agent.status != AgentStatus.AWAY or agent.status_trigger != StatusTrigger.IDLE:
        return []
    return _change(agent_id, AgentStatus.ONLINE, StatusTrigger.ACTIVE)


def socket_closed(channel_name: str) -> None:
    """Forget the socket; the grace period for the agent's presence starts now."""
    now = timezone.now()
    with transaction.atomic():
        agent_id = (
            AgentSocket.objects.filter(channel_name=channel_name)
            .values_list("agent_id", flat=True)
            .first()
        )
        AgentSocket.objects.filter(channel_name=channel_name).delete()
        if agent_id is not None:
            Agent.objects.filter(pk=agent_id).update(presence_seen_at=now)


def sweep(now: datetime | None = None) -> list[Recorded]:
    """Offline after the grace period, away after inactivity. Returns the broadcasts to relay.

    Both queries use an index on (status, timestamp), so a sweep reads the agents it changes,
    not every agent.
    """
    now = now or timezone.now()
    config = _config()
    recorded: list[Recorded] = []
    gone_before = now - timedelta(seconds=config["offline_grace_seconds"])
    # No stamp at all: set online by an administrator with no dashboard open.
    gone = Agent.objects.exclude(status=AgentStatus.OFFLINE).filter(
        Q(presence_seen_at__lt=gone_before) | Q(presence_seen_at__isnull=True)
    )
    for agent_id in gone.values_list("pk", flat=True):
        recorded += _change(
            agent_id, AgentStatus.OFFLINE, StatusTrigger.DISCONNECTED, gone_before=gone_before
        )
    idle_before = now - timedelta(seconds=config["away_after_seconds"])
    idle = Agent.objects.filter(status=AgentStatus.ONLINE, last_activity_at__lt=idle_before)
    for agent_id in idle.values_list("pk", flat=True):
        recorded += _change(agent_id, AgentStatus.AWAY, StatusTrigger.IDLE, idle_before=idle_before)
    return recorded


def _still_due(agent: Agent, gone_before: datetime | None, idle_before: datetime | None) -> bool:
    if gone_before is not None:
        return agent.presence_seen_at is None or agent.presence_seen_at < gone_before
    if idle_before is not None:
        return agent.last_activity_at is not None and agent.last_activity_at < idle_before
    return True


def _change(
    agent_id: int,
    to: str,
    trigger: str,
    *,
    gone_before: datetime | None = None,
    idle_before: datetime | None = None,
) -> list[Recorded]:
    """Change the status if the reason still holds under the agent's lock, then route."""
    try:
        with transaction.atomic():
            # Looked at again under the lock: a tab may have come back since the query.
            agent = Agent.objects.select_for_update().get(pk=agent_id)
            if not _still_due(agent, gone_before, idle_before):
                return []
            if to == AgentStatus.OFFLINE:
                # Every socket stamps the agent when it stamps itself: all of them are stale.
                AgentSocket.objects.filter(agent_id=agent_id).delete()
            recorded = change_status(agent_id, to, trigger)
    except GoflyError:
        # The status changed between the query and the lock; the next sweep looks again.
        logger.info("presence.change_skipped", extra={"agent": agent_id, "to": to})
        return []
    if recorded is None:
        return []
    return [recorded, *assignment.after_status_change(agent_id, to)]
