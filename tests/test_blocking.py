"""Blocks: by visitor, by IPv4 or IPv6 address or network; refused on HTTP and on the socket."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone, translation

from chat import actions, blocking
from chat.errors import GoflyError
from chat.models import Block, Visitor
from gofly_project.asgi import application
from tests.conftest import make_agent, new_visitor_session
from tests.test_consumers import TIMEOUT, open_agent, open_visitor, receive_until, visitor_token

REFUSAL = {"code": "blocked", "detail": "This chat is not available to you."}


def post_session(body: dict, ip: str = "127.0.0.1", **headers):
    return Client(REMOTE_ADDR=ip).post(
        "/api/widget/v1/sessions", json.dumps(body), content_type="application/json", **headers
    )


# ---------------------------------------------------------------------------------------------
# Matching


@pytest.mark.django_db
def test_is_blocked_by_visitor_only_that_visitor(site):
    blocked = new_visitor_session(site).visitor
    other = new_visitor_session(site).visitor
    Block.objects.create(site=site, visitor=blocked)

    assert blocking.is_blocked(site.pk, blocked.pk, "198.51.100.1")
    assert not blocking.is_blocked(site.pk, other.pk, "198.51.100.1")


@pytest.mark.django_db
def test_is_blocked_by_ipv4_network(site):
    Block.objects.create(site=site, ip_network="203.0.113.0/24")

    assert blocking.is_blocked(site.pk, None, "203.0.113.77")
    assert not blocking.is_blocked(site.pk, None, "203.0.114.1")
    assert not blocking.is_blocked(site.pk, None, None)
    assert not blocking.is_blocked(site.pk, None, "not an address")


@pytest.mark.django_db
def test_is_blocked_by_ipv6_network_and_single_address(site):
    Block.objects.create(site=site, ip_network="2001:db8::/32")
    Block.objects.create(site=site, ip_network="198.51.100.9")

    assert blocking.is_blocked(site.pk, None, "2001:db8:1::5")
    assert not blocking.is_blocked(site.pk, None, "2001:db9::1")
    assert blocking.is_blocked(site.pk, None, "198.51.100.9")
    assert not blocking.is_blocked(site.pk, None, "198.51.100.10")


@pytest.mark.django_db
def test_is_blocked_ignores_expired_blocks_and_other_sites(site, other_site):
    now = timezone.now()
    Block.objects.create(site=site, ip_network="203.0.113.0/24", expires_at=now - timedelta(1))
    Block.objects.create(site=other_site, ip_network="198.51.100.0/24")
    Block.objects.create(site=site, ip_network="192.0.2.0/24", expires_at=now + timedelta(1))

    assert not blocking.is_blocked(site.pk, None, "203.0.113.5")
    assert not blocking.is_blocked(site.pk, None, "198.51.100.5")
    assert blocking.is_blocked(site.pk, None, "192.0.2.5")


@pytest.mark.django_db
def test_is_blocked_costs_one_query(site, django_assert_num_queries):
    for n in range(5):
        Block.objects.create(site=site, ip_network=f"10.{n}.0.0/16")
    with django_assert_num_queries(1):
        assert blocking.is_blocked(site.pk, 7, "10.4.1.1")


# ---------------------------------------------------------------------------------------------
# HTTP


@pytest.mark.django_db
def test_session_refuses_a_blocked_address_exactly(site):
    Block.objects.create(site=site, ip_network="203.0.113.0/24")

    refused = post_session({"site": site.key}, ip="203.0.113.20")
    allowed = post_session({"site": site.key}, ip="203.0.112.20")

    assert refused.status_code == 403
    assert refused.json() == REFUSAL
    assert allowed.status_code == 201
    assert Visitor.objects.count() == 1


@pytest.mark.django_db
def test_session_refuses_a_blocked_visitor_in_chinese_too(site):
    visitor = new_visitor_session(site, "visitor-blocked-1").visitor
    Block.objects.create(site=site, visitor=visitor)

    english = post_session({"site": site.key, "visitor_id": "visitor-blocked-1"})
    chinese = post_session(
        {"site": site.key, "visitor_id": "visitor-blocked-1"}, HTTP_ACCEPT_LANGUAGE="zh-hans"
    )

    assert english.status_code == 403
    assert english.json() == REFUSAL
    assert chinese.json() == {"code": "blocked", "detail": "您无法使用此聊天。"}


# ---------------------------------------------------------------------------------------------
# Sockets


@database_sync_to_async
def blocked_visitor_token(site) -> str:
    session = new_visitor_session(site)
    Block.objects.create(site=site, visitor=session.visitor, reason="spam")
    return session.token


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_visitor_socket_of_a_blocked_visitor_gets_error_then_4403(site):
    token = await blocked_visitor_token(site)
    socket = WebsocketCommunicator(application, f"/ws/visitor/?token={token}")
    connected, _subprotocol = await socket.connect(timeout=TIMEOUT)

    assert connected
    assert await socket.receive_json_from(timeout=TIMEOUT) == {"type": "error", **REFUSAL}
    assert await socket.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4403}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_visitor_socket_from_a_blocked_ipv6_network_gets_error_then_4403(site):
    token = await visitor_token(site)
    await database_sync_to_async(Block.objects.create)(site=site, ip_network="2001:db8::/32")
    refused = WebsocketCommunicator(application, f"/ws/visitor/?token={token}")
    # The application has not started yet: it reads the peer address from this same scope.
    refused.scope["client"] = ["2001:db8::42", 50000]
    allowed = WebsocketCommunicator(application, f"/ws/visitor/?token={token}")
    allowed.scope["client"] = ["2001:db9::42", 50000]

    await refused.connect(timeout=TIMEOUT)
    connected, _subprotocol = await allowed.connect(timeout=TIMEOUT)

    assert await refused.receive_json_from(timeout=TIMEOUT) == {"type": "error", **REFUSAL}
    assert await refused.receive_output(timeout=TIMEOUT) == {
        "type": "websocket.close",
        "code": 4403,
    }
    assert connected
    assert (await allowed.receive_json_from(timeout=TIMEOUT))["type"] == "ready"
    await allowed.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_agent_blocks_a_connected_visitor_who_is_disconnected(site, agent_alice):
    session = await database_sync_to_async(new_visitor_session)(site)
    posted = await database_sync_to_async(actions.post_visitor_message)(
        session.visitor.pk, client_id="c1", body="buy cheap pills"
    )
    visitor, _ready = await open_visitor(session.token)
    agent, _ready = await open_agent(agent_alice.user)

    await agent.send_json_to({"type": "block", "conversation": posted.conversation_id})

    assert await receive_until(agent, "blocked") == {
        "type": "blocked",
        "conversation": posted.conversation_id,
    }
    assert await receive_until(visitor, "error") == {"type": "error", **REFUSAL}
    assert await visitor.receive_output(timeout=TIMEOUT) == {
        "type": "websocket.close",
        "code": 4403,
    }
    block = await database_sync_to_async(Block.objects.get)()
    assert (block.visitor_id, block.created_by_id) == (session.visitor.pk, agent_alice.user_id)
    await agent.disconnect()


@pytest.mark.django_db
def test_agent_of_another_site_cannot_block(site, other_site):
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c1", body="hi")
    outsider = make_agent("olga", other_site)

    with pytest.raises(GoflyError) as refused:
        blocking.block_visitor(outsider.user, posted.conversation_id, "")

    with translation.override("en"):
        answer = refused.value.as_dict()
    assert answer == {
        "code": "not_found",
        "detail": "That conversation does not exist or you cannot see it.",
    }
    assert Block.objects.count() == 0


@pytest.mark.django_db
def test_network_block_notifies_recent_visitors_inside_it_only(site):
    inside = new_visitor_session(site).visitor
    Visitor.objects.filter(pk=inside.pk).update(ip="2001:db8::7")
    outside = new_visitor_session(site).visitor
    Visitor.objects.filter(pk=outside.pk).update(ip="2001:db9::7")
    block = Block.objects.create(site=site, ip_network="2001:db8::/32")

    assert blocking.blocked_sends(block) == [(f"visitor.{inside.pk}", {"type": "chat.blocked"})]


# ---------------------------------------------------------------------------------------------
# Admin


@pytest.mark.django_db
def test_admin_blocks_a_network_in_canonical_form_and_refuses_both_or_neither(site):
    visitor = new_visitor_session(site).visitor
    root = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(root)
    form = {"site": site.pk, "reason": "abuse", "expires_at_0": "", "expires_at_1": ""}

    both = client.post(
        "/admin/chat/block/add/", {**form, "visitor": visitor.pk, "ip_network": "10.0.0.1"}
    )
    neither = client.post("/admin/chat/block/add/", form)
    bad = client.post("/admin/chat/block/add/", {**form, "ip_network": "10.0.0.300/8"})
    saved = client.post("/admin/chat/block/add/", {**form, "ip_network": "203.0.113.9/24"})

    message = "Block either a visitor or an IP address or network, not both."
    assert both.context["adminform"].form.non_field_errors() == [message]
    assert neither.context["adminform"].form.non_field_errors() == [message]
    assert bad.context["adminform"].form.errors["ip_network"] == [
        "“10.0.0.300/8” is not an IP address or network; write one like 203.0.113.7, "
        "203.0.113.0/24 or 2001:db8::/32."
    ]
    assert saved.status_code == 302
    block = Block.objects.get()
    assert (block.ip_network, block.created_by) == ("203.0.113.0/24", root)
    assert client.get("/admin/chat/block/?q=203.0.113").status_code == 200
