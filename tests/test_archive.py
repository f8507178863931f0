"""The archive job: old months leave the live message table, nothing is lost, history reads.

Runs on SQLite (rows move to the archive table) and, with DATABASE_URL, on PostgreSQL (whole
partitions are detached and moved). The job refuses to run inside a transaction, so these tests
use real commits (`transactional_db`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client

from chat import actions, archive, partitions
from chat.models import ArchivedMessage, ArchivedMonth, Conversation, Message, Site
from chat.tasks import archive_messages
from tests.conftest import new_visitor_session

TODAY = datetime.now(UTC).date()
THIS_MONTH = partitions.month_start(TODAY)
# Three past months that a 3-month policy archives, one recent month it keeps.
OLD_MONTHS = [partitions.add_months(THIS_MONTH, offset) for offset in (-6, -5, -4)]
RECENT_MONTH = partitions.add_months(THIS_MONTH, -1)
PER_MONTH = 4


def _drop_month_tables(months: list[date]) -> None:
    with connection.cursor() as cursor:
        for month in months:
            name = partitions.partition_name(month)
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
            cursor.execute(f'DROP TABLE IF EXISTS {archive.SCHEMA}."{name}"')


@pytest.fixture
def months(transactional_db, settings, tmp_path):
    """Past months' partitions (PostgreSQL), removed again afterwards so every test starts clean."""
    settings.GOFLY = {
        **settings.GOFLY,
        "archive": {"after_months": 3, "hour": 3, "mode": "schema", "directory": str(tmp_path)},
    }
    postgres = partitions.is_partitioned(connection)
    if postgres:
        _drop_month_tables([*OLD_MONTHS, RECENT_MONTH])
        for month in [*OLD_MONTHS, RECENT_MONTH]:
            partitions.create_partition(connection, month)
    yield postgres
    if postgres:
        _drop_month_tables([*OLD_MONTHS, RECENT_MONTH])


def _at(month: date, day: int) -> datetime:
    return datetime(month.year, month.month, day, 12, tzinfo=UTC)


def _fill(site: Site) -> tuple[Conversation, list[Conversation]]:
    """A long conversation running from the oldest month until now, and one per old month."""
    visitor = new_visitor_session(site).visitor
    others = new_visitor_session(site).visitor
    long = Conversation.objects.create(site=site, visitor=visitor, created_at=_at(OLD_MONTHS[0], 1))
    short = []
    seq = 0
    for month in [*OLD_MONTHS, RECENT_MONTH]:
        for n in range(PER_MONTH):
            seq += 1
            Message.objects.create(
                conversation=long,
                seq=seq,
                created_at=_at(month, 2 + n),
                sender_kind="visitor",
                body=f"{month:%Y-%m} 第{n}条",
                client_id=f"long-{seq}",
            )
        other = Conversation.objects.create(
            site=site, visitor=others, created_at=_at(month, 1), status="resolved"
        )
        for n in range(PER_MONTH):
            Message.objects.create(
                conversation=other,
                seq=n + 1,
                created_at=_at(month, 10 + n),
                sender_kind="agent" if n % 2 else "visitor",
                body=f"{other.pk}/{n + 1}",
                client_id=f"c-{n}",
            )
        short.append(other)
    Conversation.objects.filter(pk=long.pk).update(
        last_seq=seq, last_message_at=_at(RECENT_MONTH, 2 + PER_MONTH)
    )
    long.refresh_from_db()
    return long, short


def _live_partitions() -> list[str]:
    return partitions.existing_partitions(connection)


def _everything() -> set[tuple[int, int, str]]:
    rows = set()
    for model in (Message, ArchivedMessage):
        rows |= set(model.objects.values_list("conversation_id", "seq", "body"))
    return rows


