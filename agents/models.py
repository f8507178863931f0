"""Agents: the people who answer conversations, as a profile on the Django user."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Agent(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent"
    )
    display_name = models.CharField(max_length=100)
    avatar = models.FileField(upload_to="avatars/", blank=True)
    sites = models.ManyToManyField("chat.Site", related_name="agents", blank=True)
    max_concurrent_chats = models.PositiveSmallIntegerField(
        default=10, help_text=_("How many open conversations this agent takes at once.")
    )

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()
