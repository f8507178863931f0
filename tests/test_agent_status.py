"""The agent state machine and presence: every allowed transition, refused ones, tabs, grace."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from agents import presence
from agents.models import Agent, AgentSocket, AgentStatus, AgentStatusEvent, StatusTrigger
from agents.status import TRANSITIONS, change_status, choose
from agents.tasks import sweep_and_relay
from chat.errors import GoflyError
from chat.models import OutboxEvent
from chat.outbox import site_agents_group
from tests.test_consumers import TIMEOUT, open_agent, receive_until

S = AgentStatus
T = StatusTrigger

ALLOWED = sorted(
    (start, end, trigger) for (start, end), triggers in TRANSITIONS.items() for trigger in triggers
)


def _put(agent: Agent, status: str, trigger: str = "") -> None:
    """Test setup only: place the agent in a state without going through the machine."""
    Agent.objects.filter(pk=agent.pk).update(status=status, status_trigger=trigger)


@pytest.mark.parametrize(("start", "end", "trigger"), ALLOWED)
def test_every_allowed_transition_is_stored_and_broadcast(
    start, end, trigger, site, other_site, agent_alice
):
    agent_alice.sites.add(other_site)
    _put(agent_alice, start, T.IDLE if trigger == T.ACTIVE else T.CHOSEN)
    actor = agent_alice.user if trigger == T.CHOSEN else None

    recorded = change_status(agent_alice.pk, end, trigger, actor=actor, reason="test")

    agent_alice.refresh_from_db()
    assert (agent_alice.status, agent_alice.status_trigger) == (end, trigger)
    event = AgentStatusEvent.objects.get()
    assert (event.from_status, event.to_status, event.trigger, event.reason, event.actor) == (
        start,
        end,
        trigger,
        "test",
        actor,
    )
    assert event.created_at == agent_alice.status_changed_at
    row = OutboxEvent.objects.get(pk=recorded.outbox_id)
    assert sorted(group for group, _ in row.sends) == sorted(
        [site_agents_group(site.pk), site_agents_group(other_site.pk)]
    )
    frame = row.sends[0][1]["frame"]
    assert (frame["type"], frame["status"], frame["previous"], frame["trigger"]) == (
        "agent_status",
        end,
        start,
        trigger,
    )
    assert frame["agent"] == {"id": agent_alice.user_id, "name": "Alice"}


@pytest.mark.parametrize(
    ("start", "start_trigger", "end", "trigger", "sentence"),
    [
        (S.OFFLINE, "", S.BUSY, T.CHOSEN, "“Offline” to “Busy” that way (Chosen by the agent)"),
        (S.OFFLINE, "", S.AWAY, T.IDLE, "“Offline” to “Away” that way (No activity)"),
        (S.ONLINE, T.CONNECTED, S.OFFLINE, T.CHOSEN, "“Online” to “Offline” that way (Chosen"),
        (S.BUSY, T.CHOSEN, S.AWAY, T.IDLE, "“Busy” to “Away” that way (No activity)"),
        (S.BUSY, T.CHOSEN, S.ONLINE, T.ACTIVE, "“Busy” to “Online” that way (Activity again)"),
        # Activity ends an away the idle timer set, not one the agent chose.
        (S.AWAY, T.CHOSEN, S.ONLINE, T.ACTIVE, "“Away” to “Online” that way (Activity again)"),
        (S.OFFLINE, "", S.ONLINE, T.DISCONNECTED, "“Offline” to “Online” that way (Every"),
    ],
)
def test_refused_transitions_change_nothing(
    start, start_trigger, end, trigger, sentence, agent_alice
):
    _put(agent_alice, start, start_trigger)

    with pytest.raises(GoflyError) as error:
        change_status(agent_alice.pk, end, trigger)

    assert error.value.code == "invalid_transition" and error.value.status == 409
    assert str(error.value.detail).startswith(f"An agent cannot go from {sentence}")
    agent_alice.refresh_from_db()
    assert agent_alice.status == start
    assert not AgentStatusEvent.objects.exists() and not OutboxEvent.objects.exists()


def test_the_refusal_reads_in_full(agent_alice):
    with pytest.raises(GoflyError) as error:
        change_status(agent_alice.pk, S.BUSY, T.CHOSEN)
    assert error.value.as_dict() == {
        "code": "invalid_transition",
        "detail": "An agent cannot go from “Offline” to “Busy” that way (Chosen by the agent).",
    }


def test_the_same_status_again_is_no_change(agent_alice):
    _put(agent_alice, S.ONLINE, T.CONNECTED)
    assert change_status(agent_alice.pk, S.ONLINE, T.CHOSEN) is None
    assert not AgentStatusEvent.objects.exists()


def test_an_agent_picks_only_online_away_or_busy(agent_alice):
    _put(agent_alice, S.ONLINE, T.CONNECTED)
    with pytest.raises(GoflyError) as error:
        choose(agent_alice.pk, "offline", agent_alice.user)
    assert error.value.as_dict() == {
        "code": "invalid",
        "detail": "Pick one of: online, away, busy.",
    }


# ---------------------------------------------------------------------------------------------
# Presence, in the domain


def _status(agent: Agent) -> tuple[str, str]:
    agent.refresh_from_db()
    return agent.status, agent.status_trigger


def _stamp(agent: Agent, **ages: int) -> None:
    """Age the agent's presence/activity stamps by the given seconds."""
    now = timezone.now()
    Agent.objects.filter(pk=agent.pk).update(
        **{field: now - timedelta(seconds=age) for field, age in ages.items()}
    )


