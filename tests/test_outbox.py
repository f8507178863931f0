"""The outbox: written with the change, relayed after commit, retried with backoff."""

from __future__ import annotations

from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from chat import actions, delivery, outbox
from chat.models import OutboxEvent
from tests.conftest import new_visitor_session
from tests.test_consumers import open_agent, open_visitor, receive_until, send_message


@pytest.mark.django_db
def test_message_and_its_outbox_row_are_written_together(site):
    visitor = new_visitor_session(site).visitor
    first = actions.post_visitor_message(visitor.pk, client_id="c1", body="hello")
    second = actions.post_visitor_message(visitor.pk, client_id="c2", body="again")
    repeat = actions.post_visitor_message(visitor.pk, client_id="c2", body="again")

    rows = list(OutboxEvent.objects.order_by("id"))
    assert [row.pk for row in rows] == [first.recorded.outbox_id, second.recorded.outbox_id]
    assert all(row.status == "pending" for row in rows)
    # The first message opened the conversation: agents and visitor also hear of that, and,
    # with no agent online, the visitor learns its place in the line.
    assert [(group, event["type"]) for group, event in rows[0].sends] == [
        (f"visitor.{visitor.pk}", "chat.message"),
        (f"site.{site.pk}.agents", "chat.message"),
        (f"site.{site.pk}.agents", "chat.conversation"),
        (f"visitor.{visitor.pk}", "chat.conversation"),
        (f"visitor.{visitor.pk}", "chat.queue"),
    ]
    assert rows[0].sends[-1][1]["frame"]["position"] == 1
    assert [event["type"] for _, event in rows[1].sends] == ["chat.message", "chat.message"]
    assert repeat.recorded is None


@pytest.mark.django_db
def test_no_outbox_row_without_its_message(site, monkeypatch):
    visitor = new_visitor_session(site).visitor

    def broken(*args, **kwargs):
        raise RuntimeError("insert failed")

    monkeypatch.setattr(outbox, "record", broken)
    with pytest.raises(RuntimeError):
        actions.post_visitor_message(visitor.pk, client_id="c1", body="hello")
    assert OutboxEvent.objects.count() == 0
    assert visitor.conversations.count() == 0  # the whole transaction rolled back


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_relay_after_commit_marks_the_row_done(site):
    visitor, _ = await open_visitor(
        await database_sync_to_async(lambda: new_visitor_session(site).token)()
    )
    await send_message(visitor, "c1", "hello")
    statuses = await database_sync_to_async(
        lambda: list(OutboxEvent.objects.values_list("status", flat=True))
    )()
    assert statuses == ["done"]
    await visitor.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("channel_layer")
async def test_fan_out_lost_to_the_layer_is_retried_until_delivered(site, agent_alice, monkeypatch):
    agent, _ = await open_agent(agent_alice.user)
    # The agent's coming online was an outbox row too; this test follows the message's alone.
    await database_sync_to_async(OutboxEvent.objects.all().delete)()
    visitor, _ = await open_visitor(
        await database_sync_to_async(lambda: new_visitor_session(site).token)()
    )
    layer = get_channel_layer()
    real_group_send = layer.group_send

    async def agents_unreachable(group, event):
        if group.startswith("site."):
            raise ConnectionError("Redis went away")
        await real_group_send(group, event)

    # Given the layer cannot reach the agents' group when the message is sent
    monkeypatch.setattr(layer, "group_send", agents_unreachable)
    ack = await send_message(visitor, "c1", "are you there?")
    row = await database_sync_to_async(OutboxEvent.objects.get)()
    assert (row.status, row.attempts) == ("pending", 1)
    assert row.last_error == "ConnectionError: Redis went away"
    assert row.next_attempt_at > timezone.now()
    assert await agent.receive_nothing(timeout=0.3)

    # When the layer is back and the retry job's turn comes
    monkeypatch.setattr(layer, "group_send", real_group_send)
    await database_sync_to_async(OutboxEvent.objects.update)(
        created_at=timezone.now() - timedelta(minutes=1), next_attempt_at=timezone.now()
    )
    counts = await delivery.relay_due()

    # Then the agent gets the message; the row stays pending while the layer settles, because
    # a publish right after an outage may have reached no subscriber
    assert counts == {"claimed": 1, "delivered": 1, "failed": 0, "webhooks": 0}
    frame = await receive_until(agent, "message", seq=1)
    assert (frame["conversation"], frame["body"]) == (ack["conversation"], "are you there?")
    row = await database_sync_to_async(OutboxEvent.objects.get)()
    assert row.status == "pending"

    # And once the layer has settled, the next retry sends it once more and marks it done
    monkeypatch.setattr(delivery, "_last_failure", float("-inf"))
    await database_sync_to_async(OutboxEvent.objects.update)(
        created_at=timezone.now() - timedelta(minutes=1), next_attempt_at=timezone.now()
    )
    assert await delivery.relay_due() == {"claimed": 1, "delivered": 1, "failed": 0, "webhooks": 0}
    repeat = await receive_until(agent, "message", seq=1)  # the dashboard drops it by seq
    assert repeat["id"] == frame["id"]
    row = await database_sync_to_async(OutboxEvent.objects.get)()
    assert row.status == "done"
    await visitor.disconnect()
    await agent.disconnect()


@pytest.mark.django_db
def test_retry_job_leaves_young_rows_to_their_relay(site):
    visitor = new_visitor_session(site).visitor
    actions.post_visitor_message(visitor.pk, client_id="c1", body="hello")
    assert outbox.claim_due() == []
    later = timezone.now() + timedelta(seconds=10)
    claimed = outbox.claim_due(now=later)
    assert len(claimed) == 1
    # Leased: a second job running at the same moment does not take it too.
    assert outbox.claim_due(now=later) == []


@pytest.mark.django_db
def test_row_fails_after_max_attempts_and_admin_can_retry_it(site, settings):
    settings.GOFLY["outbox"] = {**settings.GOFLY["outbox"], "max_attempts": 3}
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c1", body="hello")
    event_id = posted.recorded.outbox_id

    assert [outbox.mark_retry(event_id, "down") for _ in range(3)] == [
        "pending",
        "pending",
        "failed",
    ]

    admin_user = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin_user)
    listing = client.get("/admin/chat/outboxevent/?status__exact=failed")
    assert listing.status_code == 200 and "down" in listing.content.decode()
    client.post("/admin/chat/outboxevent/", {"action": "retry_now", "_selected_action": [event_id]})
    row = OutboxEvent.objects.get(pk=event_id)
    assert (row.status, row.attempts) == ("pending", 0)


def test_backoff_doubles_with_jitter_up_to_the_cap(settings):
    settings.GOFLY["outbox"] = {
        **settings.GOFLY["outbox"],
        "backoff_base_seconds": 2.0,
        "backoff_max_seconds": 600.0,
    }
    for attempts, ceiling in [(1, 2.0), (2, 4.0), (5, 32.0), (12, 600.0)]:
        delays = [outbox.backoff_seconds(attempts) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays)


@pytest.mark.django_db
def test_clear_done_deletes_only_old_delivered_rows(site):
    visitor = new_visitor_session(site).visitor
    ids = [
        actions.post_visitor_message(visitor.pk, client_id=f"c{n}", body="x").recorded.outbox_id
        for n in range(3)
    ]
    outbox.mark_done(ids[0])
    outbox.mark_done(ids[1])
    OutboxEvent.objects.filter(pk=ids[0]).update(done_at=timezone.now() - timedelta(hours=25))

    assert outbox.clear_done() == 1
    assert sorted(OutboxEvent.objects.values_list("pk", flat=True)) == ids[1:]
