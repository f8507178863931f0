"""The intent bot's data: intents with examples and replies, trained versions, per-site settings.

Intents of a site form a tree by their dotted names: `refund.status.timeline` is a child of
`refund.status`, a child of `refund`. No foreign key holds the tree, so renaming or importing
intents never leaves a parent link pointing at the wrong row; a parent is simply the intent
whose name is the prefix.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.db import models
from django.template import Template, TemplateSyntaxError
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chat.models import Site

NAME_PATTERN = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*$")
LANGUAGES = [("en", _("English")), ("zh", _("Simplified Chinese"))]


def validate_intent_name(value: str) -> None:
    if not NAME_PATTERN.match(value):
        raise ValidationError(
            _(
                "“%(value)s” is not an intent name; use lowercase words joined by dots, "
                "e.g. refund.status."
            ),
            params={"value": value},
        )


def validate_reply_template(value: str) -> None:
    """A reply is Django template text; refuse one that would not render."""
    try:
        Template(value)
    except TemplateSyntaxError as exc:
        raise ValidationError(
            _("The reply is not a valid template: %(error)s"), params={"error": exc}
        ) from None


class Intent(models.Model):
    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="intents")
    name = models.CharField(
        max_length=100,
        validators=[validate_intent_name],
        help_text=_("Dotted path in the intent tree, e.g. refund.status.timeline."),
    )
    description = models.CharField(max_length=200, blank=True)
    reply_en = models.TextField(
        _("reply (English)"),
        blank=True,
        validators=[validate_reply_template],
        help_text=_(
            "Template text; may use {{ visitor.name }}, {{ site.name }} and {{ slots.order_number "
            "}}, {{ slots.email }}, {{ slots.phone }}."
        ),
    )
    reply_zh = models.TextField(
        _("reply (Simplified Chinese)"), blank=True, validators=[validate_reply_template]
    )
    clarify = models.BooleanField(
        default=False,
        help_text=_("The reply is a clarifying question that names this intent's children."),
    )
    active = models.BooleanField(default=True, help_text=_("Inactive intents are not trained."))

    class Meta:
        ordering = ["site", "name"]
        constraints = [
            models.UniqueConstraint(fields=["site", "name"], name="intent_once_per_site")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def parent_name(self) -> str | None:
        return self.name.rpartition(".")[0] or None


class Example(models.Model):
    """A question labelled with its intent; also the FAQ the exact level matches against."""

    class Source(models.TextChoices):
        ADMIN = "admin", _("Written in admin")
        IMPORT = "import", _("Imported")
        STARTER = "starter", _("Starter bot")

    intent = models.ForeignKey(Intent, on_delete=models.CASCADE, related_name="examples")
    text = models.CharField(max_length=500)
    language = models.CharField(max_length=5, choices=LANGUAGES, default="en")
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.ADMIN)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["intent", "text"], name="example_once_per_intent")
        ]

    def __str__(self) -> str:
        return self.text


class BotSettings(models.Model):
    """How a site's bot behaves. A site without a row has no bot: every visitor gets a human."""

    site = models.OneToOneField(Site, on_delete=models.CASCADE, related_name="bot")
    enabled = models.BooleanField(default=True)
    encoder = models.CharField(
        max_length=20,
        blank=True,
        help_text=_(
            "auto, lexical, embedding or hybrid; empty: the configured default (nlp.encoder)."
        ),
    )
    threshold = models.FloatField(
        default=0.5,
        help_text=_("Confidence (0 to 1) below which the bot does not answer with an intent."),
    )
    max_misunderstood = models.PositiveSmallIntegerField(
        default=2, help_text=_("Misunderstood turns in a row before a human takes over.")
    )
    handoff_keywords = models.TextField(
        blank=True,
        help_text=_(
            "Comma-separated words that hand over to a human at once; empty: the configured "
            "list (nlp.handoff_keywords)."
        ),
    )

    class Meta:
        verbose_name = _("bot settings")
        verbose_name_plural = _("bot settings")

    def __str__(self) -> str:
        return str(self.site)

    def clean(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValidationError({"threshold": _("The threshold must be above 0 and at most 1.")})


class ModelVersion(models.Model):
    """One training run of a site's bot, with its held-out figures and the trained model."""

    class State(models.TextChoices):
        TRAINING = "training", _("Training")
        READY = "ready", _("Ready")  # trained, kept, not serving
        ACTIVE = "active", _("Active")
        REJECTED = "rejected", _("Rejected")  # worse than the active version
        FAILED = "failed", _("Failed")
        RETIRED = "retired", _("Retired")  # served before

    site = models.ForeignKey(Site, on_delete=models.CASCADE, related_name="bot_versions")
    number = models.PositiveIntegerField()
    encoder = models.CharField(max_length=20)
    state = models.CharField(max_length=10, choices=State.choices, default=State.TRAINING)
    metrics = models.JSONField(default=dict, blank=True)
    examples = models.PositiveIntegerField(default=0)
    intents = models.PositiveIntegerField(default=0)
    train_seconds = models.FloatField(null=True, blank=True)
    artifact = models.BinaryField(editable=False, null=True)
    artifact_bytes = models.PositiveIntegerField(default=0)
    forced = models.BooleanField(default=False)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["site", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["site", "number"], name="bot_version_number"),
            models.UniqueConstraint(
                fields=["site"], condition=models.Q(state="active"), name="one_active_bot_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.site} v{self.number}"

    @property
    def macro_f1(self) -> float | None:
        return self.metrics.get("macro_f1")


class BotState(models.Model):
    """The bot's memory of one conversation: recent intents, slots, misunderstood turns."""

    conversation = models.OneToOneField(
        "chat.Conversation", on_delete=models.CASCADE, primary_key=True, related_name="bot_state"
    )
    intents = models.JSONField(default=list, blank=True)
    slots = models.JSONField(default=dict, blank=True)
    misunderstood = models.PositiveSmallIntegerField(default=0)
    language = models.CharField(max_length=5, blank=True)
    turns = models.PositiveIntegerField(default=0)
    handoff_reason = models.CharField(max_length=20, blank=True)
    # The classifier's best guesses at the turn that handed over, shown to the agent.
    handoff_guesses = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name = _("bot memory")
        verbose_name_plural = _("bot memories")

    def __str__(self) -> str:
        return f"bot memory of #{self.conversation_id}"