def test_three_old_months_move_out_and_history_still_reads(months, site, caplog):
    postgres = months
    long, short = _fill(site)
    # A live message of the current month, stored the normal way.
    visitor = long.visitor
    Conversation.objects.filter(pk=long.pk).update(status="open")
    before = _everything()
    total = len(before)

    with caplog.at_level(logging.INFO, logger="chat.archive"):
        first = archive.run()
    second = archive.run()

    assert [r.month for r in first] == OLD_MONTHS
    assert all(r.rows == 2 * PER_MONTH for r in first), first
    assert second == []  # the second run finds nothing left to do
    assert _everything() == before and len(before) == total  # nothing lost, nothing doubled
    assert ArchivedMessage.objects.count() == 3 * 2 * PER_MONTH
    assert Message.objects.count() == 2 * PER_MONTH
    assert not Message.objects.filter(created_at__lt=_at(RECENT_MONTH, 1) - timedelta(days=1))
    assert list(ArchivedMonth.objects.order_by("month").values_list("month", "rows")) == [
        (month, 2 * PER_MONTH) for month in OLD_MONTHS
    ]
    moved = [r for r in caplog.records if r.getMessage() == "archive.moved"]
    assert [(r.month, r.rows) for r in moved] == [(f"{m:%Y-%m}", 2 * PER_MONTH) for m in OLD_MONTHS]
    if postgres:
        live = _live_partitions()
        assert not any(partitions.partition_name(m) in live for m in OLD_MONTHS)
        assert partitions.partition_name(RECENT_MONTH) in live
        assert partitions.partition_name(THIS_MONTH) in live
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT n.nspname, c.relname FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE i.inhparent = 'chat_archivedmessage'::regclass ORDER BY c.relname"
            )
            assert cursor.fetchall() == [
                (archive.SCHEMA, partitions.partition_name(m)) for m in OLD_MONTHS
            ]

    # History still reads: the whole long conversation, in order, from both places.
    history = archive.conversation_messages(long)
    assert [m["seq"] for m in history] == list(range(1, 4 * PER_MONTH + 1))
    assert [m["stored_in"] for m in history] == ["archive"] * 3 * PER_MONTH + ["live"] * PER_MONTH
    assert history[0]["body"] == f"{OLD_MONTHS[0]:%Y-%m} 第0条"
    # ... and the live path keeps working: a new message continues the sequence.
    posted = actions.post_visitor_message(visitor.pk, client_id="after", body="still here")
    assert posted.conversation_id == long.pk and posted.frame["seq"] == 4 * PER_MONTH + 1
    assert [f["seq"] for f in actions.messages_after(long, 4 * PER_MONTH, 10)] == [17]


def test_a_run_resumes_whatever_step_a_crash_interrupted(months, site):
    if not months:
        pytest.skip("The partition steps are PostgreSQL's; SQLite batches are one transaction.")
    _fill(site)
    detached, moved = (partitions.partition_name(m) for m in OLD_MONTHS[:2])
    with connection.cursor() as cursor:
        # One month crashed after its detach, another after moving into the archive schema.
        cursor.execute(f'ALTER TABLE chat_message DETACH PARTITION "{detached}"')
        cursor.execute(f'ALTER TABLE chat_message DETACH PARTITION "{moved}"')
        cursor.execute(f'ALTER TABLE "{moved}" SET SCHEMA {archive.SCHEMA}')

    results = archive.run()

    assert [r.month for r in results] == OLD_MONTHS
    assert ArchivedMessage.objects.count() == 3 * 2 * PER_MONTH
    assert archive.run() == []


def _hold_conversation_update(conversation: Conversation, holding, release) -> None:
    """Keep a transaction that has updated `conversation` open until `release` (or 15 s)."""
    try:
        with transaction.atomic():
            Conversation.objects.filter(pk=conversation.pk).update(status="pending")
            holding.set()
            release.wait(timeout=15)
    finally:
        connection.close()


def test_a_long_transaction_delays_the_month_not_live_posts(months, site, monkeypatch, caplog):
    if not months:
        pytest.skip("Lock waits of DETACH and DROP TABLE are PostgreSQL's.")
    long, short = _fill(site)
    before = _everything()
    monkeypatch.setattr(archive, "LOCK_TIMEOUT_MS", 100)
    monkeypatch.setattr(archive, "LOCK_ATTEMPTS", 2)
    monkeypatch.setattr(archive, "LOCK_RETRY_SECONDS", 0)
    # Given a transaction that updated a conversation and stays open, as a bulk admin action
    # would: DETACH needs a lock on chat_conversation that waits for it, and every live post
    # would queue behind that wait.
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_conversation_update, args=(short[0], holding, release))
    holder.start()
    assert holding.wait(timeout=10)
    try:
        # When the job runs, then it gives up after two short lock waits and stops there ...
        with caplog.at_level(logging.WARNING, logger="chat.archive"):
            first = archive.run()
    finally:
        release.set()
        holder.join()

    assert first == []
    timeouts = [(r.month, r.attempt) for r in caplog.records if r.msg == "archive.lock_timeout"]
    assert timeouts == [(f"{OLD_MONTHS[0]:%Y-%m}", 1), (f"{OLD_MONTHS[0]:%Y-%m}", 2)]
    # ... and the next run finishes them, half-detached or not, losing nothing.
    assert [r.month for r in archive.run()] == OLD_MONTHS
    assert _everything() == before


