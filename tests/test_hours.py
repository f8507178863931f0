"""Business hours in the site's own time zone, and who counts as online for live chat."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agents.models import Agent, AgentStatus, Team
from chat import hours
from chat.models import Conversation, Site, Visitor
from tests.conftest import make_agent

WEEKDAYS_9_TO_6 = {day: [["09:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def set_status(agent: Agent, status: str) -> None:
    # Straight to the row: these tests are about who counts, not how a status changes.
    Agent.objects.filter(pk=agent.pk).update(status=status)


@pytest.mark.django_db
def test_is_open_reads_hours_in_the_site_time_zone(site):
    site.business_hours = WEEKDAYS_9_TO_6
    site.timezone = "Asia/Shanghai"  # UTC+8 all year: no daylight saving to dodge
    utc_site = Site(name="UTC shop", business_hours=WEEKDAYS_9_TO_6, timezone="UTC")

    # Monday 7 December 2026, 01:30 UTC is 09:30 in Shanghai.
    assert hours.is_open(site, utc(2026, 12, 7, 1, 30))
    assert not hours.is_open(utc_site, utc(2026, 12, 7, 1, 30))
    # 10:30 UTC is 18:30 in Shanghai: closed there, open in UTC.
    assert not hours.is_open(site, utc(2026, 12, 7, 10, 30))
    assert hours.is_open(utc_site, utc(2026, 12, 7, 10, 30))
    # Friday 16:30 UTC is already Saturday 00:30 in Shanghai.
    assert not hours.is_open(site, utc(2026, 12, 11, 16, 30))
    assert hours.is_open(utc_site, utc(2026, 12, 11, 16, 30))


@pytest.mark.django_db
def test_is_open_edges_of_a_span_and_the_end_of_day(site):
    site.business_hours = {"sun": [["00:00", "02:00"], ["20:00", "24:00"]]}
    site.timezone = "UTC"

    assert hours.is_open(site, utc(2026, 12, 6, 0, 0))
    assert not hours.is_open(site, utc(2026, 12, 6, 2, 0))  # the end is not included
    assert hours.is_open(site, utc(2026, 12, 6, 23, 59))
    assert not hours.is_open(site, utc(2026, 12, 7, 0, 30))  # Monday is left out: closed


@pytest.mark.django_db
def test_is_open_with_no_hours_is_always_open(site):
    assert site.business_hours == {}
    assert hours.is_open(site, utc(2026, 12, 6, 3, 0))


@pytest.mark.django_db
def test_availability_counts_online_agents_only(site, agent_alice):
    now = utc(2026, 12, 7, 12, 0)
    for status in (AgentStatus.OFFLINE, AgentStatus.AWAY, AgentStatus.BUSY):
        set_status(agent_alice, status)
        assert hours.availability(site, now) == hours.Availability(False, "nobody_online")

    set_status(agent_alice, AgentStatus.ONLINE)
    assert hours.availability(site, now) == hours.Availability(True, None)

    site.business_hours = {"sat": [["09:00", "18:00"]]}
    assert hours.availability(site, now) == hours.Availability(False, "closed")


@pytest.mark.django_db
def test_availability_of_a_team_site_counts_the_team_s_agents(site, agent_alice):
    billing = Team.objects.create(name="Billing")
    site.team = billing
    bob = make_agent("bob")  # on no site, but in the team the site routes to
    set_status(agent_alice, AgentStatus.ONLINE)
    now = utc(2026, 12, 7, 12, 0)

    assert hours.availability(site, now).reason == "nobody_online"
    bob.teams.add(billing)
    set_status(bob, AgentStatus.ONLINE)
    assert hours.availability(site, now).available


@pytest.mark.django_db
def test_a_conversation_in_progress_stays_live_when_closed_or_nobody_is_online(site):
    site.business_hours = {"mon": []}  # closed all week
    now = utc(2026, 12, 7, 12, 0)
    visitor = Visitor.objects.create(site=site)
    assert hours.availability(site, now, visitor.pk) == hours.Availability(False, "closed")

    conversation = Conversation.objects.create(site=site, visitor=visitor, status="pending")
    assert hours.availability(site, now, visitor.pk) == hours.Availability(True, None)

    # Once resolved, a new question is a new conversation: the form again.
    Conversation.objects.filter(pk=conversation.pk).update(status="resolved")
    assert hours.availability(site, now, visitor.pk) == hours.Availability(False, "closed")


@pytest.mark.django_db
def test_session_answer_says_whether_live_chat_is_available(site, agent_alice):
    def session() -> dict:
        body = json.dumps({"site": site.key})
        response = Client().post("/api/widget/v1/sessions", body, content_type="application/json")
        return response.json()

    nobody = session()
    set_status(agent_alice, AgentStatus.ONLINE)
    somebody = session()
    Site.objects.filter(pk=site.pk).update(business_hours={"mon": []})
    closed = session()

    assert (nobody["available"], nobody["unavailable_reason"]) == (False, "nobody_online")
    assert (somebody["available"], somebody["unavailable_reason"]) == (True, None)
    # Whatever day the suite runs, an empty Monday and nothing else is closed all week.
    assert (closed["available"], closed["unavailable_reason"]) == (False, "closed")


def _site_form(site: Site, **changes: str) -> dict:
    form = {
        "name": site.name,
        "key": site.key,
        "allowed_origins": "",
        "widget_title": site.widget_title,
        "widget_color": site.widget_color,
        "welcome_message": site.welcome_message,
        "default_language": "en",
        "typing_preview": "on",
        "timezone": "Asia/Shanghai",
        "business_hours": "{}",
        "webhook_url": "",
        "webhook_secret": site.webhook_secret,
    }
    return {**form, **changes}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "field,value,message",
    [
        (
            "business_hours",
            '[["09:00", "18:00"]]',
            'Business hours must be an object of weekdays, e.g. {"mon": [["09:00", "18:00"]]}.',
        ),
        (
            "business_hours",
            '{"monday": []}',
            "Unknown weekday “monday”; use mon, tue, wed, thu, fri, sat or sun.",
        ),
        (
            "business_hours",
            '{"mon": ["09:00-18:00"]}',
            'The hours of mon must be a list of ["HH:MM", "HH:MM"] pairs.',
        ),
        (
            "business_hours",
            '{"tue": [["9am", "18:00"]]}',
            "“9am” is not a time; write it as HH:MM, e.g. 09:00.",
        ),
        (
            "business_hours",
            '{"fri": [["22:00", "02:00"]]}',
            "On fri, 22:00–02:00 ends before it starts; write a span past midnight as two, "
            "one on each day.",
        ),
        (
            "timezone",
            "Mars/Olympus",
            "“Mars/Olympus” is not a time zone name; use one like Europe/Paris or Asia/Shanghai.",
        ),
    ],
)
def test_admin_refuses_malformed_hours_with_exact_message(site, field, value, message):
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))

    form = _site_form(site, **{field: value})

    response = client.post(f"/admin/chat/site/{site.pk}/change/", form)

    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field] == [message]


@pytest.mark.django_db
def test_admin_saves_hours_and_time_zone(site):
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    hours_json = json.dumps({"mon": [["09:00", "12:00"], ["13:00", "24:00"]], "sun": []})

    response = client.post(
        f"/admin/chat/site/{site.pk}/change/", _site_form(site, business_hours=hours_json)
    )

    assert response.status_code == 302
    site.refresh_from_db()
    assert site.timezone == "Asia/Shanghai"
    assert site.business_hours == {"mon": [["09:00", "12:00"], ["13:00", "24:00"]], "sun": []}
