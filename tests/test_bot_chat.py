"""The intent bot in the message path: answers over the real sockets and channel layers, once
in effect, silent once a person has the conversation, and handing over into routing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.utils import timezone

from agents.models import AgentStatus
from chat import actions, delivery
from chat.models import Conversation, Message, Note, OutboxEvent
from nlp import runtime, service, training
from nlp.models import BotSettings, BotState, ModelVersion
from tests.conftest import new_visitor_session
from tests.processes import ROOT
from tests.test_consumers import open_agent, open_visitor, receive_until, send_message
from tests.test_nlp import add_tiny_intents

REPLY_SHIPPING = "About shipping."


def give_bot(site) -> ModelVersion:
    """The tiny tree of test_nlp with replies that name their intent, trained and active."""
    add_tiny_intents(site)
    BotSettings.objects.create(site=site, threshold=0.5, max_misunderstood=2)
    runtime.forget()
    return training.train_site(site.pk)


def bot_replies(conversation_id: int) -> list[str]:
    return list(
        Message.objects.filter(conversation_id=conversation_id, sender_kind="bot")
        .order_by("seq")
        .values_list("body", flat=True)
    )


def visitor_says(visitor_id: int, text: str) -> actions.PostedMessage:
    return actions.post_visitor_message(visitor_id, client_id=f"c-{text}", body=text)


# ---------------------------------------------------------------------------------------------
# Over the sockets


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_bot_answers_over_the_socket_after_the_ack_and_agents_see_both(site, agent_alice):
    await database_sync_to_async(give_bot)(site)
    agent, _ = await open_agent(agent_alice.user)
    token = await database_sync_to_async(lambda: new_visitor_session(site).token)()
    visitor, _ = await open_visitor(token)

    ack = await send_message(visitor, "v-1", "track my shipment")
    reply = await receive_until(visitor, "message", seq=2)
    assert reply["sender"] == {"kind": "bot", "name": "Bot"}
    assert reply["body"] == REPLY_SHIPPING
    assert reply["client_id"] == f"bot:{ack['id']}"
    # Agents see the visitor's message and the bot's answer, live.
    assert (await receive_until(agent, "message", seq=1))["body"] == "track my shipment"
    assert (await receive_until(agent, "message", seq=2))["body"] == REPLY_SHIPPING

    conversation = await database_sync_to_async(Conversation.objects.get)(pk=ack["conversation"])
    # The bot has it: nobody was assigned and it waits in no line.
    assert conversation.bot_active and conversation.assignee_id is None
    assert conversation.waiting_since is None
    await visitor.disconnect()
    await agent.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_asking_for_a_human_hands_over_to_the_online_agent_with_a_note(site, agent_alice):
    await database_sync_to_async(give_bot)(site)
    agent, _ = await open_agent(agent_alice.user)  # online from its socket
    token = await database_sync_to_async(lambda: new_visitor_session(site).token)()
    visitor, _ = await open_visitor(token)

    await send_message(visitor, "v-1", "refund status please")
    await receive_until(visitor, "message", seq=2)
    ack = await send_message(visitor, "v-2", "I want to talk to a human")
    handed = await receive_until(visitor, "message", seq=4)
    assert handed["body"] == "I am passing you to a colleague, who will answer here shortly."

    # The agent gets the conversation, now theirs, and the bot's private note.
    seen: dict[str, dict] = {}
    while not {"note", "conversation"} <= set(seen):
        frame = await agent.receive_json_from(timeout=5)
        if frame["type"] == "conversation" and frame["conversation"]["bot_active"]:
            continue  # an earlier summary, from while the bot had it
        seen.setdefault(frame["type"], frame)
    note, summary = seen["note"], seen["conversation"]["conversation"]
    assert note["author"] == {"id": None, "name": "Bot"}
    assert note["body"].startswith("Bot handed over: the visitor asked for a person.")
    assert "Topics so far: refund.status." in note["body"]
    assert summary["assignee"]["id"] == agent_alice.user.pk

    # From now on the person answers: a new visitor message gets no bot reply.
    await send_message(visitor, "v-3", "hello?")
    await receive_until(visitor, "message", seq=5)  # its own message, from its group
    assert await visitor.receive_nothing(timeout=0.5)
    conversation_id = ack["conversation"]
    assert await database_sync_to_async(bot_replies)(conversation_id) == [
        "About refund.status.",
        "I am passing you to a colleague, who will answer here shortly.",
    ]
    state = await database_sync_to_async(BotState.objects.get)(conversation_id=conversation_id)
    assert state.handoff_reason == "asked" and len(state.handoff_guesses) == 3
    await visitor.disconnect()
    await agent.disconnect()


# ---------------------------------------------------------------------------------------------
# Once in effect, and only while the bot has the conversation


@pytest.mark.django_db
def test_running_a_bot_row_twice_answers_once(site):
    give_bot(site)
    visitor = new_visitor_session(site).visitor
    posted = visitor_says(visitor.pk, "track my shipment")

    first = service.handle_bot_event(posted.bot_event)
    assert len(first) == 1
    assert service.handle_bot_event(posted.bot_event) == []  # the row is done
    # Even a row put back by hand (admin "retry now") stores no second reply.
    OutboxEvent.objects.filter(pk=posted.bot_event).update(status="pending", attempts=0)
    service.handle_bot_event(posted.bot_event)
    assert bot_replies(posted.conversation_id) == [REPLY_SHIPPING]
    assert OutboxEvent.objects.get(pk=posted.bot_event).status == "done"


@pytest.mark.django_db
def test_bot_stays_silent_once_an_agent_has_replied(site, agent_alice):
    give_bot(site)
    visitor = new_visitor_session(site).visitor
    posted = visitor_says(visitor.pk, "track my shipment")
    actions.post_agent_message(
        agent_alice.user, posted.conversation_id, client_id="a-1", body="I am on it."
    )

    assert service.handle_bot_event(posted.bot_event) == []
    assert bot_replies(posted.conversation_id) == []
    row = OutboxEvent.objects.get(pk=posted.bot_event)
    assert (row.status, row.last_error) == ("done", "a person has the conversation")
    # The agent's reply took the conversation from the bot, and the next visitor message goes
    # to the agent, not to the bot.
    assert not Conversation.objects.get(pk=posted.conversation_id).bot_active
    assert visitor_says(visitor.pk, "thanks").bot_event is None


@pytest.mark.django_db
def test_live_chat_is_offered_when_the_bot_serves_even_with_nobody_online(site):
    session = Client().post(
        "/api/widget/v1/sessions", json.dumps({"site": site.key}), content_type="application/json"
    )
    assert session.json()["unavailable_reason"] == "nobody_online"
    give_bot(site)
    session = Client().post(
        "/api/widget/v1/sessions", json.dumps({"site": site.key}), content_type="application/json"
    )
    assert (session.json()["available"], session.json()["unavailable_reason"]) == (True, None)
    # Switched off in admin, the bot no longer counts.
    BotSettings.objects.filter(site=site).update(enabled=False)
    session = Client().post(
        "/api/widget/v1/sessions", json.dumps({"site": site.key}), content_type="application/json"
    )
    assert session.json()["unavailable_reason"] == "nobody_online"


@pytest.mark.django_db
def test_misunderstood_turns_hand_over_into_the_waiting_line(site):
    give_bot(site)
    BotSettings.objects.filter(site=site).update(threshold=0.95)
    visitor = new_visitor_session(site).visitor

    for text in ("what colour is the sky", "purple elephants dancing"):
        service.handle_bot_event(visitor_says(visitor.pk, text).bot_event)

    conversation = Conversation.objects.get(visitor=visitor)
    # Nobody is online: the conversation waits in line for the next agent.
    assert not conversation.bot_active and conversation.assignee_id is None
    assert conversation.waiting_since is not None
    replies = bot_replies(conversation.pk)
    assert replies[0].startswith("Sorry, I did not understand that.")
    # And the bot says so, rather than promising an answer shortly.
    assert replies[1] == (
        "Nobody from our team is available right now. Your message is kept here and a "
        "colleague will answer as soon as one is back; you can close this window."
    )
    note = Note.objects.get(conversation=conversation)
    assert "the bot did not understand several messages in a row" in note.body


@pytest.mark.django_db(transaction=True)
def test_the_retry_job_answers_a_row_its_socket_never_ran(site):
    give_bot(site)
    visitor = new_visitor_session(site).visitor
    # The process that stored the message died before its bot run: the row is still pending.
    posted = visitor_says(visitor.pk, "track my shipment")
    OutboxEvent.objects.filter(pk=posted.bot_event).update(
        created_at=timezone.now() - timedelta(minutes=2), next_attempt_at=timezone.now()
    )

    counts = asyncio.run(delivery.relay_due())
    assert counts["bot"] == 1
    assert bot_replies(posted.conversation_id) == [REPLY_SHIPPING]


@pytest.mark.django_db
def test_a_site_without_an_active_version_routes_to_a_person(site, agent_alice):
    add_tiny_intents(site)
    BotSettings.objects.create(site=site)  # on, but never trained
    agent_alice.status = AgentStatus.ONLINE
    agent_alice.save()
    visitor = new_visitor_session(site).visitor
    posted = visitor_says(visitor.pk, "track my shipment")
    assert posted.bot_event is None
    assert Conversation.objects.get(pk=posted.conversation_id).bot_active is False


@pytest.mark.django_db
def test_a_disabled_bot_does_not_answer(site):
    give_bot(site)
    BotSettings.objects.filter(site=site).update(enabled=False)
    visitor = new_visitor_session(site).visitor
    assert visitor_says(visitor.pk, "track my shipment").bot_event is None


@pytest.mark.django_db
def test_bot_answers_chinese_in_chinese_and_fills_slots(site):
    give_bot(site)
    intent = site.intents.get(name="shipping")
    intent.reply_zh = "{% if slots.order_number %}订单 {{ slots.order_number }} 已发货。{% endif %}"
    intent.save()
    from nlp.models import Example

    Example.objects.create(intent=intent, text="我的包裹到哪了", language="zh")
    training.train_site(site.pk, force=True)
    visitor = new_visitor_session(site).visitor
    service.handle_bot_event(visitor_says(visitor.pk, "我的订单 20231115008 包裹到哪了").bot_event)
    assert bot_replies(Conversation.objects.get(visitor=visitor).pk) == [
        "订单 20231115008 已发货。"
    ]


# ---------------------------------------------------------------------------------------------
# Hot swap


SECOND_PROCESS = textwrap.dedent(
    """
    import sys, time
    import django
    django.setup()
    from nlp import runtime
    site_id = int(sys.argv[1])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        loaded = runtime.active_model(site_id)
        print(loaded.number if loaded else 0, flush=True)
        if loaded and loaded.number >= int(sys.argv[2]):
            break
        time.sleep(0.1)
    """
)


@pytest.mark.django_db(transaction=True)
def test_a_second_process_serves_a_newly_activated_version_within_seconds(site, settings):
    give_bot(site)
    # With Redis the announcement alone must do it: the child would not check for ten
    # minutes. Without Redis (one process in production) the version check does it.
    check = "600" if settings.GOFLY["redis"]["hosts"] else "1"
    env = {
        "DJANGO_SETTINGS_MODULE": "gofly_project.settings",
        "PYTHONPATH": str(ROOT),
        "GOFLY_NLP_VERSION_CHECK_SECONDS": check,
    }

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{database['NAME']}"
    else:
        env["DATABASE_URL"] = (
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"
        )
    child = subprocess.Popen(
        [sys.executable, "-c", SECOND_PROCESS, str(site.pk), "2"],
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "1"  # it serves v1
        training.train_site(site.pk, force=True)  # v2
        # The child stops as soon as it serves v2, and gives up after 60 s.
        seen = [line.strip() for line in child.stdout]
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert seen and seen[-1] == "2", seen
