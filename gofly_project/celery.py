"""The Celery app. Production runs `celery -A gofly_project worker` and `... beat`.

On embedded defaults there is no broker: `gofly_project.scheduler` runs the same periodic
tasks in-process (see PERIODIC_TASKS), so `make run` needs no Redis.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gofly_project.settings")

app = Celery("gofly")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# name -> (dotted task path, interval in seconds). Beat and the embedded scheduler read this.
PERIODIC_TASKS = {
    "clear-expired-sessions": ("chat.tasks.clear_expired_sessions", 6 * 3600),
    "ensure-message-partitions": ("chat.tasks.ensure_message_partitions", 24 * 3600),
    "relay-outbox": ("chat.tasks.relay_outbox", 5),
    "clear-outbox": ("chat.tasks.clear_outbox", 3600),
    # Hourly; the task itself acts only at the configured archive.hour.
    "archive-messages": ("chat.tasks.archive_messages", 3600),
    "sweep-presence": ("agents.tasks.sweep_presence", 10),
    "wake-snoozed": ("chat.tasks.wake_snoozed", 30),
}

# Tasks that send through the channel layer. The embedded scheduler runs these coroutines on
# the server's own event loop: the in-memory layer lives there and cannot be used from another.
IN_SERVER_LOOP = {
    "relay-outbox": "chat.delivery.relay_due",
    "sweep-presence": "agents.tasks.sweep_and_relay",
    "wake-snoozed": "chat.tasks.wake_snoozed_and_relay",
}

app.conf.beat_schedule = {
    name: {"task": task, "schedule": float(interval)}
    for name, (task, interval) in PERIODIC_TASKS.items()
}