def test_export_mode_writes_compressed_csv_and_history_reads_from_it(months, site, settings):
    settings.GOFLY["archive"]["mode"] = "export"
    long, short = _fill(site)
    before = _everything()

    results = archive.run()
    assert archive.run() == []

    assert [r.month for r in results] == OLD_MONTHS
    for result in results:
        with gzip.open(result.location, "rt", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == result.rows == 2 * PER_MONTH
        assert rows[0].keys() == set(archive.COLUMNS)
    assert ArchivedMessage.objects.count() == 0
    assert Message.objects.count() == 2 * PER_MONTH
    if months:
        live = _live_partitions()
        assert not any(partitions.partition_name(m) in live for m in OLD_MONTHS)
    history = archive.conversation_messages(long)
    assert {(long.pk, m["seq"], m["body"]) for m in history} == {
        row for row in before if row[0] == long.pk
    }
    assert [m["stored_in"] for m in history] == ["export"] * 3 * PER_MONTH + ["live"] * PER_MONTH


def test_export_compresses_at_the_default_level_not_the_slowest(months, site, settings):
    settings.GOFLY["archive"]["mode"] = "export"
    _fill(site)

    results = archive.run()

    # Byte 8 of a gzip header (XFL) is 2 when the slowest level, 9, wrote the file; it is 0
    # for level 6, which took well under half the time (docs/performance.md, Archiving).
    for result in results:
        with open(result.location, "rb") as fh:
            assert fh.read(10)[8] == 0, result.location


def test_the_current_month_is_never_archived(months):
    with pytest.raises(archive.ArchiveError) as error:
        archive.run(after_months=0)
    assert str(error.value) == (
        "archive.after_months must be at least 1: the current month stays live."
    )


def test_the_job_refuses_to_run_inside_a_transaction(db):
    with pytest.raises(archive.ArchiveError) as error:
        archive.run()
    assert str(error.value) == "The archive job must not run inside a transaction."


def test_the_periodic_task_waits_for_the_configured_hour(months, site, settings):
    _fill(site)
    now_hour = datetime.now().astimezone().hour  # noqa: DTZ005 - the server's own clock
    settings.GOFLY["archive"]["hour"] = (now_hour + 12) % 24
    assert archive_messages() == []
    assert ArchivedMonth.objects.count() == 0

    assert archive_messages(force=True) == [f"{m:%Y-%m}:{2 * PER_MONTH}" for m in OLD_MONTHS]


def test_admins_read_and_export_archived_conversations(months, site):
    long, short = _fill(site)
    archive.run()
    admin = get_user_model().objects.create_superuser("root", password="pw-root")
    client = Client()
    client.force_login(admin)

    page = client.get(f"/admin/chat/conversation/{short[0].pk}/change/")
    assert page.status_code == 200
    assert f"{short[0].pk}/1" in page.content.decode()
    listing = client.get("/admin/chat/archivedmessage/", {"q": "第0条"})
    assert listing.status_code == 200 and "第0条" in listing.content.decode()
    assert client.get("/admin/chat/archivedmonth/").status_code == 200

    exported = client.post(
        "/admin/chat/conversation/",
        {"action": "export_json", "_selected_action": [long.pk, short[0].pk]},
    )
    assert exported.status_code == 200
    assert exported["Content-Disposition"].startswith('attachment; filename="conversations-')
    data = json.loads(exported.content)
    by_id = {c["id"]: c for c in data["conversations"]}
    assert [m["seq"] for m in by_id[long.pk]["messages"]] == list(range(1, 4 * PER_MONTH + 1))
    assert len(by_id[short[0].pk]["messages"]) == PER_MONTH

    as_csv = client.post(
        "/admin/chat/conversation/", {"action": "export_csv", "_selected_action": [long.pk]}
    )
    rows = list(csv.DictReader(as_csv.content.decode().splitlines()))
    assert len(rows) == 4 * PER_MONTH
    assert rows[0]["body"] == f"{OLD_MONTHS[0]:%Y-%m} 第0条" and rows[0]["stored_in"] == "archive"


def test_exported_month_downloads_from_admin(months, site, settings):
    settings.GOFLY["archive"]["mode"] = "export"
    _fill(site)
    archive.run()
    admin = get_user_model().objects.create_superuser("root", password="pw-root")
    client = Client()
    client.force_login(admin)
    month = ArchivedMonth.objects.order_by("month").first()

    response = client.get(f"/admin/chat/archivedmonth/{month.pk}/download/")

    assert response.status_code == 200
    body = gzip.decompress(b"".join(response.streaming_content)).decode()
    assert body.splitlines()[0] == ",".join(archive.COLUMNS)
    assert len(body.splitlines()) == 1 + 2 * PER_MONTH


def test_the_command_archives_now_and_says_what_it_moved(months, site):
    _fill(site)
    out = io.StringIO()

    call_command("gofly_archive", stdout=out)
    call_command("gofly_archive", stdout=out)

    where = "gofly_archive.chat_message_p" if months else "chat_archivedmessage"
    lines = out.getvalue().splitlines()
    assert [line.split(" -> ")[0] for line in lines] == [
        *(f"{m:%Y-%m}: {2 * PER_MONTH} messages" for m in OLD_MONTHS),
        "Nothing to archive.",
    ]
    assert all(where in line for line in lines[:3])
    with pytest.raises(CommandError) as error:
        call_command("gofly_archive", "--after-months", "0")
    assert str(error.value) == (
        "archive.after_months must be at least 1: the current month stays live."
    )
