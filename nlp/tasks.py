"""Celery tasks of the intent bot."""

from __future__ import annotations

from celery import shared_task

from nlp import training


# acks_late: a worker that dies while training leaves the task to run again; the version row
# is still in state `training`, so the rerun trains that same row (`training.train_version`).
@shared_task(
    name="nlp.tasks.train_version",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def train_version(version_id: int, force: bool = False) -> str:
    """Train one requested model version; see `nlp.training.request_training`."""
    return training.train_version(version_id, force=force).state
