"""Canned replies: what an agent is offered, rendering with variables, the agent API."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.test import Client

from agents import canned
from agents.models import CannedReply
from chat import actions
from chat.errors import GoflyError
from tests.conftest import make_agent, new_visitor_session

CANNED = "/api/agent/v1/canned"


@pytest.fixture
def conversation(site):
    visitor = new_visitor_session(site).visitor
    visitor.name = "Mia"
    visitor.email = "mia@example.com"
    visitor.save()
    posted = actions.post_visitor_message(visitor.pk, client_id="c1", body="my parcel?")
    return actions.Conversation.objects.get(pk=posted.conversation_id)


@pytest.fixture
def shared_refund(db) -> CannedReply:
    return CannedReply.objects.create(
        shortcut="refund", title="Refund on its way", body="Hi {{ visitor.name }}, refunded."
    )


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_staff(username: str, *sites):
    agent = make_agent(username, *sites)
    agent.user.is_staff = True
    agent.user.save()
    return agent


# ---------------------------------------------------------------------------------------------
# Model


@pytest.mark.django_db
@pytest.mark.parametrize("shortcut", ["Refund", "re fund", "", "x" * 33, "ré"])
def test_canned_reply_shortcut_outside_the_alphabet_is_invalid(shortcut):
    reply = CannedReply(shortcut=shortcut, title="t", body="b")
    with pytest.raises(ValidationError) as raised:
        reply.full_clean()
    assert "shortcut" in raised.value.message_dict


@pytest.mark.django_db
def test_canned_reply_shortcut_is_unique_among_shared_and_per_owner(shared_refund, agent_alice):
    duplicate = CannedReply(shortcut="refund", title="t", body="b")
    with pytest.raises(ValidationError) as raised:
        duplicate.full_clean()
    assert raised.value.messages == ["A shared reply with that shortcut already exists."]

    CannedReply.objects.create(shortcut="refund", title="t", body="b", owner=agent_alice)
    again = CannedReply(shortcut="refund", title="t", body="b", owner=agent_alice)
    with pytest.raises(ValidationError) as raised:
        again.full_clean()
    assert raised.value.messages == ["This agent already has a reply with that shortcut."]


# ---------------------------------------------------------------------------------------------
# Listing, shadowing, site filter


@pytest.mark.django_db
def test_replies_for_personal_reply_shadows_the_shared_one(shared_refund, agent_alice, agent_bob):
    mine = CannedReply.objects.create(
        shortcut="refund", title="My refund", body="b", owner=agent_alice
    )
    hello = CannedReply.objects.create(shortcut="hello", title="Hello", body="b")
    CannedReply.objects.create(shortcut="bye", title="Bob's", body="b", owner=agent_bob)

    assert canned.replies_for(agent_alice.user) == [hello, mine]
    assert canned.replies_for(agent_bob.user)[1:] == [hello, shared_refund]


@pytest.mark.django_db
def test_replies_for_offers_only_the_agent_s_sites(site, other_site, agent_alice):
    everywhere = CannedReply.objects.create(shortcut="a", title="t", body="b")
    here = CannedReply.objects.create(shortcut="b", title="t", body="b", site=site)
    CannedReply.objects.create(shortcut="c", title="t", body="b", site=other_site)

    assert canned.replies_for(agent_alice.user) == [everywhere, here]
    assert canned.replies_for(agent_alice.user, site_id=other_site.pk)[0] == everywhere
    assert len(canned.replies_for(agent_alice.user, site_id=other_site.pk)) == 2


@pytest.mark.django_db
def test_search_replies_matches_shortcut_prefix_before_title(agent_alice):
    refund = CannedReply.objects.create(shortcut="refund", title="Money back", body="b")
    CannedReply.objects.create(shortcut="hello", title="Greeting", body="b")
    delay = CannedReply.objects.create(shortcut="delay", title="Shipping refund delay", body="b")

    assert canned.search_replies(agent_alice.user, "/ref") == [refund, delay]
    assert canned.search_replies(agent_alice.user, "GREET")[0].shortcut == "hello"
    assert canned.search_replies(agent_alice.user, "zzz") == []


# ---------------------------------------------------------------------------------------------
# Rendering


@pytest.mark.django_db
def test_render_reply_fills_every_variable(site, conversation, agent_alice):
    reply = CannedReply.objects.create(
        shortcut="all",
        title="t",
        body="{{visitor.name}} <{{ visitor.email }}> · {{ agent.name }} @ {{ site.name }} "
        "#{{ conversation.id }}",
    )
    text = canned.render_reply(agent_alice.user, reply.pk, conversation.pk)
    assert text == f"Mia <mia@example.com> · Alice @ Shop #{conversation.pk}"


@pytest.mark.django_db
def test_render_reply_leaves_template_code_and_unknown_variables_literal(conversation, agent_alice):
    body = (
        "{% load static %}{% debug %} {{ settings.SECRET_KEY }} {{ visitor.password }} "
        "{{ visitor.name|upper }} {{ visitor }} {{ visitor.name }}"
    )
    reply = CannedReply.objects.create(shortcut="evil", title="t", body=body)

    text = canned.render_reply(agent_alice.user, reply.pk, conversation.pk)

    assert text == (
        "{% load static %}{% debug %} {{ settings.SECRET_KEY }} {{ visitor.password }} "
        "{{ visitor.name|upper }} {{ visitor }} Mia"
    )


@pytest.mark.django_db
def test_render_reply_without_visitor_name_leaves_it_empty(conversation, agent_alice):
    conversation.visitor.name = ""
    conversation.visitor.save()
    reply = CannedReply.objects.create(shortcut="hi", title="t", body="Hi {{ visitor.name }}!")
    assert canned.render_reply(agent_alice.user, reply.pk, conversation.pk) == "Hi !"


@pytest.mark.django_db
def test_render_reply_refuses_other_sites_and_hidden_conversations(
    site, other_site, conversation, agent_alice
):
    elsewhere = CannedReply.objects.create(shortcut="x", title="t", body="b", site=other_site)
    outsider = make_agent("olga", other_site)
    shared = CannedReply.objects.create(shortcut="y", title="t", body="b")

    with pytest.raises(GoflyError) as wrong_site:
        canned.render_reply(
            make_agent("root", site, other_site).user, elsewhere.pk, conversation.pk
        )
    with pytest.raises(GoflyError) as hidden:
        canned.render_reply(outsider.user, shared.pk, conversation.pk)
    with pytest.raises(GoflyError) as not_theirs:
        canned.render_reply(agent_alice.user, elsewhere.pk, conversation.pk)

    assert wrong_site.value.as_dict() == {
        "code": "invalid",
        "detail": "That canned reply is not for this conversation's site.",
    }
    assert hidden.value.as_dict()["code"] == "not_found"
    assert not_theirs.value.as_dict() == {
        "code": "not_found",
        "detail": "That canned reply does not exist or you cannot see it.",
    }


# ---------------------------------------------------------------------------------------------
# API


@pytest.mark.django_db
def test_canned_api_lists_searches_and_renders(conversation, shared_refund, agent_alice):
    client = client_for(agent_alice.user)

    listed = client.get(CANNED + "?q=ref").json()
    rendered = client.get(f"{CANNED}/{shared_refund.pk}/render?conversation={conversation.pk}")

    assert listed == {
        "replies": [
            {
                "id": shared_refund.pk,
                "shortcut": "refund",
                "title": "Refund on its way",
                "body": "Hi {{ visitor.name }}, refunded.",
                "shared": True,
            }
        ]
    }
    assert rendered.status_code == 200
    assert rendered.json() == {"text": "Hi Mia, refunded."}


@pytest.mark.django_db
def test_canned_api_list_for_a_conversation_uses_its_site(
    site, other_site, conversation, agent_alice
):
    CannedReply.objects.create(shortcut="here", title="t", body="b", site=site)
    CannedReply.objects.create(shortcut="there", title="t", body="b", site=other_site)
    client = client_for(make_agent("root", site, other_site).user)

    listed = client.get(f"{CANNED}?conversation={conversation.pk}").json()["replies"]

    assert [reply["shortcut"] for reply in listed] == ["here"]


@pytest.mark.django_db
def test_canned_api_creates_a_personal_reply(agent_alice):
    client = client_for(agent_alice.user)
    response = client.post(
        CANNED,
        json.dumps({"shortcut": "thanks", "title": "Thanks", "body": "Thank you!"}),
        content_type="application/json",
    )

    assert response.status_code == 201
    reply = CannedReply.objects.get()
    assert (reply.owner, reply.site) == (agent_alice, None)
    assert response.json() == {
        "id": reply.pk,
        "shortcut": "thanks",
        "title": "Thanks",
        "body": "Thank you!",
        "shared": False,
    }


@pytest.mark.django_db
def test_canned_api_staff_creates_and_deletes_a_shared_reply(site):
    client = client_for(make_staff("sam", site).user)
    created = client.post(
        CANNED,
        json.dumps({"shortcut": "hours", "title": "Hours", "body": "9 to 5", "shared": True}),
        content_type="application/json",
    )
    reply = CannedReply.objects.get()

    deleted = client.delete(f"{CANNED}/{reply.pk}")

    assert created.status_code == 201 and created.json()["shared"] is True
    assert reply.owner is None
    assert deleted.status_code == 204
    assert CannedReply.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body,status,expected",
    [
        (
            "[1]",
            400,
            {"code": "malformed", "detail": "The request body must be a JSON object."},
        ),
        (
            {"shortcut": "Re fund", "title": "t", "body": "b"},
            400,
            {
                "code": "invalid",
                "detail": "The field 'shortcut' must be 1 to 32 lowercase letters, digits, "
                "'-' or '_'.",
            },
        ),
        (
            {"shortcut": "ok", "title": " ", "body": "b"},
            400,
            {"code": "invalid", "detail": "The field 'title' must be text of 1 to 100 characters."},
        ),
        (
            {"shortcut": "ok", "title": "t", "body": "x" * 4001},
            400,
            {"code": "invalid", "detail": "The field 'body' must be text of 1 to 4000 characters."},
        ),
        (
            {"shortcut": "ok", "title": "t", "body": "b", "shared": "yes"},
            400,
            {"code": "invalid", "detail": "The field 'shared' must be true or false."},
        ),
        (
            {"shortcut": "ok", "title": "t", "body": "b", "shared": True},
            403,
            {"code": "forbidden", "detail": "Only staff can create shared canned replies."},
        ),
        (
            {"shortcut": "mine", "title": "t", "body": "b"},
            400,
            {
                "code": "invalid",
                "detail": "You already have a canned reply with the shortcut /mine.",
            },
        ),
    ],
)
def test_canned_api_create_refusals(agent_alice, body, status, expected):
    CannedReply.objects.create(shortcut="mine", title="t", body="b", owner=agent_alice)
    raw = body if isinstance(body, str) else json.dumps(body)

    response = client_for(agent_alice.user).post(CANNED, raw, content_type="application/json")

    assert response.status_code == status
    assert response.json() == expected
    assert CannedReply.objects.count() == 1


@pytest.mark.django_db
def test_canned_api_refuses_a_second_shared_reply_with_the_same_shortcut(site, shared_refund):
    client = client_for(make_staff("sam", site).user)
    response = client.post(
        CANNED,
        json.dumps({"shortcut": "refund", "title": "t", "body": "b", "shared": True}),
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "invalid",
        "detail": "A shared canned reply with the shortcut /refund already exists.",
    }


@pytest.mark.django_db
def test_canned_api_personal_reply_needs_an_agent_profile(db):
    root = get_user_model().objects.create_superuser("root", password="pw")
    response = client_for(root).post(
        CANNED,
        json.dumps({"shortcut": "ok", "title": "t", "body": "b"}),
        content_type="application/json",
    )
    assert response.status_code == 403
    assert response.json() == {
        "code": "forbidden",
        "detail": "Only agents keep personal canned replies; create a shared one instead.",
    }


@pytest.mark.django_db
def test_canned_api_delete_refusals(shared_refund, agent_alice, agent_bob):
    bobs = CannedReply.objects.create(shortcut="bob", title="t", body="b", owner=agent_bob)
    client = client_for(agent_alice.user)

    shared = client.delete(f"{CANNED}/{shared_refund.pk}")
    other = client.delete(f"{CANNED}/{bobs.pk}")
    own = client_for(agent_bob.user).delete(f"{CANNED}/{bobs.pk}")

    assert shared.status_code == 403
    assert shared.json() == {
        "code": "forbidden",
        "detail": "Only staff can delete shared canned replies.",
    }
    assert other.status_code == 404
    assert other.json() == {
        "code": "not_found",
        "detail": "That canned reply does not exist or you cannot see it.",
    }
    assert own.status_code == 204
    assert list(CannedReply.objects.all()) == [shared_refund]


@pytest.mark.django_db
def test_canned_api_render_refusals(site, other_site, conversation, shared_refund, agent_alice):
    client = client_for(agent_alice.user)
    outsider = client_for(make_agent("olga", other_site).user)

    missing = client.get(f"{CANNED}/{shared_refund.pk}/render")
    wrong = client.get(f"{CANNED}/{shared_refund.pk}/render?conversation=abc")
    hidden = outsider.get(f"{CANNED}/{shared_refund.pk}/render?conversation={conversation.pk}")
    no_reply = client.get(f"{CANNED}/999999/render?conversation={conversation.pk}")
    anonymous = Client().get(f"{CANNED}/{shared_refund.pk}/render?conversation={conversation.pk}")

    bad_param = {
        "code": "invalid",
        "detail": "The query parameter 'conversation' must be a conversation id (a number).",
    }
    assert (missing.status_code, missing.json()) == (400, bad_param)
    assert (wrong.status_code, wrong.json()) == (400, bad_param)
    assert hidden.status_code == 404
    assert hidden.json() == {
        "code": "not_found",
        "detail": "That conversation does not exist or you cannot see it.",
    }
    assert no_reply.status_code == 404
    assert no_reply.json()["detail"] == "That canned reply does not exist or you cannot see it."
    assert anonymous.status_code == 403
    assert anonymous.json()["code"] == "unauthenticated"


@pytest.mark.django_db
def test_canned_api_answers_in_chinese(agent_alice):
    response = client_for(agent_alice.user).delete(
        f"{CANNED}/999999", HTTP_ACCEPT_LANGUAGE="zh-hans"
    )
    assert response.json() == {
        "code": "not_found",
        "detail": "该快捷回复不存在，或您无权查看。",
    }


def test_dashboard_strings_for_canned_replies_are_in_chinese():
    from django.utils import translation

    from agents.views import dashboard_strings

    with translation.override("zh-hans"):
        strings = dashboard_strings()
    assert strings["canned_failed"] == "无法插入快捷回复，请重试。"
    assert strings["canned_saved"] == "已保存。在回复框中输入 /%(shortcut)s 即可使用。"


@pytest.mark.django_db
def test_dashboard_page_shows_the_canned_form_in_chinese(agent_alice):
    page = client_for(agent_alice.user).get("/dashboard/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    html = page.content.decode()
    assert "我的快捷回复" in html and "保存快捷回复" in html
    # The variable names are shown as written, not evaluated by the page's template.
    assert "{{ visitor.name }}" in html
