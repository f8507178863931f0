"""Teams, transfers and private notes."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from agents.models import Agent, Team
from agents.presence import socket_opened
from chat import actions, assignment, teamwork
from chat.errors import GoflyError
from chat.models import Conversation, Note
from tests.conftest import make_agent, new_visitor_session
from tests.test_consumers import frame_types, open_agent, open_visitor, receive_until, send_message


def online(agent: Agent, max_chats: int = 3) -> None:
    Agent.objects.filter(pk=agent.pk).update(max_concurrent_chats=max_chats)
    socket_opened(agent.pk, f"tab-{agent.pk}")


def visit(site, name: str = "v") -> Conversation:
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id=name, body="help")
    return Conversation.objects.select_related("assignee").get(pk=posted.conversation_id)


def loads() -> dict[str, int]:
    return dict(Agent.objects.values_list("display_name", "active_chats"))


@pytest.fixture
def billing(site) -> Team:
    return Team.objects.create(name="Billing")


def test_transfer_to_an_agent_moves_the_slot_and_leaves_a_note(site, agent_alice, agent_bob):
    online(agent_alice)
    conversation = visit(site)
    assert conversation.assignee == agent_alice.user

    teamwork.transfer(agent_alice.user, conversation.pk, to_agent=agent_bob.user_id, note="refund")

    conversation.refresh_from_db()
    assert conversation.assignee == agent_bob.user
    assert loads() == {"Alice": 0, "Bob": 1}
    assert list(Note.objects.values_list("author__username", "body")) == [
        ("alice", "Transferred to Bob. refund")
    ]


def test_transfer_to_a_team_routes_within_the_team(site, agent_alice, agent_bob, billing):
    carol = make_agent("carol", site)
    carol.teams.add(billing)
    for agent in (agent_alice, agent_bob, carol):
        online(agent)
    conversation = visit(site)
    assert conversation.assignee == agent_alice.user

    teamwork.transfer(agent_alice.user, conversation.pk, to_team=billing.pk)

    conversation.refresh_from_db()
    assert (conversation.team, conversation.assignee) == (billing, carol.user)
    assert loads() == {"Alice": 0, "Bob": 0, "Carol": 1}


def test_a_team_with_nobody_free_keeps_its_own_line(site, agent_alice, billing):
    online(agent_alice)
    conversation = visit(site)
    teamwork.transfer(agent_alice.user, conversation.pk, to_team=billing.pk)
    conversation.refresh_from_db()
    assert conversation.assignee is None
    assert assignment.queue_position(conversation) == 1
    # A member coming online takes it from the team's line.
    dave = make_agent("dave", site)
    dave.teams.add(billing)
    online(dave)
    conversation.refresh_from_db()
    assert conversation.assignee == dave.user


def test_a_site_that_routes_to_a_team_skips_other_agents(site, agent_alice, agent_bob, billing):
    agent_bob.teams.add(billing)
    site.team = billing
    site.save()
    online(agent_alice, max_chats=10)
    online(agent_bob, max_chats=1)
    assert visit(site, "a").assignee == agent_bob.user
    second = visit(site, "b")
    assert second.assignee is None  # Alice is free but not in Billing
    assert assignment.queue_position(second) == 1


@pytest.mark.parametrize(
    ("target", "detail"),
    [
        ({}, "Transfer to either an agent or a team, not both or neither."),
        (
            {"to_agent": 1, "to_team": 1},
            "Transfer to either an agent or a team, not both or neither.",
        ),
        ({"to_agent": "bob"}, "Name the agent or team to transfer to by its id (a number)."),
        ({"to_team": 999}, "That team does not exist."),
    ],
)
def test_bad_transfers_are_refused_and_change_nothing(site, agent_alice, target, detail):
    online(agent_alice)
    conversation = visit(site)
    with pytest.raises(GoflyError) as error:
        teamwork.transfer(agent_alice.user, conversation.pk, **target)
    assert error.value.as_dict() == {"code": "invalid", "detail": detail}
    conversation.refresh_from_db()
    assert conversation.assignee == agent_alice.user and not Note.objects.exists()


def test_transfer_to_an_agent_of_another_site_is_refused(site, other_site, agent_alice):
    stranger = make_agent("erin", other_site)
    online(agent_alice)
    conversation = visit(site)
    with pytest.raises(GoflyError) as error:
        teamwork.transfer(agent_alice.user, conversation.pk, to_agent=stranger.user_id)
    assert str(error.value.detail) == "That agent does not work on this conversation's site."


def test_only_the_assignee_transfers(site, agent_alice, agent_bob):
    online(agent_alice)
    conversation = visit(site)
    with pytest.raises(GoflyError) as error:
        teamwork.transfer(agent_bob.user, conversation.pk, to_agent=agent_bob.user_id)
    assert error.value.code == "not_found"


def test_notes_refuse_empty_and_overlong_text(site, agent_alice):
    online(agent_alice)
    conversation = visit(site)
    for body, detail in [
        ("  ", "A note needs some text."),
        ("x" * 4001, "A note is at most 4000 characters."),
    ]:
        with pytest.raises(GoflyError) as error:
            teamwork.add_note(agent_alice.user, conversation.pk, body)
        assert error.value.as_dict() == {"code": "invalid", "detail": detail}
    assert not Note.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_a_transfer_moves_the_conversation_between_dashboards_live(
    site, agent_alice, agent_bob
):
    alice, _ = await open_agent(agent_alice.user)
    visitor, _ = await open_visitor(
        await database_sync_to_async(lambda: new_visitor_session(site).token)()
    )
    ack = await send_message(visitor, "v1", "my parcel is late")
    await receive_until(alice, "message", seq=1)
    bob, _ = await open_agent(agent_bob.user)

    await alice.send_json_to(
        {
            "type": "transfer",
            "conversation": ack["conversation"],
            "agent": agent_bob.user_id,
            "note": "VIP customer",
        }
    )

    assert await receive_until(alice, "conversation_removed") == {
        "type": "conversation_removed",
        "conversation": ack["conversation"],
    }
    moved = await receive_until(bob, "conversation")
    assert moved["conversation"]["assignee"]["name"] == "Bob"
    note = await receive_until(bob, "note")
    assert note["body"] == "Transferred to Bob. VIP customer"
    await send_message(visitor, "v2", "hello?")
    assert (await receive_until(bob, "message", seq=2))["body"] == "hello?"

    # A private note reaches agents only: the visitor's socket never sees one.
    await bob.send_json_to(
        {"type": "note", "conversation": ack["conversation"], "body": "called the courier"}
    )
    assert (await receive_until(bob, "note"))["body"] == "called the courier"
    kinds = await frame_types(visitor, seconds=0.5)
    assert "note" not in kinds
    await visitor.send_json_to({"type": "resume", "after_seq": 0})
    history = []
    while True:
        frame = await visitor.receive_json_from(timeout=5)
        if frame["type"] == "resumed":
            break
        history.append(frame)
    assert all(f["type"] == "message" for f in history)
    assert all("courier" not in f["body"] and "VIP" not in f["body"] for f in history)
    for socket in (alice, bob, visitor):
        await socket.disconnect()


def test_labels_are_set_created_per_site_and_shown_in_the_summary(site, agent_alice):
    online(agent_alice)
    conversation = visit(site)

    teamwork.set_labels(agent_alice.user, conversation.pk, ["VIP", "退款", " vip "])

    conversation.refresh_from_db()
    assert sorted(conversation.labels.values_list("name", flat=True)) == ["vip", "退款"]
    assert actions.conversation_summary(conversation)["labels"] == ["vip", "退款"]
    teamwork.set_labels(agent_alice.user, conversation.pk, ["退款"])
    assert list(conversation.labels.values_list("name", flat=True)) == ["退款"]
    assert site.labels.count() == 2  # "vip" stays available for other conversations


@pytest.mark.parametrize(
    ("labels", "detail"),
    [
        ("vip", "The field 'labels' must be a list of label names."),
        ([1], "The field 'labels' must be a list of label names."),
        (["x" * 33], "At most 20 labels of at most 32 characters each."),
        ([f"l{n}" for n in range(21)], "At most 20 labels of at most 32 characters each."),
    ],
)
def test_bad_labels_are_refused(site, agent_alice, labels, detail):
    online(agent_alice)
    conversation = visit(site)
    with pytest.raises(GoflyError) as error:
        teamwork.set_labels(agent_alice.user, conversation.pk, labels)
    assert error.value.as_dict() == {"code": "invalid", "detail": detail}
    assert not conversation.labels.exists()


def test_an_agent_takes_a_waiting_conversation_by_hand(site, agent_alice, agent_bob):
    online(agent_alice, max_chats=1)
    first, second, third = visit(site, "a"), visit(site, "b"), visit(site, "c")
    assert assignment.queue_position(third) == 2

    recorded = teamwork.take(agent_bob.user, third.pk)

    third.refresh_from_db()
    assert third.assignee == agent_bob.user and third.waiting_since is None
    assert assignment.queue_position(second) == 1
    positions = {
        e["frame"]["conversation"]: e["frame"]["position"]
        for _, e in recorded.sends
        if e["type"] == "chat.queue"
    }
    assert positions == {third.pk: None, second.pk: 1}
    with pytest.raises(GoflyError) as error:
        teamwork.take(agent_alice.user, first.pk)
    assert str(error.value.detail) == "Someone already has this conversation."
