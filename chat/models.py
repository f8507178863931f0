"""Sites, visitors, conversations and their messages.

On PostgreSQL the message table is range-partitioned by month (migrations 0002 and 0003): its
primary key in the database is `(id, created_at)` and no foreign key points into it.
Read positions and replies therefore refer to messages by `seq`, never by a foreign key.
"""

from __future__ import annotations

import ipaddress
import secrets
import uuid
import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def new_site_key() -> str:
    return secrets.token_urlsafe(16)


def new_visitor_id() -> str:
    return uuid.uuid4().hex


def new_webhook_secret() -> str:
    return secrets.token_hex(32)


def validate_time_zone(value: str) -> None:
    """Accept an IANA time zone name that this server's tz database knows."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            _("“%(value)s” is not a time zone name; use one like Europe/Paris or Asia/Shanghai."),
            params={"value": value},
        ) from None


def validate_business_hours(value: object) -> None:
    # Imported here: chat.hours reads the models' Site for its type hints.
    from chat.hours import check_weekly_hours

    check_weekly_hours(value)


def validate_ip_network(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(
            _(
                "“%(value)s” is not an IP address or network; write one like 203.0.113.7, "
                "203.0.113.0/24 or 2001:db8::/32."
            ),
            params={"value": value},
        ) from None


class Site(models.Model):
    """One customer website or inbox; the widget finds it by its public `key`."""

    key = models.CharField(max_length=64, unique=True, default=new_site_key)
    name = models.CharField(max_length=200)
    allowed_origins = models.TextField(
        blank=True,
        help_text=_("One origin per line, e.g. https://shop.example.com. Empty allows any page."),
    )
    widget_title = models.CharField(max_length=100, default="Chat with us")
    widget_color = models.CharField(max_length=7, default="#1f6feb")
    welcome_message = models.TextField(blank=True, default="Hi! How can we help?")
    default_language = models.CharField(max_length=10, choices=settings.LANGUAGES, default="en")
    team = models.ForeignKey(
        "agents.Team",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sites",
        help_text=_("Route this site's conversations to this team instead of all its agents."),
    )
    typing_preview = models.BooleanField(
        default=True, help_text=_("Show agents what the visitor is typing before it is sent.")
    )
    webhook_url = models.URLField(
        _("webhook URL"),
        max_length=500,
        blank=True,
        # urllib would also open file:// and ftp:// URLs; a webhook is only ever sent over HTTP.
        validators=[URLValidator(schemes=["http", "https"])],
        help_text=_(
            "Every new message and status change is POSTed here as JSON. Empty turns webhooks off."
        ),
    )
    webhook_secret = models.CharField(
        _("webhook secret"),
        max_length=128,
        default=new_webhook_secret,
        help_text=_(
            "Signs each webhook (X-Gofly-Signature: HMAC-SHA256 of the body). "
            "Replace it to revoke the old one."
        ),
    )
    created_at = models.DateTimeField(default=timezone.now)
    # Below created_at on purpose: in the class body this name hides django.utils.timezone.
    timezone = models.CharField(
        _("time zone"),
        max_length=64,
        default="UTC",
        validators=[validate_time_zone],
        help_text=_("The time zone business hours are written in, e.g. Asia/Shanghai."),
    )
    business_hours = models.JSONField(
        _("business hours"),
        default=dict,
        blank=True,
        validators=[validate_business_hours],
        help_text=_(
            'Opening spans per weekday, e.g. {"mon": [["09:00", "18:00"]], "sat": []}. '
            "A day left out is closed; empty ({}) means always open."
        ),
    )

    def __str__(self) -> str:
        return self.name

    def origin_allowed(self, origin: str | None) -> bool:
        allowed = [line.strip().rstrip("/") for line in self.allowed_origins.splitlines()]
        allowed = [line for line in allowed if line]
        if not allowed:
            return True
        return origin is not None and origin.rstrip("/") in allowed


class Visitor(models.Model):
    """Someone chatting from a site; `public_id` is the stable id the browser keeps."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="visitors")
    public_id = models.CharField(max_length=64, default=new_visitor_id)
    name = models.CharField(max_length=200, blank=True)
    email = models.EmailField(blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    referrer = models.TextField(blank=True)
    page_url = models.TextField(blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["site", "public_id"], name="visitor_unique_per_site")
        ]

    def __str__(self) -> str:
        return self.name or f"Visitor {self.public_id[:8]}"


