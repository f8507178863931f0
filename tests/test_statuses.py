"""Conversation statuses beyond open/resolved: snoozing, and the visitor's rating."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from agents.models import Agent
from agents.presence import socket_opened
from chat import actions
from chat.errors import GoflyError
from chat.models import Conversation
from tests.conftest import new_visitor_session
from tests.test_consumers import open_agent, open_visitor, receive_until, send_message


def online(agent: Agent) -> None:
    socket_opened(agent.pk, f"tab-{agent.pk}")


def visit(site) -> Conversation:
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c1", body="hi")
    return Conversation.objects.get(pk=posted.conversation_id)


def load(agent: Agent) -> int:
    agent.refresh_from_db()
    return agent.active_chats


def test_snoozing_frees_the_slot_and_the_time_reopens_it(site, agent_alice):
    online(agent_alice)
    conversation = visit(site)
    until = (timezone.now() + timedelta(hours=2)).isoformat()

    actions.set_conversation_status(agent_alice.user, conversation.pk, "snoozed", until)
    conversation.refresh_from_db()
    assert conversation.status == "snoozed" and conversation.snoozed_until is not None
    assert load(agent_alice) == 0

    assert actions.wake_snoozed() == []  # not yet
    woken = actions.wake_snoozed(now=timezone.now() + timedelta(hours=3))
    assert len(woken) == 1
    conversation.refresh_from_db()
    assert (conversation.status, conversation.snoozed_until) == ("open", None)
    assert conversation.assignee == agent_alice.user  # back to the agent who had it
    assert load(agent_alice) == 1


def test_a_visitor_message_wakes_a_snoozed_conversation(site, agent_alice):
    online(agent_alice)
    conversation = visit(site)
    until = (timezone.now() + timedelta(days=1)).isoformat()
    actions.set_conversation_status(agent_alice.user, conversation.pk, "snoozed", until)

    actions.post_visitor_message(conversation.visitor_id, client_id="c2", body="any news?")

    conversation.refresh_from_db()
    assert (conversation.status, conversation.snoozed_until) == ("open", None)
    assert load(agent_alice) == 1
    assert actions.wake_snoozed(now=timezone.now() + timedelta(days=2)) == []


@pytest.mark.parametrize(
    ("until", "detail"),
    [
        (None, "Snoozing needs 'until': a time with its offset, e.g. 2026-12-04T09:00+08:00."),
        (
            "tomorrow",
            "Snoozing needs 'until': a time with its offset, e.g. 2026-12-04T09:00+08:00.",
        ),
        (
            "2030-01-01T09:00",
            "Snoozing needs 'until': a time with its offset, e.g. 2026-12-04T09:00+08:00.",
        ),
        ("2001-01-01T09:00+00:00", "Snooze until a time in the future."),
    ],
)
def test_bad_snoozes_are_refused(site, agent_alice, until, detail):
    online(agent_alice)
    conversation = visit(site)
    with pytest.raises(GoflyError) as error:
        actions.set_conversation_status(agent_alice.user, conversation.pk, "snoozed", until)
    assert error.value.as_dict() == {"code": "invalid", "detail": detail}
    conversation.refresh_from_db()
    assert conversation.status == "open"


def test_unknown_status_names_the_four(site, agent_alice):
    online(agent_alice)
    conversation = visit(site)
    with pytest.raises(GoflyError) as error:
        actions.set_conversation_status(agent_alice.user, conversation.pk, "closed")
    assert (
        str(error.value.detail) == "The field 'status' must be open, pending, snoozed or resolved."
    )


@pytest.mark.parametrize(
    ("score", "comment", "detail"),
    [
        (0, "", "The rating must be a whole number from 1 to 5."),
        (6, "", "The rating must be a whole number from 1 to 5."),
        ("5", "", "The rating must be a whole number from 1 to 5."),
        (True, "", "The rating must be a whole number from 1 to 5."),
        (4, "x" * 2001, "The comment must be text of at most 2000 characters."),
    ],
)
def test_bad_ratings_are_refused(site, agent_alice, score, comment, detail):
    online(agent_alice)
    conversation = visit(site)
    actions.set_conversation_status(agent_alice.user, conversation.pk, "resolved")
    with pytest.raises(GoflyError) as error:
        actions.rate_conversation(conversation.visitor_id, conversation.pk, score, comment)
    assert error.value.as_dict() == {"code": "invalid", "detail": detail}
    conversation.refresh_from_db()
    assert conversation.rating is None


def test_only_a_resolved_conversation_is_rated(site):
    conversation = visit(site)
    with pytest.raises(GoflyError) as error:
        actions.rate_conversation(conversation.visitor_id, conversation.pk, 5)
    assert str(error.value.detail) == "You can rate a conversation once it is resolved."


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_the_visitor_rates_on_resolve_and_the_agent_sees_it(site, agent_alice):
    alice, _ = await open_agent(agent_alice.user)
    visitor, _ = await open_visitor(
        await database_sync_to_async(lambda: new_visitor_session(site).token)()
    )
    ack = await send_message(visitor, "v1", "thanks for the help")
    await receive_until(alice, "message", seq=1)
    await alice.send_json_to(
        {"type": "status", "conversation": ack["conversation"], "status": "resolved"}
    )
    # The first notice (opened and assigned) may come first; then the resolve.
    resolved = {"id": ack["conversation"], "status": "resolved"}
    await receive_until(visitor, "conversation", conversation=resolved)

    await visitor.send_json_to(
        {"type": "rating", "conversation": ack["conversation"], "score": 5, "comment": "快！"}
    )

    assert await receive_until(visitor, "rated") == {
        "type": "rated",
        "conversation": ack["conversation"],
        "score": 5,
    }
    seen = await receive_until(alice, "conversation")
    while seen["conversation"]["rating"] is None:
        seen = await receive_until(alice, "conversation")
    assert seen["conversation"]["rating"] == 5
    stored = await database_sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
    assert (stored.rating, stored.rating_comment) == (5, "快！")
    for socket in (alice, visitor):
        await socket.disconnect()
