"""Trigram indexes for substring search over message bodies (issue 4, chat/search.py).

PostgreSQL only; nothing happens on SQLite, where search reads the table.

The index is on `UPPER(body)` because that is what Django's `icontains` compares on PostgreSQL
(`UPPER(body) LIKE UPPER(%s)`): an index on plain `body` would not be used by it.
tests/test_search.py asserts the index name in the plan.

Both tables are partitioned: an index created on the parent is created on every partition and
on every partition made later (`chat.partitions.create_partition`). The archive table gets the
same index under the same definition, so that attaching a month detached from chat_message
(chat/archive.py) reuses the partition's index instead of building another.

On a large existing table the build holds a lock that stops writes to chat_message until every
partition's index is built: 1.4 to 6.3 s for 200,000 messages (docs/architecture.md, Search).
TODO(gofly): build per partition with CREATE INDEX CONCURRENTLY and attach, for installs with
millions of messages, before the first such install upgrades.
"""

from django.db import migrations

INDEXES = [
    "CREATE INDEX IF NOT EXISTS chat_message_body_trgm "
    "ON chat_message USING gin (UPPER(body) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS chat_archivedmessage_body_trgm "
    "ON chat_archivedmessage USING gin (UPPER(body) gin_trgm_ops)",
]


def create_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for statement in INDEXES:
        schema_editor.execute(statement)


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # The extension stays: something else may use it, and dropping it is the admin's call.
    schema_editor.execute("DROP INDEX IF EXISTS chat_message_body_trgm")
    schema_editor.execute("DROP INDEX IF EXISTS chat_archivedmessage_body_trgm")


class Migration(migrations.Migration):
    dependencies = [("chat", "0010_labels")]

    operations = [migrations.RunPython(create_indexes, drop_indexes, elidable=False)]