class Label(models.Model):
    """A tag agents put on conversations of a site, e.g. "refund" or "vip"."""

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=32)
    color = models.CharField(max_length=7, default="#667085")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["site", "name"], name="label_once_per_site")]

    def __str__(self) -> str:
        return self.name


class Block(models.Model):
    """A refusal of live chat to one visitor, or to every visitor from an IP address or network.

    Unblocking is deleting the row; an expired block stays as a record but no longer applies.
    """

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="blocks")
    visitor = models.ForeignKey(
        Visitor, null=True, blank=True, on_delete=models.CASCADE, related_name="blocks"
    )
    ip_network = models.CharField(
        _("IP address or network"),
        max_length=64,
        blank=True,
        validators=[validate_ip_network],
        help_text=_("One address (203.0.113.7) or a network (203.0.113.0/24, 2001:db8::/32)."),
    )
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text=_("Empty: the block lasts until it is deleted.")
    )

    class Meta:
        indexes = [models.Index(fields=["site", "expires_at"], name="block_by_site")]

    def __str__(self) -> str:
        return self.ip_network or str(self.visitor)

    def clean(self) -> None:
        if (self.visitor_id is None) == (not self.ip_network):
            raise ValidationError(
                _("Block either a visitor or an IP address or network, not both.")
            )
        if self.ip_network:
            # Stored in its canonical form (host bits cleared), which is what is matched.
            try:
                network = ipaddress.ip_network(self.ip_network.strip(), strict=False)
            except ValueError:
                return  # the field's own validator reports it
            self.ip_network = str(network)
        if self.visitor_id is not None and self.site_id and self.visitor.site_id != self.site_id:
            raise ValidationError(_("That visitor belongs to another site."))


class Conversation(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        PENDING = "pending", _("Pending")
        SNOOZED = "snoozed", _("Snoozed")
        RESOLVED = "resolved", _("Resolved")

    class Channel(models.TextChoices):
        WEB = "web", _("Website")
        API = "api", _("API")

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="conversations")
    visitor = models.ForeignKey(Visitor, on_delete=models.CASCADE, related_name="conversations")
    channel = models.CharField(max_length=20, choices=Channel.choices, default=Channel.WEB)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
    )
    created_at = models.DateTimeField(default=timezone.now)
    first_agent_reply_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    labels = models.ManyToManyField(Label, blank=True, related_name="conversations")
    # A snoozed conversation reopens by itself at this time, or earlier on a visitor message.
    snoozed_until = models.DateTimeField(null=True, blank=True, db_index=True)
    rating = models.PositiveSmallIntegerField(null=True, blank=True)
    rating_comment = models.TextField(blank=True)
    rated_at = models.DateTimeField(null=True, blank=True)
    last_seq = models.PositiveBigIntegerField(default=0)
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_message_preview = models.CharField(max_length=200, blank=True)
    agent_read_seq = models.PositiveBigIntegerField(default=0)
    visitor_read_seq = models.PositiveBigIntegerField(default=0)
    # The team responsible, when the site routes to one or the conversation was transferred.
    team = models.ForeignKey(
        "agents.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Set while the conversation waits in its line for an agent (chat.assignment).
    waiting_since = models.DateTimeField(null=True, blank=True)
    # The site's intent bot answers (nlp): set when the conversation opens or reopens on a site
    # with a bot, cleared when the bot hands over. Routing leaves such a conversation alone.
    bot_active = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["site", "status", "-last_message_at"]),
            models.Index(fields=["site", "waiting_since"], name="conversation_line"),
            models.Index(fields=["team", "waiting_since"], name="conversation_team_line"),
            models.Index(fields=["assignee", "status"], name="conversation_assignee"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.visitor}"


