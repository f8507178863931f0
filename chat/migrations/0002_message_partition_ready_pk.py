"""Make the message table's primary key (id, created_at) on PostgreSQL.

PostgreSQL requires a partitioned table's primary key to contain the partition column, so the
table is made ready now while it is small. Django keeps seeing `id` as the primary key (the
identity column still makes it unique), which keeps admin and DRF working. SQLite is never
partitioned and keeps its plain key.
"""

from django.db import migrations

FORWARD = [
    "ALTER TABLE chat_message DROP CONSTRAINT chat_message_pkey",
    "ALTER TABLE chat_message ADD CONSTRAINT chat_message_pkey PRIMARY KEY (id, created_at)",
]
BACKWARD = [
    "ALTER TABLE chat_message DROP CONSTRAINT chat_message_pkey",
    "ALTER TABLE chat_message ADD CONSTRAINT chat_message_pkey PRIMARY KEY (id)",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for statement in statements:
            schema_editor.execute(statement)

    return run


class Migration(migrations.Migration):
    dependencies = [("chat", "0001_initial")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD))]
