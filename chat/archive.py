"""Moving old messages out of the live table, and reading them back.

Once a month has ended more than `archive.after_months` months ago its messages are archived:

- PostgreSQL, mode "schema": the month's partition is detached from chat_message with `DETACH
  PARTITION … CONCURRENTLY` (writers to the current month are not blocked, except for at most
  LOCK_TIMEOUT_MS at a time, see there), moved into the `gofly_archive` schema and attached to
  chat_archivedmessage, so the rows never get copied.
- PostgreSQL, mode "export": the detached partition is written to a gzip-compressed CSV file in
  `archive.directory`, then dropped.
- SQLite (embedded defaults): the rows are copied into chat_archivedmessage, or exported like
  above, and deleted from chat_message in batches.

Each month is recorded in ArchivedMonth. Every step looks at where the month's rows are before
acting, so a second run does nothing and a run after a crash finishes what the first began.
The current month is never touched, whatever the configuration says.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.functions import TruncMonth
from django.utils import timezone

from chat import partitions
from chat.models import ArchivedMessage, ArchivedMonth, Conversation, Message

logger = logging.getLogger(__name__)

SCHEMA = "gofly_archive"
ARCHIVE_TABLE = "chat_archivedmessage"
# Held for a whole run so two runs (beat fired twice, a manual run) never interleave steps.
ADVISORY_LOCK_KEY = 7_316_002
BATCH_SIZE = 2000
# DETACH and its FINALIZE lock the tables a partition's foreign keys point at
# (chat_conversation, chat_upload, auth_user) in SHARE ROW EXCLUSIVE mode, and DROP TABLE
# (export mode) in ACCESS EXCLUSIVE mode, which stops reads too. While one of them waits behind
# a long transaction, every live post (it updates its conversation) queues behind it
# (bench/archive.py: one post waited 3.0 s behind a transaction held open for 3 s). So each
# statement gives up after LOCK_TIMEOUT_MS, and the month is tried again LOCK_RETRY_SECONDS
# later, from the step it reached; the timeout also ends DETACH's harmless wait for long
# readers of chat_message, which the retries absorb. 0 waits for ever.
LOCK_TIMEOUT_MS = 500
LOCK_ATTEMPTS = 5
LOCK_RETRY_SECONDS = 5.0
_LOCK_NOT_AVAILABLE = "55P03"
# zlib's default level. GzipFile's own default, 9, spent more than twice as long as 6 on a
# month's CSV and made the file only about 1 % smaller (docs/performance.md, Archiving).
EXPORT_GZIP_LEVEL = 6
COLUMNS = [
    "id",
    "created_at",
    "conversation_id",
    "seq",
    "sender_kind",
    "sender_user_id",
    "body",
    "content_type",
    "attachment_id",
    "client_id",
]
_PARTITION_NAME = re.compile(r"^chat_message_p(\d{4})_(\d{2})$")


class ArchiveError(Exception):
    """The archive job was asked to do something it must not do."""


@dataclass(frozen=True)
class ArchivedResult:
    month: date
    mode: str
    rows: int
    location: str


def _config() -> dict[str, Any]:
    return settings.GOFLY["archive"]


def cutoff_month(today: date, after_months: int) -> date:
    """The first month that stays live: months before it are archived."""
    if after_months < 1:
        raise ArchiveError("archive.after_months must be at least 1: the current month stays live.")
    return partitions.add_months(partitions.month_start(today), -after_months)


def export_directory() -> Path:
    configured = _config()["directory"]
    return Path(configured) if configured else Path(settings.GOFLY["data_dir"]) / "archive"


def export_path(month: date) -> Path:
    return export_directory() / f"messages-{month:%Y-%m}.csv.gz"


def is_due(now: datetime | None = None) -> bool:
    """Whether the configured low-traffic hour has come (server time zone)."""
    return timezone.localtime(now).hour == _config()["hour"]


def run(
    today: date | None = None,
    *,
    after_months: int | None = None,
    mode: str | None = None,
    db: BaseDatabaseWrapper = connection,
) -> list[ArchivedResult]:
    """Archive every month older than the cutoff; return what this run moved or finished."""
    today = today or datetime.now(UTC).date()
    after_months = _config()["after_months"] if after_months is None else after_months
    mode = mode or _config()["mode"]
    if mode not in ArchivedMonth.Mode.values:
        raise ArchiveError(f"archive.mode must be 'schema' or 'export', not {mode!r}.")
    cutoff = cutoff_month(today, after_months)
    if db.in_atomic_block:
        # DETACH … CONCURRENTLY cannot run inside a transaction, and a batch must commit alone.
        raise ArchiveError("The archive job must not run inside a transaction.")
    if partitions.is_partitioned(db):
        results = _run_partitions(db, cutoff, mode)
    else:
        results = [_archive_rows(month, mode) for month in _row_months(cutoff)]
    for result in results:
        logger.info(
            "archive.moved",
            extra={
                "month": f"{result.month:%Y-%m}",
                "mode": result.mode,
                "rows": result.rows,
                "location": result.location,
            },
        )
    return results


# ---------------------------------------------------------------------------------------------
# PostgreSQL: whole partitions


def _month_of(name: str) -> date | None:
    match = _PARTITION_NAME.match(name)
    return date(int(match[1]), int(match[2]), 1) if match else None


def _tables(db: BaseDatabaseWrapper) -> dict[str, tuple[str, str | None, bool]]:
    """Every monthly message table: name -> (schema, parent it is attached to, detach pending)."""
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, n.nspname, parent.relname, COALESCE(i.inhdetachpending, false) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "LEFT JOIN pg_inherits i ON i.inhrelid = c.oid "
            "LEFT JOIN pg_class parent ON parent.oid = i.inhparent "
            "WHERE c.relkind = 'r' AND c.relname LIKE 'chat\\_message\\_p%%' "
            "AND n.nspname IN ('public', %s)",
            [SCHEMA],
        )
        return {name: (schema, parent, pending) for name, schema, parent, pending in cursor}


def _run_partitions(db: BaseDatabaseWrapper, cutoff: date, mode: str) -> list[ArchivedResult]:
    with db.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        if not cursor.fetchone()[0]:
            logger.info("archive.busy")
            return []
    try:
        results = []
        for name, (schema, parent, _pending) in sorted(_tables(db).items()):
            month = _month_of(name)
            if month is None or month >= cutoff:
                continue
            if schema == SCHEMA and parent == ARCHIVE_TABLE and _catalogued(month):
                continue
            result = _archive_partition_patiently(db, month, mode)
            if result is None:
                # A partition left pending detach stops every other concurrent detach on
                # chat_message until it is finalised; the next run starts with it.
                break
            results.append(result)
        return results
    finally:
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])


def _archive_partition_patiently(
    db: BaseDatabaseWrapper, month: date, mode: str
) -> ArchivedResult | None:
    """Archive one month, never holding up live writers longer than LOCK_TIMEOUT_MS at a time.

    Returns None when the month is still locked out after LOCK_ATTEMPTS tries; the next run
    resumes it. If its detach had begun, the month's rows are in neither chat_message nor the
    archive until then (a partition pending detach is hidden from new queries).
    """
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        try:
            with _lock_timeout(db):
                return _archive_partition(db, month, mode)
        except OperationalError as error:
            if getattr(error.__cause__, "pgcode", None) != _LOCK_NOT_AVAILABLE:
                raise
            logger.warning(
                "archive.lock_timeout",
                extra={"month": f"{month:%Y-%m}", "attempt": attempt, "of": LOCK_ATTEMPTS},
            )
        if attempt < LOCK_ATTEMPTS:
            time.sleep(LOCK_RETRY_SECONDS)
    return None


@contextmanager
def _lock_timeout(db: BaseDatabaseWrapper) -> Iterator[None]:
    with db.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_MS)}")
    try:
        yield
    finally:
        with db.cursor() as cursor:
            cursor.execute("RESET lock_timeout")


def _catalogued(month: date) -> bool:
    return ArchivedMonth.objects.filter(month=month).exists()


def _archive_partition(db: BaseDatabaseWrapper, month: date, mode: str) -> ArchivedResult:
    name = partitions.partition_name(month)
    bounds = (
        f"FROM ('{partitions.month_bound(month)}') "
        f"TO ('{partitions.month_bound(partitions.add_months(month, 1))}')"
    )
    schema, parent, pending = _tables(db)[name]
    with db.cursor() as cursor:
        if parent == partitions.TABLE and pending:
            # A run died during the concurrent detach; FINALIZE completes it.
            cursor.execute(f'ALTER TABLE "{partitions.TABLE}" DETACH PARTITION "{name}" FINALIZE')
        elif parent == partitions.TABLE:
            cursor.execute(
                f'ALTER TABLE "{partitions.TABLE}" DETACH PARTITION "{name}" CONCURRENTLY'
            )
            logger.info("archive.detached", extra={"partition": name})
        if mode == ArchivedMonth.Mode.EXPORT and schema == "public":
            return _export_partition(db, month, name)
        if schema == "public":
            cursor.execute(f'ALTER TABLE "{name}" SET SCHEMA {SCHEMA}')
        if parent != ARCHIVE_TABLE:
            cursor.execute(
                f'ALTER TABLE "{ARCHIVE_TABLE}" ATTACH PARTITION {SCHEMA}."{name}" '
                f"FOR VALUES {bounds}"
            )
        cursor.execute(f'SELECT count(*) FROM {SCHEMA}."{name}"')
        rows = cursor.fetchone()[0]
    location = f"{SCHEMA}.{name}"
    _record(month, ArchivedMonth.Mode.SCHEMA, rows, location)
    return ArchivedResult(month, ArchivedMonth.Mode.SCHEMA, rows, location)


def _export_partition(db: BaseDatabaseWrapper, month: date, name: str) -> ArchivedResult:
    columns = ", ".join(COLUMNS)
    path = export_path(month)

    def copy_out(stream: io.RawIOBase) -> None:
        with db.cursor() as cursor:
            cursor.copy_expert(
                f'COPY (SELECT {columns} FROM "{name}" ORDER BY conversation_id, seq) '
                "TO STDOUT WITH (FORMAT csv, HEADER)",
                stream,
            )

    rows = _write_export(path, copy_out)
    with transaction.atomic(using=db.alias), db.cursor() as cursor:
        cursor.execute(f'DROP TABLE "{name}"')
        _record(month, ArchivedMonth.Mode.EXPORT, rows, str(path))
    return ArchivedResult(month, ArchivedMonth.Mode.EXPORT, rows, str(path))


# ---------------------------------------------------------------------------------------------
# SQLite (and any unpartitioned table): rows


def _month_range(month: date) -> tuple[datetime, datetime]:
    start = datetime(month.year, month.month, 1, tzinfo=UTC)
    end_month = partitions.add_months(month, 1)
    return start, datetime(end_month.year, end_month.month, 1, tzinfo=UTC)


def _row_months(cutoff: date) -> list[date]:
    start, _ = _month_range(cutoff)
    months = (
        Message.objects.filter(created_at__lt=start)
        .annotate(month=TruncMonth("created_at", tzinfo=UTC))
        .values_list("month", flat=True)
        .distinct()
    )
    return sorted({partitions.month_start(value.date()) for value in months})


def _archive_rows(month: date, mode: str) -> ArchivedResult:
    start, end = _month_range(month)
    live = Message.objects.filter(created_at__gte=start, created_at__lt=end)
    if mode == ArchivedMonth.Mode.EXPORT:
        path = export_path(month)

        def write_rows(stream: io.RawIOBase) -> None:
            text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
            writer = csv.writer(text)
            writer.writerow(COLUMNS)
            for row in live.order_by("conversation_id", "seq").values_list(*COLUMNS):
                writer.writerow([_csv_value(value) for value in row])
            text.flush()
            text.detach()

        rows = _write_export(path, write_rows)
        with transaction.atomic():
            live.delete()
            _record(month, ArchivedMonth.Mode.EXPORT, rows, str(path))
        return ArchivedResult(month, ArchivedMonth.Mode.EXPORT, rows, str(path))

    # Batches keep each transaction short; a crash between two leaves whole rows in one place
    # or the other, and the next run carries on (ignore_conflicts covers a repeated copy).
    while True:
        with transaction.atomic():
            batch = list(live.order_by("id")[:BATCH_SIZE])
            if not batch:
                break
            ArchivedMessage.objects.bulk_create(
                [ArchivedMessage(**{c: getattr(m, c) for c in COLUMNS}) for m in batch],
                ignore_conflicts=True,
            )
            Message.objects.filter(pk__in=[m.pk for m in batch]).delete()
    rows = ArchivedMessage.objects.filter(created_at__gte=start, created_at__lt=end).count()
    _record(month, ArchivedMonth.Mode.SCHEMA, rows, ARCHIVE_TABLE)
    return ArchivedResult(month, ArchivedMonth.Mode.SCHEMA, rows, ARCHIVE_TABLE)


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return "" if value is None else value


# ---------------------------------------------------------------------------------------------
# Shared steps


def _write_export(path: Path, write: Any) -> int:
    """Write a month's CSV through `write(stream)` into `path`, atomically; return data rows.

    The file appears under its name only once complete and on disk, so a crash leaves either
    no file or a whole one, and the rows are dropped from the database only after that.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as raw:
        with gzip.GzipFile(
            fileobj=raw, mode="wb", mtime=0, compresslevel=EXPORT_GZIP_LEVEL
        ) as compressed:
            write(compressed)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(partial, path)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as check:
        return sum(1 for _ in csv.reader(check)) - 1


