"""The archive (issue 3): a catalogue of archived months and the archived message table.

On SQLite the archived message table is an ordinary table. On PostgreSQL it is partitioned by
month like chat_message, with the same columns and indexes, so that a partition detached from
chat_message can be attached to it unchanged (chat/archive.py); its partitions live in the
`gofly_archive` schema. It has no foreign keys of its own: each attached partition keeps the
ones it had in the live table. Its CHECK constraint bears the live table's name because
PostgreSQL matches a partition's inherited CHECK constraints to the parent's by name.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

ARCHIVE_SCHEMA = "gofly_archive"

CREATE_PARTITIONED = """
CREATE TABLE chat_archivedmessage (
    id bigint NOT NULL,
    created_at timestamp with time zone NOT NULL,
    seq bigint NOT NULL CONSTRAINT chat_message_seq_check CHECK (seq >= 0),
    sender_kind varchar(10) NOT NULL,
    body text NOT NULL,
    content_type varchar(10) NOT NULL,
    client_id varchar(64) NOT NULL,
    conversation_id bigint NOT NULL,
    sender_user_id integer NULL,
    attachment_id uuid NULL,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at)
"""

# The same indexes as chat_message's, so attaching a detached partition reuses its indexes.
INDEXES = [
    "CREATE INDEX archived_conversation_seq ON chat_archivedmessage (conversation_id, seq)",
    "CREATE INDEX chat_archivedmessage_client ON chat_archivedmessage (conversation_id, client_id)",
    "CREATE INDEX chat_archivedmessage_sender_user ON chat_archivedmessage (sender_user_id)",
    "CREATE INDEX chat_archivedmessage_attachment ON chat_archivedmessage (attachment_id)",
]


def create_archive_table(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.create_model(apps.get_model("chat", "ArchivedMessage"))
        return
    schema_editor.execute(f"CREATE SCHEMA IF NOT EXISTS {ARCHIVE_SCHEMA}")
    schema_editor.execute(CREATE_PARTITIONED)
    for statement in INDEXES:
        schema_editor.execute(statement)


def drop_archive_table(apps, schema_editor):
    schema_editor.delete_model(apps.get_model("chat", "ArchivedMessage"))


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0004_outbox"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ArchivedMonth",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("month", models.DateField(help_text="First day of the month, UTC.", unique=True)),
                (
                    "mode",
                    models.CharField(
                        choices=[("schema", "Archive table"), ("export", "Compressed file")],
                        max_length=10,
                    ),
                ),
                ("rows", models.PositiveBigIntegerField()),
                (
                    "location",
                    models.CharField(
                        help_text="The archive table, or the path of the compressed file.",
                        max_length=500,
                    ),
                ),
                ("archived_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "verbose_name": "archived month",
                "verbose_name_plural": "archived months",
                "ordering": ["-month"],
            },
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ArchivedMessage",
                    fields=[
                        ("id", models.BigIntegerField(primary_key=True, serialize=False)),
                        ("created_at", models.DateTimeField()),
                        ("seq", models.PositiveBigIntegerField()),
                        (
                            "sender_kind",
                            models.CharField(
                                choices=[
                                    ("visitor", "Visitor"),
                                    ("agent", "Agent"),
                                    ("bot", "Bot"),
                                    ("system", "System"),
                                ],
                                max_length=10,
                            ),
                        ),
                        ("body", models.TextField(blank=True)),
                        (
                            "content_type",
                            models.CharField(
                                choices=[("text", "Text"), ("image", "Image"), ("file", "File")],
                                max_length=10,
                            ),
                        ),
                        ("client_id", models.CharField(max_length=64)),
                        (
                            "attachment",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to="chat.upload",
                            ),
                        ),
                        (
                            "conversation",
                            models.ForeignKey(
                                db_index=False,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="archived_messages",
                                to="chat.conversation",
                            ),
                        ),
                        (
                            "sender_user",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={
                        "verbose_name": "archived message",
                        "verbose_name_plural": "archived messages",
                        "indexes": [
                            models.Index(
                                fields=["conversation", "seq"], name="archived_conversation_seq"
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.RunPython(create_archive_table, drop_archive_table, elidable=False),
    ]
