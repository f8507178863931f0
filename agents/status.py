"""The agent state machine: which status changes are allowed, by what, and how one happens.

`TRANSITIONS` is the one place that says what may change into what. `change_status` is the one
function that changes an agent's status: it checks the table, stores an AgentStatusEvent and
writes the broadcast to the agent's sites as an outbox row in the same transaction, so every
dashboard shows the status the database holds.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from agents.models import Agent, AgentStatus, AgentStatusEvent, StatusTrigger
from chat import assignment, outbox
from chat.errors import ErrorCode, GoflyError
from chat.outbox import Recorded, site_agents_group

logger = logging.getLogger(__name__)

S = AgentStatus
T = StatusTrigger

# (from, to) -> the triggers that may cause it. Anything missing is refused.
TRANSITIONS: dict[tuple[str, str], frozenset[str]] = {
    (S.OFFLINE, S.ONLINE): frozenset({T.CONNECTED, T.CHOSEN, T.ADMIN}),
    (S.ONLINE, S.AWAY): frozenset({T.CHOSEN, T.IDLE, T.ADMIN}),
    (S.ONLINE, S.BUSY): frozenset({T.CHOSEN, T.ADMIN}),
    (S.ONLINE, S.OFFLINE): frozenset({T.DISCONNECTED, T.ADMIN}),
    (S.AWAY, S.ONLINE): frozenset({T.CHOSEN, T.ACTIVE, T.ADMIN}),
    (S.AWAY, S.BUSY): frozenset({T.CHOSEN, T.ADMIN}),
    (S.AWAY, S.OFFLINE): frozenset({T.DISCONNECTED, T.ADMIN}),
    (S.BUSY, S.ONLINE): frozenset({T.CHOSEN, T.ADMIN}),
    (S.BUSY, S.AWAY): frozenset({T.CHOSEN, T.ADMIN}),
    (S.BUSY, S.OFFLINE): frozenset({T.DISCONNECTED, T.ADMIN}),
}

# A trigger that may only undo a status another trigger caused: activity ends an away the idle
# timer set, never one the agent chose.
UNDOES = {T.ACTIVE: T.IDLE}

# What an agent can pick in the dashboard; offline follows from closing it.
CHOOSABLE = frozenset({S.ONLINE, S.AWAY, S.BUSY})


def transition_refused(current: str, to: str, trigger: str) -> GoflyError:
    return GoflyError(
        ErrorCode.INVALID_TRANSITION,
        _("An agent cannot go from “%(from)s” to “%(to)s” that way (%(trigger)s).")
        % {"from": S(current).label, "to": S(to).label, "trigger": T(trigger).label},
        status=409,
    )


def check_transition(current: str, to: str, trigger: str, current_trigger: str = "") -> None:
    """Raise `invalid_transition` unless the table allows `current` -> `to` by `trigger`."""
    allowed = trigger in TRANSITIONS.get((current, to), frozenset())
    undone = UNDOES.get(trigger)
    if not allowed or (undone is not None and current_trigger != undone):
        raise transition_refused(current, to, trigger)


def status_frame(agent: Agent, previous: str) -> dict[str, Any]:
    return {
        "type": "agent_status",
        "agent": {"id": agent.user_id, "name": str(agent)},
        "status": agent.status,
        "previous": previous,
        "trigger": agent.status_trigger,
        "at": agent.status_changed_at.isoformat(),
    }


def change_status(
    agent_id: int,
    to: str,
    trigger: str,
    *,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
) -> Recorded | None:
    """Move the agent to `to`; None when it is already there. Raises `invalid_transition`.

    The caller relays the returned outbox row after the commit (or leaves it to the retry job).
    """
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        if agent.status == to:
            return None
        check_transition(agent.status, to, trigger, agent.status_trigger)
        previous = agent.status
        agent.status = to
        agent.status_trigger = trigger
        agent.status_changed_at = timezone.now()
        agent.save(update_fields=["status", "status_trigger", "status_changed_at"])
        assignment.sync_seats(agent)
        AgentStatusEvent.objects.create(
            agent=agent,
            from_status=previous,
            to_status=to,
            trigger=trigger,
            reason=reason[:200],
            actor=actor,
            created_at=agent.status_changed_at,
        )
        frame = status_frame(agent, previous)
        sends = [
            (site_agents_group(site_id), {"type": "chat.agent_status", "frame": frame})
            for site_id in agent.sites.values_list("id", flat=True)
        ]
        recorded = outbox.record_sends(sends)
    logger.info(
        "agents.status_changed",
        extra={"agent": agent_id, "from": previous, "to": to, "trigger": trigger},
    )
    return recorded


def change_and_route(
    agent_id: int,
    to: str,
    trigger: str,
    *,
    actor: AbstractBaseUser | None = None,
    reason: str = "",
) -> list[Recorded]:
    """`change_status`, then what the new status means for the waiting line.

    Must not run inside a transaction: the line is worked on after the change has committed,
    one conversation per transaction, because routing locks a conversation before its agent.
    """
    recorded = change_status(agent_id, to, trigger, actor=actor, reason=reason)
    if recorded is None:
        return []
    return [recorded, *assignment.after_status_change(agent_id, to)]


def choose(agent_id: int, to: Any, actor: AbstractBaseUser) -> list[Recorded]:
    """The agent picked a status in the dashboard."""
    if to not in CHOOSABLE:
        raise GoflyError(
            ErrorCode.INVALID,
            _("Pick one of: online, away, busy."),
        )
    return change_and_route(agent_id, to, T.CHOSEN, actor=actor)