def _record(month: date, mode: str, rows: int, location: str) -> None:
    ArchivedMonth.objects.update_or_create(
        month=month,
        defaults={"mode": mode, "rows": rows, "location": location, "archived_at": timezone.now()},
    )


# ---------------------------------------------------------------------------------------------
# Reading


def _exported_rows(conversation: Conversation) -> Iterator[dict[str, Any]]:
    first = partitions.month_start(conversation.created_at.astimezone(UTC).date())
    last_at = conversation.last_message_at or conversation.created_at
    last = partitions.month_start(last_at.astimezone(UTC).date())
    months = ArchivedMonth.objects.filter(
        mode=ArchivedMonth.Mode.EXPORT, month__gte=first, month__lte=last
    )
    wanted = str(conversation.pk)
    for archived in months:
        # Reading a month's file to find one conversation is slow, but only an admin looking
        # at an old conversation pays for it.
        with gzip.open(archived.location, "rt", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                if row["conversation_id"] == wanted:
                    yield row


def conversation_messages(conversation: Conversation) -> list[dict[str, Any]]:
    """All of a conversation's messages, live and archived, in seq order, as plain values."""
    by_seq: dict[int, dict[str, Any]] = {}
    fields = [c for c in COLUMNS if c != "conversation_id"]
    for model, where in ((ArchivedMessage, "archive"), (Message, "live")):
        for values in model.objects.filter(conversation=conversation).values(*fields):
            values["created_at"] = values["created_at"].isoformat()
            values["attachment_id"] = values["attachment_id"] and str(values["attachment_id"])
            by_seq[values["seq"]] = {**values, "stored_in": where}
    for row in _exported_rows(conversation):
        seq = int(row["seq"])
        by_seq.setdefault(
            seq,
            {
                "id": int(row["id"]),
                "created_at": datetime.fromisoformat(row["created_at"]).isoformat(),
                "seq": seq,
                "sender_kind": row["sender_kind"],
                "sender_user_id": int(row["sender_user_id"]) if row["sender_user_id"] else None,
                "body": row["body"],
                "content_type": row["content_type"],
                "attachment_id": row["attachment_id"] or None,
                "client_id": row["client_id"],
                "stored_in": "export",
            },
        )
    return [by_seq[seq] for seq in sorted(by_seq)]
