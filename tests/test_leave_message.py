"""The leave-a-message form: stored as the visitor's message, waiting for the next agent."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import Client

from agents.models import AgentStatus
from agents.presence import socket_opened
from chat.models import Block, Conversation, Message, Visitor
from tests.conftest import new_visitor_session

MESSAGES = "/api/widget/v1/messages"
FORM = {"name": "Mei", "email": "mei@example.com", "message": "Do you ship to Lyon?"}
BAD_EMAIL = {"code": "invalid", "detail": "Write a valid email address, so that we can answer you."}


def leave(token: str | None, body, ip: str = "127.0.0.1", **headers):
    if token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    raw = body if isinstance(body, str) else json.dumps(body)
    return Client(REMOTE_ADDR=ip).post(MESSAGES, raw, content_type="application/json", **headers)


@pytest.mark.django_db
def test_left_message_waits_in_line_and_goes_to_the_first_agent_online(site, agent_alice):
    # Given nobody online: the session answer offers the form
    session = Client().post(
        "/api/widget/v1/sessions", json.dumps({"site": site.key}), content_type="application/json"
    )
    token = session.json()["token"]
    assert session.json()["unavailable_reason"] == "nobody_online"

    # When the visitor leaves a message (and the widget retries it once)
    first = leave(token, {**FORM, "client_id": "form-1"})
    again = leave(token, {**FORM, "client_id": "form-1"})

    # Then it is one visitor message in a new web conversation, waiting in the site's line
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    conversation = Conversation.objects.get(pk=first.json()["conversation"])
    assert conversation.channel == Conversation.Channel.WEB
    assert (conversation.assignee_id, conversation.waiting_since is not None) == (None, True)
    assert list(conversation.messages.values_list("seq", "sender_kind", "body")) == [
        (1, Message.SenderKind.VISITOR, "Do you ship to Lyon?")
    ]
    visitor = Visitor.objects.get(pk=conversation.visitor_id)
    assert (visitor.name, visitor.email) == ("Mei", "mei@example.com")

    # And the agent sees it waiting, then gets it on coming online
    client = Client()
    client.force_login(agent_alice.user)
    waiting = client.get("/api/agent/v1/conversations?view=waiting").json()["conversations"]
    assert [(c["id"], c["visitor"]["name"]) for c in waiting] == [(conversation.pk, "Mei")]
    socket_opened(agent_alice.pk, "tab-1")
    agent_alice.refresh_from_db()
    conversation.refresh_from_db()
    assert agent_alice.status == AgentStatus.ONLINE
    assert (conversation.assignee_id, conversation.waiting_since) == (agent_alice.user_id, None)


@pytest.mark.django_db
def test_left_message_answers_cross_origin_and_its_preflight(site):
    token = new_visitor_session(site).token
    preflight = Client().options(MESSAGES, HTTP_ORIGIN="https://shop.example")
    response = leave(token, FORM, HTTP_ORIGIN="https://shop.example")

    assert preflight.status_code == 204
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]
    assert response.status_code == 201
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,status,expected",
    [
        ("{nope", 400, {"code": "malformed", "detail": "The request body must be a JSON object."}),
        (
            {**FORM, "name": "  "},
            400,
            {"code": "invalid", "detail": "Write your name, in at most 200 characters."},
        ),
        (
            {**FORM, "name": "x" * 201},
            400,
            {"code": "invalid", "detail": "Write your name, in at most 200 characters."},
        ),
        (
            {**FORM, "email": "mei@"},
            400,
            BAD_EMAIL,
        ),
        (
            {key: value for key, value in FORM.items() if key != "email"},
            400,
            BAD_EMAIL,
        ),
        ({**FORM, "message": " \n "}, 400, {"code": "invalid", "detail": "Write a message."}),
        ({**FORM, "message": 42}, 400, {"code": "invalid", "detail": "Write a message."}),
        (
            {**FORM, "message": "é" * 8193},
            400,
            {
                "code": "too_large",
                "detail": "The message is longer than 16384 bytes; shorten it.",
            },
        ),
        (
            {**FORM, "client_id": "x" * 65},
            400,
            {
                "code": "invalid",
                "detail": "The field 'client_id' must be a string of 1 to 64 characters.",
            },
        ),
    ],
)
def test_left_message_refusals_are_exact_and_store_nothing(site, body, status, expected):
    assert settings.GOFLY["messages"]["max_text_bytes"] == 16384
    token = new_visitor_session(site).token

    response = leave(token, body)

    assert response.status_code == status
    assert response.json() == expected
    assert Message.objects.count() == 0
    assert Visitor.objects.filter(email="mei@example.com").count() == 0


@pytest.mark.django_db
def test_left_message_without_token_is_unauthenticated(site):
    missing = leave(None, FORM)
    forged = leave("forged", FORM)

    expected = {
        "code": "unauthenticated",
        "detail": "The visitor token is missing or expired; start a new session.",
    }
    assert (missing.status_code, missing.json()) == (401, expected)
    assert (forged.status_code, forged.json()) == (401, expected)


@pytest.mark.django_db
def test_left_message_from_a_blocked_visitor_or_address_is_refused(site):
    visitor_session = new_visitor_session(site)
    Block.objects.create(site=site, visitor=visitor_session.visitor)
    other_token = new_visitor_session(site).token
    Block.objects.create(site=site, ip_network="2001:db8::/32")

    by_visitor = leave(visitor_session.token, FORM)
    by_address = leave(other_token, FORM, ip="2001:db8::1")

    refusal = {"code": "blocked", "detail": "This chat is not available to you."}
    assert (by_visitor.status_code, by_visitor.json()) == (403, refusal)
    assert (by_address.status_code, by_address.json()) == (403, refusal)
    assert Message.objects.count() == 0


@pytest.mark.django_db
def test_left_message_in_chinese(site):
    token = new_visitor_session(site).token
    response = leave(token, {**FORM, "message": ""}, HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.json() == {"code": "invalid", "detail": "请填写留言内容。"}
