"""The widget session endpoint and the agent's conversation API."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import close_old_connections
from django.test import Client

from chat import actions
from chat.models import Conversation, Message, Visitor
from chat.tokens import read_visitor_token
from tests.conftest import make_agent, new_visitor_session

SESSIONS = "/api/widget/v1/sessions"


def post_session(client: Client, body, origin: str | None = None):
    headers = {"HTTP_ORIGIN": origin} if origin else {}
    raw = body if isinstance(body, str) else json.dumps(body)
    return client.post(SESSIONS, raw, content_type="application/json", **headers)


@pytest.mark.django_db
def test_session_creates_visitor_and_signs_a_token(site):
    response = post_session(
        Client(), {"site": site.key, "page_url": "https://shop/p/1"}, origin="https://shop.example"
    )

    assert response.status_code == 201
    body = response.json()
    visitor = Visitor.objects.get(public_id=body["visitor_id"])
    assert visitor.site == site and visitor.page_url == "https://shop/p/1"
    claim = read_visitor_token(body["token"])
    assert (claim.site_id, claim.visitor_id) == (site.pk, visitor.pk)
    assert body["ws_url"] == f"ws://testserver/ws/visitor/?token={body['token']}"
    assert body["site"] == {
        "name": "Shop",
        "title": "Help",
        "color": "#1f6feb",
        "welcome": "Hi! How can we help?",
        "language": "en",
    }
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"


@pytest.mark.django_db
def test_session_for_a_returning_visitor_keeps_its_id(site):
    first = post_session(Client(), {"site": site.key}).json()
    again = post_session(Client(), {"site": site.key, "visitor_id": first["visitor_id"]}).json()
    assert again["visitor_id"] == first["visitor_id"]
    assert Visitor.objects.count() == 1


@pytest.mark.django_db
def test_session_with_unknown_site_key_is_refused(site):
    response = post_session(Client(), {"site": "no-such-key"})
    assert response.status_code == 404
    assert response.json() == {
        "code": "unknown_site",
        "detail": "No site has this key; copy the snippet again from the site's settings.",
    }
    assert Visitor.objects.count() == 0


@pytest.mark.django_db
def test_session_from_origin_the_site_does_not_allow_is_refused(site):
    site.allowed_origins = "https://shop.example\nhttps://m.shop.example"
    site.save()
    refused = post_session(Client(), {"site": site.key}, origin="https://evil.example")
    allowed = post_session(Client(), {"site": site.key}, origin="https://m.shop.example")

    assert refused.status_code == 403
    assert refused.json() == {
        "code": "origin_not_allowed",
        "detail": "This page's origin is not in the site's allowed origins.",
    }
    assert allowed.status_code == 201
    assert Visitor.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,status,expected",
    [
        (
            "{not json",
            400,
            {"code": "malformed", "detail": "The request body must be a JSON object."},
        ),
        ("[1]", 400, {"code": "malformed", "detail": "The request body must be a JSON object."}),
        (
            {},
            400,
            {
                "code": "invalid",
                "detail": "The field 'site' must be the site key from the embed snippet.",
            },
        ),
        (
            {"site": "KEY", "visitor_id": "<script>"},
            400,
            {
                "code": "invalid",
                "detail": "The field 'visitor_id' must be 8 to 64 letters, digits, '-' or '_'.",
            },
        ),
    ],
)
def test_session_bad_input_gets_exact_error(site, body, status, expected):
    if isinstance(body, dict) and body.get("site") == "KEY":
        body = {**body, "site": site.key}
    response = post_session(Client(), body)
    assert response.status_code == status
    assert response.json() == expected
    assert Visitor.objects.count() == 0


@pytest.mark.django_db
def test_session_preflight_allows_cross_origin_post(site):
    response = Client().options(SESSIONS, HTTP_ORIGIN="https://shop.example")
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in response["Access-Control-Allow-Methods"]


@pytest.mark.django_db
def test_session_answers_in_chinese_when_asked(site):
    response = Client().post(
        SESSIONS,
        json.dumps({"site": "nope"}),
        content_type="application/json",
        HTTP_ACCEPT_LANGUAGE="zh-hans",
    )
    assert response.json() == {
        "code": "unknown_site",
        "detail": "没有使用此密钥的站点；请从站点设置中重新复制嵌入代码。",
    }


# ---------------------------------------------------------------------------------------------
# Agent API


@pytest.mark.django_db
def test_conversation_list_shows_waiting_and_unread(site, agent_alice):
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c1", body="hello")
    actions.post_visitor_message(visitor.pk, client_id="c2", body="anyone?")
    client = Client()
    client.force_login(agent_alice.user)

    waiting = client.get("/api/agent/v1/conversations?view=waiting").json()["conversations"]
    mine = client.get("/api/agent/v1/conversations?view=mine").json()["conversations"]

    assert [(c["id"], c["unread"], c["last_message_preview"]) for c in waiting] == [
        (posted.conversation_id, 2, "anyone?")
    ]
    assert mine == []
    detail = client.get(f"/api/agent/v1/conversations/{posted.conversation_id}").json()
    assert detail["visitor"]["user_agent"] == "pytest"
    assert detail["visitor"]["ip"] == "127.0.0.1"


@pytest.mark.django_db
def test_conversation_api_refuses_anonymous_and_other_sites(site, other_site):
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c1", body="hello")
    outsider = make_agent("olga", other_site)

    anonymous = Client().get("/api/agent/v1/conversations")
    client = Client()
    client.force_login(outsider.user)
    hidden = client.get(f"/api/agent/v1/conversations/{posted.conversation_id}")
    bad_view = client.get("/api/agent/v1/conversations?view=everything")

    assert anonymous.status_code == 403
    assert anonymous.json()["code"] == "unauthenticated"
    assert hidden.status_code == 404
    assert hidden.json() == {
        "code": "not_found",
        "detail": "That conversation does not exist or you cannot see it.",
    }
    assert bad_view.json() == {
        "code": "invalid",
        "detail": "Unknown list; use waiting, mine, open or resolved.",
    }


# ---------------------------------------------------------------------------------------------
# Concurrency in the domain action itself, with real threads and connections


@pytest.mark.django_db(transaction=True)
def test_post_visitor_message_from_many_threads_keeps_seq_gap_free(site, agent_alice):
    visitor = new_visitor_session(site).visitor
    first = actions.post_visitor_message(visitor.pk, client_id="start", body="start")
    per_thread, threads, failures = 10, 6, []

    def sender(n: int) -> None:
        try:
            for i in range(per_thread):
                if n % 2:
                    actions.post_agent_message(
                        agent_alice.user, first.conversation_id, client_id=f"a{n}-{i}", body="a"
                    )
                else:
                    actions.post_visitor_message(visitor.pk, client_id=f"v{n}-{i}", body="v")
                # The same client_id again from the same thread never adds a row.
                actions.post_visitor_message(visitor.pk, client_id=f"v{n}-0", body="v")
        except Exception as exc:  # collected and asserted below
            failures.append(exc)
        finally:
            close_old_connections()

    workers = [threading.Thread(target=sender, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert failures == []
    seqs = list(
        Message.objects.filter(conversation_id=first.conversation_id)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    # Odd threads' repeated "v{n}-0" is a new visitor message once, then a duplicate.
    expected = 1 + per_thread * threads + threads // 2
    assert seqs == list(range(1, expected + 1))
    assert Conversation.objects.get(pk=first.conversation_id).last_seq == expected


@pytest.mark.django_db(transaction=True)
def test_http_request_does_not_leave_its_database_connection_open(site, monkeypatch):
    from django.db import connection

    # As in production: connections may persist for a minute (tests otherwise use 0).
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 60)
    connection.close()
    response = post_session(Client(), {"site": site.key})

    assert response.status_code == 201
    # Under ASGI the view ran in a thread of its own; a connection left open there would
    # never be reused (docs/performance.md, "too many clients").
    assert connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_racing_first_messages_open_one_conversation(site):
    visitor = new_visitor_session(site).visitor
    barrier, failures = threading.Barrier(6), []

    def first_message(n: int) -> None:
        try:
            barrier.wait(10)
            actions.post_visitor_message(visitor.pk, client_id=f"first-{n}", body="hi")
        except Exception as exc:  # collected and asserted below
            failures.append(exc)
        finally:
            close_old_connections()

    workers = [threading.Thread(target=first_message, args=(n,)) for n in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert failures == []
    conversation = Conversation.objects.get(visitor=visitor)
    assert conversation.last_seq == 6
    assert sorted(conversation.messages.values_list("seq", flat=True)) == [1, 2, 3, 4, 5, 6]