def test_tabs_are_one_presence_and_the_grace_period_holds(agent_alice, settings):
    settings.GOFLY = {
        **settings.GOFLY,
        "agents": {"offline_grace_seconds": 60, "away_after_seconds": 900},
    }
    assert len(presence.socket_opened(agent_alice.pk, "tab-1")) == 1
    assert presence.socket_opened(agent_alice.pk, "tab-2") == []  # already online
    assert _status(agent_alice) == (S.ONLINE, T.CONNECTED)

    presence.socket_closed("tab-1")
    _stamp(agent_alice, presence_seen_at=30)
    presence.socket_seen(agent_alice.pk, "tab-2", active=False)  # tab 2 still pings
    _stamp(agent_alice, presence_seen_at=59)
    assert presence.sweep() == []
    assert _status(agent_alice)[0] == S.ONLINE

    presence.socket_closed("tab-2")
    _stamp(agent_alice, presence_seen_at=59)
    assert presence.sweep() == []  # within the grace period
    presence.socket_opened(agent_alice.pk, "tab-3")  # a tab came back in time
    _stamp(agent_alice, presence_seen_at=30)
    assert presence.sweep() == []
    assert _status(agent_alice) == (S.ONLINE, T.CONNECTED)

    presence.socket_closed("tab-3")
    _stamp(agent_alice, presence_seen_at=61)
    assert len(presence.sweep()) == 1
    assert _status(agent_alice) == (S.OFFLINE, T.DISCONNECTED)
    assert list(AgentStatusEvent.objects.values_list("to_status", "trigger")) == [
        (S.ONLINE, T.CONNECTED),
        (S.OFFLINE, T.DISCONNECTED),
    ]


def test_a_dead_server_s_sockets_go_offline_after_the_grace(agent_alice):
    presence.socket_opened(agent_alice.pk, "on-a-killed-server")
    _stamp(agent_alice, presence_seen_at=61)  # no close, no pings: the process died

    presence.sweep()

    assert _status(agent_alice) == (S.OFFLINE, T.DISCONNECTED)
    assert not AgentSocket.objects.exists()


def test_inactivity_makes_away_and_activity_undoes_only_that(agent_alice):
    presence.socket_opened(agent_alice.pk, "tab")
    _stamp(agent_alice, last_activity_at=901)
    presence.sweep()
    assert _status(agent_alice) == (S.AWAY, T.IDLE)

    presence.socket_seen(agent_alice.pk, "tab", active=False)
    assert _status(agent_alice) == (S.AWAY, T.IDLE)  # a ping without activity changes nothing
    presence.socket_seen(agent_alice.pk, "tab", active=True)
    assert _status(agent_alice) == (S.ONLINE, T.ACTIVE)

    choose(agent_alice.pk, S.AWAY, agent_alice.user)
    presence.socket_seen(agent_alice.pk, "tab", active=True)
    assert _status(agent_alice) == (S.AWAY, T.CHOSEN)


