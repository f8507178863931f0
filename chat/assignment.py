"""Routing: which agent takes a conversation that needs a human, and the waiting line.

A decision costs the same whatever the number of agents or conversations. Each agent has a seat
per pool (each of its sites and teams) in AgentSeat, rewritten whenever its status or load
changes; picking an agent reads the first available seat of the pool from an index ordered by
free capacity, then by the longest idle. The chosen agent's row is then locked and checked
again (online, under its maximum), so two processes routing at once can never push an agent
over capacity, and the conversation row, locked by the caller, can never be assigned twice.
The seats only speed the choice up; the agent row stays the truth. The reasons for this over
Redis sorted sets are in docs/architecture.md.

Lock order, everywhere: conversation, then agent, then the agent's seats. Work that starts
from an agent (it went offline, came online) therefore runs after the agent's own transaction,
one conversation per transaction.

A conversation belongs to its team's pool when it has a team (the site routes to one, or it was
transferred to one), else to its site's. When nobody in the pool is free the conversation waits
(`waiting_since`); each pool's line is first come, first served, and every waiting visitor is
told its position whenever the line moves.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import Agent, AgentSeat, AgentStatus
from chat import outbox
from chat.models import Conversation
from chat.outbox import Recorded, Send, visitor_group

logger = logging.getLogger(__name__)

# Seats that turn out stale under the agent's lock are repaired and the next one is tried; a
# handful of tries covers any realistic race.
MAX_TRIES = 8
# Positions are sent to at most this many waiting visitors when the line moves.
# TODO(gofly): a line longer than this leaves the rest with their last known position until
# they come within reach; a per-visitor "ask for my position" frame would close the gap.
QUEUE_NOTIFY_LIMIT = 500
# Heads of the line assigned in one go after a slot frees or an agent comes online.
FILL_LIMIT = 200
HOLDS_SLOT = (Conversation.Status.OPEN, Conversation.Status.PENDING)


def site_pool(site_id: int) -> str:
    return f"site:{site_id}"


def team_pool(team_id: int) -> str:
    return f"team:{team_id}"


def pool_of(conversation: Conversation) -> str:
    """Whose line a conversation is in: its team's when it has one, else its site's."""
    if conversation.team_id is not None:
        return team_pool(conversation.team_id)
    return site_pool(conversation.site_id)


def _pool_key(pool: str) -> tuple[str, int]:
    kind, _, key = pool.partition(":")
    return kind, int(key)


def agent_pools(agent: Agent) -> set[str]:
    sites = {site_pool(pk) for pk in agent.sites.values_list("id", flat=True)}
    return sites | {team_pool(pk) for pk in agent.teams.values_list("id", flat=True)}


def _in_pool(agent: Agent, pool: str) -> bool:
    kind, key = _pool_key(pool)
    members = agent.teams if kind == "team" else agent.sites
    return members.filter(pk=key).exists()


def _config() -> dict[str, Any]:
    return settings.GOFLY["routing"]


# ---------------------------------------------------------------------------------------------
# Seats


def sync_seats(agent: Agent) -> None:
    """Rewrite the agent's seats from its row. The caller holds the agent's row lock."""
    pools = agent_pools(agent)
    values = {
        "available": agent.status == AgentStatus.ONLINE
        and agent.active_chats < agent.max_concurrent_chats,
        "free": agent.max_concurrent_chats - agent.active_chats,
        "idle_since": agent.last_assigned_at or agent.status_changed_at,
    }
    seats = AgentSeat.objects.filter(agent=agent)
    seats.exclude(pool__in=pools).delete()
    if seats.update(**values) < len(pools):
        have = set(seats.values_list("pool", flat=True))
        AgentSeat.objects.bulk_create(
            [AgentSeat(agent=agent, pool=pool, **values) for pool in pools - have]
        )


def seat_pick(pool: str, tried: set[int] | frozenset[int] = frozenset()) -> QuerySet:
    """The pool's available seats, best first, as agent ids: read the first one.

    Served by the `seat_pick` index on every backend, so the first row costs one seek whatever
    the number of seats; tests/test_routing.py holds the plan to that.
    """
    return (
        AgentSeat.objects.filter(pool=pool, available=True)
        .exclude(agent_id__in=tried)
        .order_by("-free", "idle_since")
        .values_list("agent_id", flat=True)
    )


def refresh_agent(agent_id: int) -> list[Recorded]:
    """After an admin changed the agent's sites or capacity: rewrite seats, fill the line."""
    with transaction.atomic():
        agent = Agent.objects.select_for_update().get(pk=agent_id)
        sync_seats(agent)
        pools = sorted(agent_pools(agent))
    return [r for pool in pools for r in fill_from_queue(pool)]


