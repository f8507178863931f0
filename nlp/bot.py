"""What the bot does with one visitor message: answer, ask, admit it did not understand, or hand
over to a human. Pure decisions over a model and the conversation's memory; `nlp.service`
does the reading and writing around them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.template import Context, Template, TemplateSyntaxError
from django.utils import translation
from django.utils.translation import gettext as _

from nlp.classifier import Guess, IntentModel
from nlp.normalize import language_of, normalize
from nlp.slots import find_slots

logger = logging.getLogger(__name__)

ANSWER = "answer"
CLARIFY = "clarify"
NOT_UNDERSTOOD = "not_understood"
HANDOFF = "handoff"

# Handoff reasons.
ASKED = "asked"
MISUNDERSTOOD = "misunderstood"
NO_MODEL = "no_model"

# Intents remembered per conversation, newest last.
REMEMBERED_INTENTS = 5
_LATIN = re.compile(r"[a-z]")


@dataclass
class Memory:
    """What the bot remembers of a conversation between turns (stored in nlp.BotState)."""

    intents: list[str] = field(default_factory=list)
    slots: dict[str, str] = field(default_factory=dict)
    misunderstood: int = 0
    language: str = ""

    @property
    def last_intent(self) -> str | None:
        return self.intents[-1] if self.intents else None


@dataclass(frozen=True)
class Policy:
    """A site's bot settings, resolved against the configured defaults."""

    threshold: float
    max_misunderstood: int
    handoff_keywords: tuple[str, ...]
    default_language: str = "en"


@dataclass(frozen=True)
class Turn:
    action: str  # ANSWER, CLARIFY, NOT_UNDERSTOOD or HANDOFF
    intent: str | None
    confidence: float
    level: str
    guesses: list[Guess]
    language: str
    reason: str = ""  # why a HANDOFF happened


def asks_for_human(text: str, keywords: tuple[str, ...]) -> bool:
    """Whether the message contains a handoff keyword: Chinese anywhere, other words whole."""
    normalized = f" {normalize(text)} "
    for keyword in keywords:
        word = normalize(keyword)
        if not word:
            continue
        if _LATIN.search(word) and f" {word} " in normalized:
            return True
        if not _LATIN.search(word) and word in normalized:
            return True
    return False


def _language(text: str, memory: Memory, default: str) -> str:
    if language_of(text, "") == "zh":
        return "zh"
    if _LATIN.search(normalize(text)):
        return "en"
    return memory.language or default  # digits only, emoji...: keep the conversation's


def decide(model: IntentModel | None, text: str, memory: Memory, policy: Policy) -> Turn:
    """One turn; updates `memory` in place (slots, intents, misunderstood count, language)."""
    language = _language(text, memory, policy.default_language)
    memory.language = language
    memory.slots.update(find_slots(text))
    if model is None:
        return Turn(HANDOFF, None, 0.0, "none", [], language, NO_MODEL)
    match = model.match(text, policy.threshold, context=memory.last_intent)
    if asks_for_human(text, policy.handoff_keywords):
        return Turn(HANDOFF, None, match.confidence, "keyword", match.guesses, language, ASKED)
    if match.intent is None:
        memory.misunderstood += 1
        if memory.misunderstood >= policy.max_misunderstood:
            return Turn(HANDOFF, None, match.confidence, match.level, match.guesses, language,
                        MISUNDERSTOOD)  # fmt: skip
        return Turn(NOT_UNDERSTOOD, None, match.confidence, match.level, match.guesses, language)
    memory.misunderstood = 0
    memory.intents = (memory.intents + [match.intent])[-REMEMBERED_INTENTS:]
    return Turn(ANSWER, match.intent, match.confidence, match.level, match.guesses, language)


def render(template_text: str, context: dict[str, Any]) -> str:
    """An intent's reply with its variables filled; plain text, so nothing is HTML-escaped."""
    try:
        return Template(template_text).render(Context(context, autoescape=False)).strip()
    except TemplateSyntaxError:
        # Replies are checked when saved in admin; one written around that is not sent raw.
        logger.warning("nlp.reply_template_broken", exc_info=True)
        return ""


def django_language(language: str) -> str:
    """The Django language code of a bot language ("zh" is the catalogue zh_Hans)."""
    return "zh-hans" if language.startswith("zh") else "en"


def fallback_text(turn: Turn, people_available: bool = True) -> str:
    """What the bot says when it has no reply of an intent to give."""
    with translation.override(django_language(turn.language)):
        if turn.action == HANDOFF and not people_available:
            return _(
                "Nobody from our team is available right now. Your message is kept here and "
                "a colleague will answer as soon as one is back; you can close this window."
            )
        if turn.action == HANDOFF:
            return _("I am passing you to a colleague, who will answer here shortly.")
        return _(
            "Sorry, I did not understand that. Could you say it in other words? "
            "Write “human” to talk to a person."
        )