def test_busy_agents_are_not_made_away_by_the_timer(agent_alice):
    presence.socket_opened(agent_alice.pk, "tab")
    choose(agent_alice.pk, S.BUSY, agent_alice.user)
    _stamp(agent_alice, last_activity_at=5000)
    assert presence.sweep() == []
    assert _status(agent_alice) == (S.BUSY, T.CHOSEN)


# ---------------------------------------------------------------------------------------------
# Presence and choices over real sockets


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_dashboards_see_each_other_come_online_choose_and_leave(site, agent_alice, agent_bob):
    bob, ready = await open_agent(agent_bob.user)
    assert ready["status"] == "online"
    assert {a["name"]: a["status"] for a in ready["agents"]} == {
        "Alice": "offline",
        "Bob": "online",
    }

    alice_tab1, ready = await open_agent(agent_alice.user)
    assert ready["status"] == "online"
    seen = await receive_until(bob, "agent_status")
    assert (seen["agent"]["name"], seen["status"], seen["trigger"]) == (
        "Alice",
        "online",
        "connected",
    )

    alice_tab2, ready = await open_agent(agent_alice.user)
    assert ready["status"] == "online"
    assert await bob.receive_nothing(timeout=0.3)  # a second tab is the same presence

    await alice_tab1.send_json_to({"type": "agent_status", "status": "busy"})
    for socket in (bob, alice_tab1, alice_tab2):
        # A tab may also get its own coming online: pub/sub delivers to whoever is in the group
        # when the message arrives, which can be just after the tab joined.
        frame = await receive_until(socket, "agent_status", status="busy")
        assert (frame["agent"]["name"], frame["status"], frame["previous"]) == (
            "Alice",
            "busy",
            "online",
        )
    event = await database_sync_to_async(AgentStatusEvent.objects.latest)("created_at")
    assert (event.trigger, event.actor_id) == ("chosen", agent_alice.user_id)

    await alice_tab2.send_json_to({"type": "agent_status", "status": "offline"})
    assert await receive_until(alice_tab2, "error") == {
        "type": "error",
        "code": "invalid",
        "detail": "Pick one of: online, away, busy.",
    }

    # Both tabs close; once the grace period has passed the sweep tells the others.
    await alice_tab1.disconnect()
    await alice_tab2.disconnect()
    assert await sweep_and_relay() == 0
    await database_sync_to_async(_stamp)(agent_alice, presence_seen_at=61)
    assert await sweep_and_relay() == 1
    frame = await receive_until(bob, "agent_status")
    assert (frame["agent"]["name"], frame["status"], frame["trigger"]) == (
        "Alice",
        "offline",
        "disconnected",
    )
    await bob.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_a_superuser_without_an_agent_profile_has_no_status(site):
    root = await database_sync_to_async(get_user_model().objects.create_superuser)(
        "root", password="pw-root"
    )
    socket, ready = await open_agent(root)
    assert ready["status"] is None
    await socket.send_json_to({"type": "agent_status", "status": "busy"})
    assert await socket.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "forbidden",
        "detail": "Only agents have a status; this account has none.",
    }
    await socket.disconnect()


def test_an_admin_sets_agents_offline_through_the_machine(agent_alice, agent_bob):
    presence.socket_opened(agent_alice.pk, "tab")
    root = get_user_model().objects.create_superuser("root", password="pw-root")
    client = Client()
    client.force_login(root)

    response = client.post(
        "/admin/agents/agent/",
        {"action": "set_offline", "_selected_action": [agent_alice.pk, agent_bob.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "1 agents set offline." in response.content.decode()  # Bob already was
    event = AgentStatusEvent.objects.latest("id")
    assert (event.agent, event.to_status, event.trigger, event.actor) == (
        agent_alice,
        S.OFFLINE,
        T.ADMIN,
        root,
    )
    assert client.get("/admin/agents/agentstatusevent/").status_code == 200
