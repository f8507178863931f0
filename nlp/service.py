"""The bot in the message path: answer one stored visitor message, exactly once in effect.

A visitor message in a conversation the bot has (`Conversation.bot_active`) is stored with a
`bot` outbox row instead of being routed. `handle_bot_event` runs that row: right after the
commit on the socket that carried the message (off its event loop, in a worker thread), or
later from the outbox retry job if the process died first. The reply, the bot's memory, any
handoff and the row's completion commit in one transaction, so a second run finds the row
done, and a run cut short leaves nothing half-written. The reply's client id is derived from
the visitor message, so even a run that overlaps another stores one reply.

Handoff clears `bot_active`, routes the conversation to a human as a new one would be, and
leaves a private note with the reason and the classifier's best guesses; the transcript is
the conversation itself.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import override

from chat import actions, assignment, hours, outbox, teamwork
from chat.models import Conversation, Message, Note, OutboxEvent
from chat.outbox import Recorded
from nlp import bot, runtime
from nlp.models import BotSettings, BotState, Intent

logger = logging.getLogger(__name__)


def policy_for(site_id: int, default_language: str) -> bot.Policy:
    config = settings.GOFLY["nlp"]
    row = BotSettings.objects.filter(site_id=site_id).first()
    keywords = config["handoff_keywords"]
    if row is not None and row.handoff_keywords.strip():
        keywords = [word.strip() for word in row.handoff_keywords.split(",") if word.strip()]
    return bot.Policy(
        threshold=row.threshold if row else float(config["threshold"]),
        max_misunderstood=row.max_misunderstood if row else int(config["max_misunderstood"]),
        handoff_keywords=tuple(keywords),
        default_language="zh" if default_language.startswith("zh") else "en",
    )


def _memory(state: BotState) -> bot.Memory:
    return bot.Memory(
        intents=list(state.intents),
        slots=dict(state.slots),
        misunderstood=state.misunderstood,
        language=state.language,
    )


def _reply(turn: bot.Turn, conversation: Conversation, memory: bot.Memory) -> tuple[str, str]:
    """The reply text and the turn's final action (an intent marked `clarify` asks)."""
    if turn.action == bot.HANDOFF:
        available = hours.people_available(conversation.site, timezone.now())
        return bot.fallback_text(turn, available), turn.action
    if turn.action != bot.ANSWER:
        return bot.fallback_text(turn), turn.action
    intent = Intent.objects.filter(site_id=conversation.site_id, name=turn.intent).first()
    action = bot.CLARIFY if intent is not None and intent.clarify else bot.ANSWER
    if intent is None:
        return bot.fallback_text(turn), action
    primary, other = (
        (intent.reply_zh, intent.reply_en)
        if turn.language == "zh"
        else (intent.reply_en, intent.reply_zh)
    )
    context = {
        "visitor": {"name": conversation.visitor.name, "email": conversation.visitor.email},
        "site": {"name": conversation.site.name},
        "slots": memory.slots,
    }
    text = bot.render(primary or other, context)
    return (text or bot.fallback_text(turn)), action


def _handoff_note(conversation: Conversation, turn: bot.Turn, memory: bot.Memory) -> Recorded:
    reasons = {
        bot.ASKED: _("the visitor asked for a person"),
        bot.MISUNDERSTOOD: _("the bot did not understand several messages in a row"),
        bot.NO_MODEL: _("the bot has no trained model"),
    }
    guesses = ", ".join(f"{g.intent} {g.confidence:.0%}" for g in turn.guesses) or "—"
    topics = ", ".join(memory.intents) or "—"
    # Agents read notes in the site's language; the bot writes in it.
    with override(bot.django_language(conversation.site.default_language)):
        body = _(
            "Bot handed over: %(reason)s. Its best guesses for the last message: %(guesses)s. "
            "Topics so far: %(topics)s."
        ) % {"reason": reasons.get(turn.reason, turn.reason), "guesses": guesses, "topics": topics}
    note = Note.objects.create(conversation=conversation, author=None, body=body)
    return teamwork.record_note(conversation, note)


def handle_bot_event(event_id: int) -> list[Recorded]:
    """Answer the visitor message of one `bot` outbox row; returns what to relay."""
    event = outbox.start_attempt(event_id, OutboxEvent.Kind.BOT)
    if event is None:
        return []  # done already, failed for good, or not a bot row
    try:
        return _answer(event_id, event.payload or {})
    except Exception as exc:
        logger.exception("nlp.bot_failed", extra={"outbox": event_id})
        outbox.mark_retry(event_id, f"{type(exc).__name__}: {exc}", counted=True)
        return []


def _answer(event_id: int, payload: dict[str, Any]) -> list[Recorded]:
    conversation_id, message_id = payload.get("conversation"), payload.get("message")
    body = (
        Message.objects.filter(pk=message_id, conversation_id=conversation_id)
        .values_list("body", flat=True)
        .first()
    )
    site = Conversation.objects.filter(pk=conversation_id).values_list(
        "site_id", "site__default_language"
    )
    found = site.first()
    if body is None or found is None:
        outbox.mark_done(event_id, "the message is gone")
        return []
    site_id, language = found
    policy = policy_for(site_id, language)
    loaded = runtime.active_model(site_id)
    # Classified outside the transaction: it needs no lock, and holds this one model
    # throughout, whatever is activated meanwhile.
    model = loaded.model if loaded else None
    state_row = BotState.objects.filter(conversation_id=conversation_id).first()
    memory = _memory(state_row) if state_row else bot.Memory()
    turn = bot.decide(model, body, memory, policy)
    with transaction.atomic():
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("visitor", "site")
            .get(pk=conversation_id)
        )
        if not conversation.bot_active or conversation.assignee_id is not None:
            outbox.mark_done(event_id, "a person has the conversation")
            return []
        text, action = _reply(turn, conversation, memory)
        extra: list[outbox.Send] = []
        notes: list[Recorded] = []
        handed_over = action == bot.HANDOFF
        if handed_over:
            conversation.bot_active = False
            conversation.save(update_fields=["bot_active"])
            extra = assignment.route(conversation)
            notes.append(_handoff_note(conversation, turn, memory))
        posted = actions.post_bot_message(
            conversation,
            client_id=f"bot:{message_id}",
            body=text,
            changed=handed_over,
            extra=extra,
        )
        BotState.objects.update_or_create(
            conversation_id=conversation_id,
            defaults={
                "intents": memory.intents,
                "slots": memory.slots,
                "misunderstood": memory.misunderstood,
                "language": memory.language,
                "turns": (state_row.turns if state_row else 0) + 1,
                "handoff_reason": turn.reason if handed_over else "",
                "handoff_guesses": [g.as_dict() for g in turn.guesses] if handed_over else [],
                "updated_at": timezone.now(),
            },
        )
        outbox.mark_done(event_id)
    logger.info(
        "nlp.answered",
        extra={
            "conversation": conversation_id,
            "action": action,
            "intent": turn.intent,
            "confidence": round(turn.confidence, 3),
            "level": turn.level,
            "version": loaded.number if loaded else None,
        },
    )
    return [r for r in [posted.recorded, *notes] if r is not None]
