"""Django admin: every model's list, with search and filters, and its change page."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from chat import actions
from tests.conftest import new_visitor_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_with_data(site, agent_alice):
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c1", body="订单 1234 在哪里")
    user = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    return client, posted.conversation_id


@pytest.mark.parametrize(
    "path,query,expected",
    [
        ("chat/site/", "?q=Shop", "Shop"),
        ("chat/visitor/", "?q=127.0.0.1", "127.0.0.1"),
        ("chat/conversation/", "?status__exact=open&q=1234", "open"),
        ("chat/message/", "?q=1234&sender_kind__exact=visitor", "订单 1234 在哪里"),
        ("agents/agent/", "?q=alice", "Alice"),
    ],
)
def test_admin_lists_search_and_filter(admin_client_with_data, path, query, expected):
    client, _ = admin_client_with_data
    response = client.get(f"/admin/{path}{query}")
    assert response.status_code == 200
    assert expected in response.content.decode()


def test_admin_conversation_page_shows_its_messages(admin_client_with_data):
    client, conversation_id = admin_client_with_data
    response = client.get(f"/admin/chat/conversation/{conversation_id}/change/")
    assert response.status_code == 200
    assert "订单 1234 在哪里" in response.content.decode()


def test_admin_canned_replies_filter_shared_and_refuse_a_bad_shortcut(
    admin_client_with_data, agent_alice
):
    from agents.models import CannedReply

    client, _ = admin_client_with_data
    CannedReply.objects.create(shortcut="refund", title="Money back", body="b")
    CannedReply.objects.create(shortcut="mine", title="Alice's own", body="b", owner=agent_alice)

    shared = client.get("/admin/agents/cannedreply/?owner__isempty=1&q=o").content.decode()
    added = client.post(
        "/admin/agents/cannedreply/add/",
        {"shortcut": "Bad Shortcut", "title": "t", "body": "b"},
    )

    assert "Money back" in shared and "Alice&#x27;s own" not in shared
    assert added.status_code == 200  # the form again, with the error
    assert "A shortcut is 1 to 32 lowercase letters, digits, &#x27;-&#x27; or &#x27;_&#x27;." in (
        added.content.decode()
    )
    assert CannedReply.objects.count() == 2
