"""Routing: one agent per conversation, fairly, within capacity; a first-come line otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Agent, AgentSeat, AgentStatus, StatusTrigger
from agents.presence import socket_opened
from agents.status import change_and_route, choose
from chat import actions, assignment
from chat.models import Conversation, OutboxEvent
from tests.conftest import make_agent, new_visitor_session


def online(agent: Agent, *, max_chats: int = 2) -> Agent:
    Agent.objects.filter(pk=agent.pk).update(max_concurrent_chats=max_chats)
    socket_opened(agent.pk, f"tab-{agent.pk}")
    agent.refresh_from_db()
    return agent


def visit(site, n: int) -> Conversation:
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id=f"c{n}", body=f"question {n}")
    return Conversation.objects.get(pk=posted.conversation_id)


def owner(conversation: Conversation) -> str | None:
    conversation.refresh_from_db()
    assignee = conversation.assignee
    return assignee.agent.display_name if assignee else None


def loads() -> dict[str, int]:
    return dict(Agent.objects.values_list("display_name", "active_chats"))


def test_most_free_capacity_wins_and_ties_go_to_the_longest_idle(site, agent_alice, agent_bob):
    online(agent_alice, max_chats=3)
    online(agent_bob, max_chats=3)

    owners = [owner(visit(site, n)) for n in range(6)]

    # Alice came online first, so she has been idle longest; then they alternate.
    assert owners == ["Alice", "Bob", "Alice", "Bob", "Alice", "Bob"]
    assert loads() == {"Alice": 3, "Bob": 3}


def test_more_room_beats_idle_time(site, agent_alice, agent_bob):
    online(agent_alice, max_chats=2)
    online(agent_bob, max_chats=5)
    assert [owner(visit(site, n)) for n in range(4)] == ["Bob", "Bob", "Bob", "Alice"]


def test_away_busy_offline_and_full_agents_get_nothing(site, agent_alice, agent_bob, other_site):
    carol = make_agent("carol", site)
    dave = make_agent("dave", other_site)  # online, but not on this site
    online(agent_alice, max_chats=1)
    online(agent_bob)
    online(dave)
    choose(agent_bob.pk, AgentStatus.BUSY, agent_bob.user)
    assert carol.status == AgentStatus.OFFLINE

    first, second = visit(site, 1), visit(site, 2)

    assert owner(first) == "Alice"
    assert owner(second) is None  # Alice is full, Bob busy, Carol offline
    choose(agent_bob.pk, AgentStatus.AWAY, agent_bob.user)
    assert owner(visit(site, 3)) is None
    assert assignment.queue_position(second) == 1


def test_the_visitor_s_previous_agent_comes_first(site, agent_alice, agent_bob):
    online(agent_alice, max_chats=5)
    online(agent_bob, max_chats=5)
    conversation = visit(site, 1)
    assert owner(conversation) == "Alice"
    actions.set_conversation_status(agent_alice.user, conversation.pk, "resolved")
    visit(site, 2)  # Bob is now the longest idle with the most room

    # The same visitor writes again: the resolved conversation reopens and goes back to Alice.
    actions.post_visitor_message(conversation.visitor_id, client_id="again", body="me again")
    assert owner(conversation) == "Alice"
    assert loads() == {"Alice": 1, "Bob": 1}


def test_joining_the_line_tells_only_the_newcomer_its_position(site, agent_alice):
    online(agent_alice, max_chats=1)
    visit(site, 0)
    line = [visit(site, n) for n in range(1, 3)]
    visitor = new_visitor_session(site).visitor

    posted = actions.post_visitor_message(visitor.pk, client_id="c3", body="question 3")

    queue = [e["frame"] for _, e in posted.recorded.sends if e["type"] == "chat.queue"]
    assert queue == [{"type": "queue", "conversation": posted.conversation_id, "position": 3}]
    # Those already waiting keep their places, so they were told nothing new.
    assert [assignment.queue_position(c) for c in line] == [1, 2]


def test_the_line_is_first_come_first_served_and_moves_when_a_slot_frees(site, agent_alice):
    online(agent_alice, max_chats=1)
    served = visit(site, 0)
    line = [visit(site, n) for n in range(1, 4)]
    assert [assignment.queue_position(c) for c in line] == [1, 2, 3]

    changed = actions.set_conversation_status(agent_alice.user, served.pk, "resolved")
    assert changed.freed_pool == f"site:{site.pk}"
    recorded = assignment.fill_from_queue(assignment.site_pool(site.pk))

    assert [owner(c) for c in line] == ["Alice", None, None]
    assert [assignment.queue_position(c) for c in line] == [None, 1, 2]
    assert loads() == {"Alice": 1}
    # The notices: the head's new assignee, its line position cleared, the rest renumbered.
    sends = recorded[0].sends
    queue = {
        e["frame"]["conversation"]: e["frame"]["position"]
        for _, e in sends
        if e["type"] == "chat.queue"
    }
    assert queue == {line[0].pk: None, line[1].pk: 1, line[2].pk: 2}


def test_an_agent_coming_online_takes_the_head_of_the_line(site, agent_alice, agent_bob):
    line = [visit(site, n) for n in range(3)]
    online(agent_alice, max_chats=2)

    assert [owner(c) for c in line] == ["Alice", "Alice", None]
    online(agent_bob, max_chats=2)
    assert owner(line[2]) == "Bob"


def test_an_agent_going_offline_puts_their_conversations_back_at_the_head(
    site, agent_alice, agent_bob
):
    online(agent_alice, max_chats=2)
    mine = [visit(site, n) for n in range(2)]
    newcomer = visit(site, 9)
    assert assignment.queue_position(newcomer) == 1

    change_and_route(agent_alice.pk, AgentStatus.OFFLINE, StatusTrigger.DISCONNECTED)

    assert [owner(c) for c in mine] == [None, None]
    assert [assignment.queue_position(c) for c in [*mine, newcomer]] == [1, 2, 3]
    assert loads()["Alice"] == 0
    online(agent_bob, max_chats=2)
    assert [owner(c) for c in [*mine, newcomer]] == ["Bob", "Bob", None]


def test_with_requeue_off_an_offline_agent_keeps_their_conversations(site, agent_alice, settings):
    settings.GOFLY = {**settings.GOFLY, "routing": {"requeue_on_offline": False}}
    online(agent_alice)
    conversation = visit(site, 1)
    change_and_route(agent_alice.pk, AgentStatus.OFFLINE, StatusTrigger.DISCONNECTED)
    assert owner(conversation) == "Alice"


def test_a_stale_seat_is_repaired_not_trusted(site, agent_alice, agent_bob):
    online(agent_alice)
    online(agent_bob)
    # A seat claims Alice has room while her row says she is full (as after a crash between
    # two writes): routing checks the row under its lock and moves on to Bob.
    Agent.objects.filter(pk=agent_alice.pk).update(active_chats=2)
    AgentSeat.objects.filter(agent=agent_alice).update(free=9, available=True)

    assert owner(visit(site, 1)) == "Bob"
    assert AgentSeat.objects.get(agent=agent_alice).available is False


@pytest.mark.parametrize("tried", [set(), {0}])
def test_seat_pick_reads_the_index_in_order_without_sorting(site, agent_alice, agent_bob, tried):
    # Given: two agents online, so their seats exist.
    online(agent_alice)
    online(agent_bob)
    if connection.vendor == "postgresql":
        # A two-row table is cheaper to scan and sort; ask for the plan a big pool gets.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")

    # When: the database plans the query routing reads its agent from.
    plan = assignment.seat_pick(assignment.site_pool(site.pk), tried)[:1].explain()

    # Then: the first row comes straight from the index, with no sort of the pool's seats.
    assert "seat_pick" in plan
    assert "TEMP B-TREE" not in plan.upper()  # SQLite's sort
    assert "Sort" not in plan  # PostgreSQL's
    assert owner(visit(site, 1)) == "Alice"


def test_routing_notices_go_out_with_the_message(site, agent_alice):
    online(agent_alice)
    OutboxEvent.objects.all().delete()
    conversation = visit(site, 1)
    row = OutboxEvent.objects.get()
    kinds = [(group.split(".")[0], event["type"]) for group, event in row.sends]
    assert ("site", "chat.conversation") in kinds
    summary = next(e["summary"] for _, e in row.sends if e["type"] == "chat.conversation")
    assert summary["assignee"]["name"] == "Alice"
    assert owner(conversation) == "Alice"


@pytest.mark.parametrize("status", ["resolved", "pending"])
def test_capacity_follows_status_changes(site, agent_alice, status):
    online(agent_alice)
    conversation = visit(site, 1)
    actions.set_conversation_status(agent_alice.user, conversation.pk, status)
    assert loads()["Alice"] == (0 if status == "resolved" else 1)
    actions.set_conversation_status(agent_alice.user, conversation.pk, "open")
    assert loads()["Alice"] == 1
    assert owner(conversation) == "Alice"


def test_an_agent_with_no_dashboard_is_not_routed_to(site, agent_alice):
    online(agent_alice)
    Agent.objects.filter(pk=agent_alice.pk).update(
        presence_seen_at=timezone.now() - timedelta(minutes=5)
    )
    from agents.presence import sweep

    sweep()
    assert owner(visit(site, 1)) is None
