"""Monthly partitions of the message table on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.db import IntegrityError, connection, transaction

from chat import actions, partitions
from chat.models import Message
from chat.tasks import ensure_message_partitions
from tests.conftest import new_visitor_session


@pytest.fixture
def postgresql(db):
    if connection.vendor != "postgresql":
        pytest.skip("Partitioning is PostgreSQL's; set DATABASE_URL to a PostgreSQL to run it.")


def this_month() -> date:
    return partitions.month_start(datetime.now(UTC).date())


def test_add_months_crosses_years():
    assert partitions.add_months(date(2026, 12, 1), 1) == date(2027, 1, 1)
    assert partitions.add_months(date(2027, 1, 1), -1) == date(2026, 12, 1)
    assert partitions.add_months(date(2026, 3, 1), 22) == date(2028, 1, 1)


def test_migrate_leaves_this_and_next_months_partitions(postgresql):
    names = partitions.existing_partitions(connection)
    assert partitions.partition_name(this_month()) in names
    assert partitions.partition_name(partitions.add_months(this_month(), 1)) in names


def test_ensure_partitions_is_idempotent_and_creates_ahead(postgresql):
    later = partitions.add_months(this_month(), 5)
    first = partitions.ensure_partitions(connection, today=later, ahead=1)
    again = partitions.ensure_partitions(connection, today=later, ahead=1)

    assert first == [
        partitions.partition_name(later),
        partitions.partition_name(partitions.add_months(later, 1)),
    ]
    assert again == []


def test_daily_task_creates_nothing_when_all_exist(postgresql):
    assert ensure_message_partitions() == []


def test_row_outside_every_partition_fails_loudly(postgresql, site):
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c", body="hi")
    with pytest.raises(IntegrityError) as error, transaction.atomic():
        Message.objects.create(
            conversation_id=posted.conversation_id,
            seq=99,
            created_at=datetime(2199, 1, 1, tzinfo=UTC),
            sender_kind="visitor",
            client_id="far-future",
        )
    assert 'no partition of relation "chat_message" found for row' in str(error.value)


def test_history_query_uses_the_index_and_skips_older_partitions(postgresql, site):
    older = partitions.add_months(this_month(), -2)
    partitions.create_partition(connection, older)
    visitor = new_visitor_session(site).visitor
    posted = actions.post_visitor_message(visitor.pk, client_id="c", body="hi")
    conversation = actions.current_conversation(visitor.pk)

    plan = actions.history_queryset(conversation, 0).explain()

    assert partitions.partition_name(this_month()) in plan
    assert partitions.partition_name(older) not in plan
    assert "chat_message_p" in plan and "Index" in plan
    assert posted.frame["seq"] == 1


def test_ensure_partitions_does_nothing_on_sqlite(db):
    if connection.vendor != "sqlite":
        pytest.skip("This checks the embedded SQLite default.")
    assert partitions.is_partitioned(connection) is False
    assert ensure_message_partitions() == []