# ---------------------------------------------------------------------------------------------
# Taking and releasing slots (the caller holds the conversation's row lock)


def _try_agent(agent_id: int, conversation: Conversation) -> bool:
    agent = Agent.objects.select_for_update().get(pk=agent_id)
    if agent.status != AgentStatus.ONLINE or agent.active_chats >= agent.max_concurrent_chats:
        sync_seats(agent)  # the seat said otherwise: it was stale, repair it
        return False
    if not _in_pool(agent, pool_of(conversation)):
        return False
    now = timezone.now()
    agent.active_chats += 1
    agent.last_assigned_at = now
    agent.save(update_fields=["active_chats", "last_assigned_at"])
    sync_seats(agent)
    conversation.assignee_id = agent.user_id
    conversation.waiting_since = None
    return True


def take(conversation: Conversation, user: Any) -> list[Send]:
    """An agent answers an unassigned conversation itself: it becomes theirs.

    It counts against the agent's capacity even past the maximum, because the agent chose it;
    routing simply gives that agent nothing more until a slot frees. Returns the new positions
    for the rest of the line when the conversation was waiting in it. The caller saves
    `assignee`, `waiting_since` and `bot_active`.
    """
    was_waiting = conversation.waiting_since is not None
    agent = Agent.objects.select_for_update().filter(user_id=user.pk).first()
    if agent is not None:
        agent.active_chats += 1
        agent.last_assigned_at = timezone.now()
        agent.save(update_fields=["active_chats", "last_assigned_at"])
        sync_seats(agent)
    conversation.assignee = user
    conversation.waiting_since = None
    conversation.bot_active = False  # a person has joined: the bot stops answering
    if not was_waiting:
        return []
    # Saved by the caller; until then the line query still sees this conversation waiting.
    return [
        _queue_send(conversation.pk, conversation.visitor_id, None),
        *queue_sends(pool_of(conversation), leaving=conversation.pk),
    ]


def release(conversation: Conversation) -> None:
    """The conversation stops counting against its assignee's capacity."""
    if conversation.assignee_id is None:
        return
    agent = Agent.objects.select_for_update().filter(user_id=conversation.assignee_id).first()
    if agent is None:
        return  # a superuser without an agent profile has no capacity to give back
    agent.active_chats = max(0, agent.active_chats - 1)
    agent.save(update_fields=["active_chats"])
    sync_seats(agent)


def _previous_agent(conversation: Conversation) -> int | None:
    """The agent the visitor talked to last: this conversation's, else an earlier one's."""
    user_id = conversation.assignee_id
    if user_id is None:
        user_id = (
            Conversation.objects.filter(visitor_id=conversation.visitor_id, assignee__isnull=False)
            .exclude(pk=conversation.pk)
            .order_by("-id")
            .values_list("assignee_id", flat=True)
            .first()
        )
    if user_id is None:
        return None
    return Agent.objects.filter(user_id=user_id).values_list("pk", flat=True).first()


def assign(conversation: Conversation) -> bool:
    """Give a conversation that needs a human to an agent, or put it in line.

    The caller holds the conversation's row lock, has cleared any assignee whose slot was
    already released, and saves `assignee` and `waiting_since` with the conversation.
    """
    previous = _previous_agent(conversation)
    conversation.assignee_id = None
    if previous is not None and _try_agent(previous, conversation):
        return True
    pool = pool_of(conversation)
    tried: set[int] = set()
    for _ in range(MAX_TRIES):
        agent_id = seat_pick(pool, tried).first()
        if agent_id is None:
            break
        if _try_agent(agent_id, conversation):
            return True
        tried.add(agent_id)
    if conversation.waiting_since is None:
        conversation.waiting_since = timezone.now()
    return False


def route(conversation: Conversation) -> list[Send]:
    """Assign a conversation that has just come to need a human; return the queue notices.

    Used by the message path inside its transaction, with the conversation locked; saves the
    routing fields.
    """
    assigned = assign(conversation)
    conversation.save(update_fields=["assignee", "waiting_since"])
    logger.info(
        "routing.decided",
        extra={"conversation": conversation.pk, "assignee": conversation.assignee_id},
    )
    if assigned:
        return [_queue_send(conversation.pk, conversation.visitor_id, None)]
    # Joining the line moves nobody else's place, so only the newcomer hears its position.
    # (Telling the whole line, as this did first, sent up to QUEUE_NOTIFY_LIMIT frames per
    # waiting visitor's message: 17,395 for 3,540 messages in docs/performance.md.)
    position = queue_position(conversation)
    return [_queue_send(conversation.pk, conversation.visitor_id, position)]