class Upload(models.Model):
    """A file sent in a conversation, stored before the message that refers to it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="uploads")
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.CASCADE, related_name="uploads"
    )
    visitor = models.ForeignKey(Visitor, null=True, blank=True, on_delete=models.CASCADE)
    agent_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    file = models.FileField(upload_to="uploads/%Y/%m/")
    original_name = models.CharField(max_length=255)
    content_type = models.CharField(max_length=100)
    size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.original_name


class Message(models.Model):
    class SenderKind(models.TextChoices):
        VISITOR = "visitor", _("Visitor")
        AGENT = "agent", _("Agent")
        BOT = "bot", _("Bot")
        SYSTEM = "system", _("System")

    class ContentType(models.TextChoices):
        TEXT = "text", _("Text")
        IMAGE = "image", _("Image")
        FILE = "file", _("File")

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now)
    # No separate index: the (conversation, seq) unique constraint serves every lookup by
    # conversation, and history queries use it in seq order.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    sender_kind = models.CharField(max_length=10, choices=SenderKind.choices)
    sender_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    body = models.TextField(blank=True)
    content_type = models.CharField(
        max_length=10, choices=ContentType.choices, default=ContentType.TEXT
    )
    attachment = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client_id = models.CharField(max_length=64)

    class Meta:
        # Enforced on SQLite only: on PostgreSQL the table is partitioned by month (migration
        # 0003) and these are plain indexes there. seq and client_id stay unique through the
        # conversation row lock chat.actions takes before every insert.
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="message_seq_unique"),
            models.UniqueConstraint(
                fields=["conversation", "client_id"], name="message_client_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.conversation_id}:{self.seq}"


class OutboxEvent(models.Model):
    """An effect of a stored change outside its own row, written in the same transaction.

    Two kinds: `channels`, a fan-out to channel-layer groups (`sends`: a list of [group, event]),
    and `webhook`, one HTTP POST of `payload` to the site's webhook URL, identified to the
    receiver by `delivery_id`. A relay sends each row right after the commit; a periodic job
    retries what is still pending.
    """

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        DONE = "done", _("Done")
        FAILED = "failed", _("Failed")

    class Kind(models.TextChoices):
        CHANNELS = "channels", _("Channel layer")
        WEBHOOK = "webhook", _("Webhook")
        BOT = "bot", _("Bot answer")

    created_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CHANNELS)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    sends = models.JSONField(default=list, blank=True)
    # Webhook rows only. The URL and secret are read from the site at each try, so a corrected
    # URL or a replaced secret applies to the retries of rows already written.
    site = models.ForeignKey(
        Site, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    payload = models.JSONField(null=True, blank=True)
    delivery_id = models.UUIDField(null=True, blank=True, unique=True, editable=False)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    last_error = models.TextField(blank=True)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"outbox #{self.pk} {self.kind} ({self.status})"


class ArchivedMessage(models.Model):
    """A message moved out of the live table by the archive job (`chat.archive`).

    Same columns as Message. On PostgreSQL this is a partitioned table whose monthly partitions
    are the live table's old partitions, detached and moved into the `gofly_archive` schema
    (migration 0005); on SQLite it is a plain table the job copies rows into.
    """

    id = models.BigIntegerField(primary_key=True)
    created_at = models.DateTimeField()
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="archived_messages", db_index=False
    )
    seq = models.PositiveBigIntegerField()
    sender_kind = models.CharField(max_length=10, choices=Message.SenderKind.choices)
    sender_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    body = models.TextField(blank=True)
    content_type = models.CharField(max_length=10, choices=Message.ContentType.choices)
    attachment = models.ForeignKey(
        Upload, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    client_id = models.CharField(max_length=64)

    class Meta:
        indexes = [models.Index(fields=["conversation", "seq"], name="archived_conversation_seq")]
        verbose_name = _("archived message")
        verbose_name_plural = _("archived messages")

    def __str__(self) -> str:
        return f"{self.conversation_id}:{self.seq}"


class ArchivedMonth(models.Model):
    """The catalogue of the archive: one row per month of messages moved out of the live table."""

    class Mode(models.TextChoices):
        SCHEMA = "schema", _("Archive table")
        EXPORT = "export", _("Compressed file")

    month = models.DateField(unique=True, help_text=_("First day of the month, UTC."))
    mode = models.CharField(max_length=10, choices=Mode.choices)
    rows = models.PositiveBigIntegerField()
    location = models.CharField(
        max_length=500, help_text=_("The archive table, or the path of the compressed file.")
    )
    archived_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-month"]
        verbose_name = _("archived month")
        verbose_name_plural = _("archived months")

    def __str__(self) -> str:
        return self.month.strftime("%Y-%m")


class Note(models.Model):
    """A private note on a conversation: agents only, never sent to the visitor by any path.

    Kept apart from Message on purpose: history, resume, exports to the visitor and the widget
    read messages only, so a note cannot leak through any of them.
    """

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["conversation", "created_at"], name="note_by_conversation")]

    def __str__(self) -> str:
        return f"note on #{self.conversation_id}"
