"""Periodic and background tasks of the chat app."""

from celery import shared_task
from celery.utils.log import get_task_logger
from django.contrib.sessions.models import Session
from django.utils import timezone

logger = get_task_logger(__name__)


@shared_task(name="chat.tasks.clear_expired_sessions")
def clear_expired_sessions() -> int:
    """Delete expired dashboard sessions; safe to run twice."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    logger.info("sessions.cleared", extra={"deleted": deleted})
    return deleted
