"""Monthly range partitions of the message table on PostgreSQL.

Why a small manager of our own rather than django-postgres-extra or pg_partman is written in
docs/architecture.md. Partitions cover whole UTC months, `[first day 00:00, next first day
00:00)`, so their bounds never depend on the hour a job runs. There is no default partition: a
row outside every partition fails loudly instead of landing somewhere nobody looks.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

TABLE = "chat_message"
# Serialises partition creation between processes (two beat runs, a migrate and a worker).
ADVISORY_LOCK_KEY = 7_316_001


def month_start(day: date) -> date:
    return date(day.year, day.month, 1)


def add_months(month: date, months: int) -> date:
    index = month.year * 12 + (month.month - 1) + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{TABLE}_p{month.year:04d}_{month.month:02d}"


def month_bound(month: date) -> str:
    """The timestamp where `month` begins, midnight UTC, as partition bounds spell it."""
    return datetime(month.year, month.month, 1, tzinfo=UTC).isoformat()


def is_partitioned(connection: BaseDatabaseWrapper) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.relname = %s AND c.relnamespace = 'public'::regnamespace",
            [TABLE],
        )
        return cursor.fetchone() is not None


def existing_partitions(connection: BaseDatabaseWrapper) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT child.relname FROM pg_inherits i "
            "JOIN pg_class parent ON parent.oid = i.inhparent "
            "JOIN pg_class child ON child.oid = i.inhrelid "
            "WHERE parent.relname = %s ORDER BY child.relname",
            [TABLE],
        )
        return [row[0] for row in cursor.fetchall()]


def create_partition(connection: BaseDatabaseWrapper, month: date) -> bool:
    """Create the partition for `month` unless it exists; return whether it was created.

    The caller holds the advisory lock, so checking first and then creating cannot race.
    """
    name = partition_name(month)
    if name in existing_partitions(connection):
        return False
    with connection.cursor() as cursor:
        cursor.execute(
            f'CREATE TABLE "{name}" PARTITION OF "{TABLE}" '
            f"FOR VALUES FROM ('{month_bound(month)}') TO ('{month_bound(add_months(month, 1))}')"
        )
    logger.info("partitions.created", extra={"partition": name})
    return True


def ensure_partitions(
    connection: BaseDatabaseWrapper, today: date | None = None, ahead: int = 1
) -> list[str]:
    """Make sure this month's partition and the next `ahead` months' exist.

    Safe to run any number of times, from several processes at once. Does nothing where the
    table is not partitioned (SQLite). Returns the names it created.
    """
    if not is_partitioned(connection):
        return []
    first = month_start(today or datetime.now(UTC).date())
    created = []
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
        for offset in range(ahead + 1):
            month = add_months(first, offset)
            if create_partition(connection, month):
                created.append(partition_name(month))
    return created