# ---------------------------------------------------------------------------------------------
# The waiting line


def _queue_send(conversation_id: int, visitor_id: int, position: int | None) -> Send:
    frame = {"type": "queue", "conversation": conversation_id, "position": position}
    return (visitor_group(visitor_id), {"type": "chat.queue", "frame": frame})


def waiting(pool: str):
    """The pool's line, head first. A site's line holds the conversations without a team."""
    kind, key = _pool_key(pool)
    where = {"team_id": key} if kind == "team" else {"site_id": key, "team__isnull": True}
    return Conversation.objects.filter(
        waiting_since__isnull=False, assignee__isnull=True, **where
    ).order_by("waiting_since", "id")


def queue_sends(pool: str, leaving: int | None = None) -> list[Send]:
    """Every waiting visitor's position, 1 for the head of the line (without `leaving`)."""
    line = waiting(pool).exclude(pk=leaving).values_list("pk", "visitor_id")
    line = line[:QUEUE_NOTIFY_LIMIT]
    return [
        _queue_send(pk, visitor_id, position)
        for position, (pk, visitor_id) in enumerate(line, start=1)
    ]


def queue_position(conversation: Conversation) -> int | None:
    if conversation.waiting_since is None or conversation.assignee_id is not None:
        return None
    ahead = waiting(pool_of(conversation)).filter(waiting_since__lt=conversation.waiting_since)
    return ahead.count() + 1


def fill_from_queue(pool: str) -> list[Recorded]:
    """Assign the head of the pool's line while agents have room; one transaction each."""
    from chat.actions import conversation_summary

    recorded = []
    for _ in range(FILL_LIMIT):
        with transaction.atomic():
            heads = waiting(pool).select_related("visitor", "assignee__agent")
            if connection.features.has_select_for_update_skip_locked:
                # A head being assigned by another process is skipped, not waited for.
                heads = heads.select_for_update(of=("self",), skip_locked=True)
            else:
                heads = heads.select_for_update()
            head = heads.first()
            if head is None or not assign(head):
                break
            head.save(update_fields=["assignee", "waiting_since"])
            sends = outbox.conversation_sends(
                head.site_id, head.visitor_id, conversation_summary(head)
            )
            sends += [_queue_send(head.pk, head.visitor_id, None), *queue_sends(pool)]
            recorded.append(outbox.record_sends(sends))
        logger.info("routing.dequeued", extra={"conversation": head.pk, "pool": pool})
    return recorded


def requeue_agent(agent_id: int) -> list[Recorded]:
    """Put an offline agent's open conversations back in line, ahead of newer arrivals."""
    from chat.actions import conversation_summary

    user_id = Agent.objects.filter(pk=agent_id).values_list("user_id", flat=True).get()
    ids = list(
        Conversation.objects.filter(assignee_id=user_id, status__in=HOLDS_SLOT).values_list(
            "pk", flat=True
        )
    )
    recorded = []
    for conversation_id in ids:
        with transaction.atomic():
            conversation = (
                Conversation.objects.select_for_update(of=("self",))
                .select_related("visitor")
                .get(pk=conversation_id)
            )
            agent = Agent.objects.get(pk=agent_id)
            if conversation.assignee_id != user_id or agent.status != AgentStatus.OFFLINE:
                continue  # answered elsewhere, or the agent came back meanwhile
            release(conversation)
            conversation.assignee_id = None
            conversation.waiting_since = conversation.created_at
            conversation.save(update_fields=["assignee", "waiting_since"])
            sends = outbox.conversation_sends(
                conversation.site_id, conversation.visitor_id, conversation_summary(conversation)
            )
            recorded.append(outbox.record_sends(sends))
    return recorded


def after_status_change(agent_id: int, status: str) -> list[Recorded]:
    """What an agent's new status means for the line; runs after the status change committed."""
    recorded: list[Recorded] = []
    if status == AgentStatus.OFFLINE and _config()["requeue_on_offline"]:
        recorded += requeue_agent(agent_id)
    elif status != AgentStatus.ONLINE:
        return recorded
    for pool in sorted(agent_pools(Agent.objects.get(pk=agent_id))):
        recorded += fill_from_queue(pool)
    return recorded
