"""Agents: the people who answer conversations, as a profile on the Django user.

An agent's status changes only through `agents.status.change_status`, which checks the
transition table there, stores an AgentStatusEvent and broadcasts it; nothing else writes
`Agent.status`.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AgentStatus(models.TextChoices):
    ONLINE = "online", _("Online")
    AWAY = "away", _("Away")
    BUSY = "busy", _("Busy")
    OFFLINE = "offline", _("Offline")


class StatusTrigger(models.TextChoices):
    """What caused a status change."""

    CHOSEN = "chosen", _("Chosen by the agent")
    CONNECTED = "connected", _("Dashboard opened")
    DISCONNECTED = "disconnected", _("Every dashboard closed")
    IDLE = "idle", _("No activity")
    ACTIVE = "active", _("Activity again")
    ADMIN = "admin", _("Set by an administrator")


class Team(models.Model):
    """A group of agents; a site can route its conversations to one, and agents transfer to it."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="agent"
    )
    display_name = models.CharField(max_length=100)
    avatar = models.FileField(upload_to="avatars/", blank=True)
    sites = models.ManyToManyField("chat.Site", related_name="agents", blank=True)
    teams = models.ManyToManyField(Team, related_name="members", blank=True)
    max_concurrent_chats = models.PositiveSmallIntegerField(
        default=10, help_text=_("How many open conversations this agent takes at once.")
    )
    status = models.CharField(
        max_length=10, choices=AgentStatus.choices, default=AgentStatus.OFFLINE, editable=False
    )
    status_trigger = models.CharField(
        max_length=20, choices=StatusTrigger.choices, blank=True, editable=False
    )
    status_changed_at = models.DateTimeField(default=timezone.now, editable=False)
    # When a dashboard socket of this agent last showed a sign of life (opened, pinged or
    # closed); the presence sweep takes an agent offline once this is older than the grace.
    presence_seen_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_activity_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Open or pending conversations assigned to the agent; changed only by chat.assignment,
    # under this row's lock, so it never exceeds max_concurrent_chats.
    active_chats = models.PositiveSmallIntegerField(default=0, editable=False)
    last_assigned_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["status", "presence_seen_at"], name="agent_presence"),
            models.Index(fields=["status", "last_activity_at"], name="agent_activity"),
        ]

    def __str__(self) -> str:
        return self.display_name or self.user.get_username()


class AgentStatusEvent(models.Model):
    """One status change: who, from what, to what, why, caused by whom, when."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="status_events")
    from_status = models.CharField(max_length=10, choices=AgentStatus.choices)
    to_status = models.CharField(max_length=10, choices=AgentStatus.choices)
    trigger = models.CharField(max_length=20, choices=StatusTrigger.choices)
    reason = models.CharField(max_length=200, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Who caused it; empty when the system did."),
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["agent", "-created_at"], name="agent_status_event_recent")]
        verbose_name = _("agent status change")
        verbose_name_plural = _("agent status changes")

    def __str__(self) -> str:
        return f"{self.agent}: {self.from_status} → {self.to_status}"


class AgentSocket(models.Model):
    """An open dashboard socket. Several tabs of one agent are several rows, one presence."""

    channel_name = models.CharField(max_length=200, primary_key=True)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sockets")
    opened_at = models.DateTimeField(default=timezone.now)
    seen_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.channel_name


class AgentSeat(models.Model):
    """An agent's place in one routing pool (a site or a team), kept ready for routing.

    One row per agent and pool, rewritten whenever the agent's status or load changes, so that
    picking an agent is one index seek: available seats of the pool, most free first, then the
    one idle longest. The agent row stays the truth; routing re-checks it under its lock.
    """

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="seats")
    pool = models.CharField(max_length=40)
    available = models.BooleanField(default=False)
    free = models.SmallIntegerField(default=0)
    idle_since = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "pool"], name="seat_once_per_pool")]
        indexes = [
            # Partial, not a leading `available` column: Django writes `available=True` as a
            # bare `WHERE available`, which SQLite cannot match to an index column, so it read
            # and sorted every seat of the pool. A condition it matches as written, on both
            # backends; it also leaves full and offline agents out of the index.
            models.Index(
                fields=["pool", "-free", "idle_since"],
                condition=models.Q(available=True),
                name="seat_pick",
            )
        ]

    def __str__(self) -> str:
        return f"{self.agent} in {self.pool}"


SHORTCUT_PATTERN = r"^[a-z0-9_-]{1,32}$"


class CannedReply(models.Model):
    """A saved answer an agent inserts by typing `/shortcut` in the composer.

    With no owner it is shared with every agent; with no site it applies to every site. An
    agent's personal reply hides a shared one with the same shortcut (`agents.canned`).
    """

    shortcut = models.CharField(
        _("shortcut"),
        max_length=32,
        validators=[
            RegexValidator(
                SHORTCUT_PATTERN,
                _("A shortcut is 1 to 32 lowercase letters, digits, '-' or '_'."),
            )
        ],
        help_text=_("Typed after a slash in the composer, e.g. refund for /refund."),
    )
    title = models.CharField(_("title"), max_length=100)
    body = models.TextField(
        _("body"),
        max_length=4000,
        help_text=_(
            "May use {{ visitor.name }}, {{ visitor.email }}, {{ agent.name }}, "
            "{{ site.name }} and {{ conversation.id }}."
        ),
    )
    owner = models.ForeignKey(
        Agent,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="canned_replies",
        help_text=_("Empty: shared with every agent."),
    )
    site = models.ForeignKey(
        "chat.Site",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="canned_replies",
        help_text=_("Empty: offered on every site."),
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "shortcut"],
                name="canned_shortcut_once_per_owner",
                violation_error_message=_("This agent already has a reply with that shortcut."),
            ),
            # NULL owners never collide in a plain unique constraint, so shared replies need
            # their own, partial one.
            models.UniqueConstraint(
                fields=["shortcut"],
                condition=models.Q(owner__isnull=True),
                name="canned_shortcut_once_shared",
                violation_error_message=_("A shared reply with that shortcut already exists."),
            ),
        ]
        ordering = ["shortcut"]
        verbose_name = _("canned reply")
        verbose_name_plural = _("canned replies")

    def __str__(self) -> str:
        return f"/{self.shortcut}"
