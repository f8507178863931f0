"""What agents do with a conversation besides replying: transfer it, label it, write notes.

Private notes live in their own table and travel only to agents' groups, so no path that
serves the visitor (socket, history, resume, widget API) can ever carry one.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils.translation import gettext as _

from agents.models import Agent, Team
from chat import assignment, errors, outbox
from chat.actions import BOT_NAME, check_agent_conversation, conversation_summary
from chat.models import Conversation, Label, Note
from chat.outbox import Recorded, Send, site_agents_group

logger = logging.getLogger(__name__)

NOTE_MAX_CHARS = 4000


def _agent_name(user: AbstractBaseUser) -> str:
    agent = getattr(user, "agent", None)
    return agent.display_name if agent and agent.display_name else user.get_username()


def note_frame(note: Note, client_id: str | None = None) -> dict[str, Any]:
    frame = {
        "type": "note",
        "conversation": note.conversation_id,
        "id": note.pk,
        "author": {
            "id": note.author_id,
            # A note without an author is gofly's own: the bot's, at a handoff.
            "name": _agent_name(note.author) if note.author else BOT_NAME,
        },
        "body": note.body,
        "created_at": note.created_at.isoformat(),
    }
    if client_id:
        frame["client_id"] = client_id
    return frame


def _note_sends(conversation: Conversation, frame: dict[str, Any]) -> list[Send]:
    # Agents' groups only: this is the one place notes are sent, and it never names a visitor.
    event = {"type": "chat.note", "frame": frame, "assignee": conversation.assignee_id}
    return [(site_agents_group(conversation.site_id), event)]


def _note_body(body: Any) -> str:
    if not isinstance(body, str) or not body.strip():
        raise errors.invalid(_("A note needs some text."))
    if len(body) > NOTE_MAX_CHARS:
        raise errors.invalid(
            _("A note is at most %(limit)d characters.") % {"limit": NOTE_MAX_CHARS}
        )
    return body.strip()


def _locked(user: AbstractBaseUser, conversation_id: Any) -> Conversation:
    visible = check_agent_conversation(user, conversation_id)
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("visitor", "site")
        .get(pk=visible.pk)
    )


def add_note(
    user: AbstractBaseUser, conversation_id: Any, body: Any, client_id: str | None = None
) -> Recorded:
    """Store a private note and record its delivery to the agents who see the conversation."""
    text = _note_body(body)
    with transaction.atomic():
        conversation = _locked(user, conversation_id)
        note = Note.objects.create(conversation=conversation, author=user, body=text)
        recorded = outbox.record_sends(_note_sends(conversation, note_frame(note, client_id)))
    return recorded


def record_note(conversation: Conversation, note: Note) -> Recorded:
    """Record the delivery of a note written by gofly itself (the bot's handoff note)."""
    return outbox.record_sends(_note_sends(conversation, note_frame(note)))


def notes_of(conversation: Conversation) -> list[dict[str, Any]]:
    notes = conversation.notes.select_related("author__agent").order_by("created_at", "id")
    return [note_frame(note) for note in notes]


def _target(conversation: Conversation, to_agent: Any, to_team: Any) -> Agent | Team:
    if (to_agent is None) == (to_team is None):
        raise errors.invalid(_("Transfer to either an agent or a team, not both or neither."))
    key = to_agent if to_agent is not None else to_team
    if not isinstance(key, int) or isinstance(key, bool):
        raise errors.invalid(_("Name the agent or team to transfer to by its id (a number)."))
    if to_agent is not None:
        agent = Agent.objects.filter(user_id=key, sites=conversation.site_id).first()
        if agent is None:
            raise errors.invalid(_("That agent does not work on this conversation's site."))
        return agent
    team = Team.objects.filter(pk=key).first()
    if team is None:
        raise errors.invalid(_("That team does not exist."))
    return team


def transfer(
    user: AbstractBaseUser,
    conversation_id: Any,
    *,
    to_agent: Any = None,
    to_team: Any = None,
    note: Any = None,
) -> Recorded:
    """Hand a conversation to another agent, or to a team's line, with an optional note.

    The conversation leaves the current assignee's dashboards and appears on the new one's
    (or in the team's waiting line) through the same notices routing sends.
    """
    with transaction.atomic():
        conversation = _locked(user, conversation_id)
        if conversation.assignee_id not in (None, user.pk) and not user.is_superuser:
            raise errors.conversation_not_found()
        target = _target(conversation, to_agent, to_team)
        holds = conversation.status in assignment.HOLDS_SLOT
        if holds:
            assignment.release(conversation)
        line: list[Send] = []
        if isinstance(target, Agent):
            if holds:
                line = assignment.take(conversation, target.user)
            conversation.assignee = target.user
            conversation.waiting_since = None
            where = str(target)
        else:
            conversation.team = target
            conversation.assignee_id = None
            conversation.waiting_since = None
            line = assignment.route(conversation) if holds else []
            where = target.name
        conversation.bot_active = False  # transferred to people, the bot stops answering
        conversation.save(update_fields=["assignee", "team", "waiting_since", "bot_active"])
        sends = outbox.conversation_sends(
            conversation.site_id, conversation.visitor_id, conversation_summary(conversation)
        )
        text = _("Transferred to %(target)s.") % {"target": where}
        if note is not None and note != "":
            text += " " + _note_body(note)
        record = Note.objects.create(conversation=conversation, author=user, body=text)
        sends += _note_sends(conversation, note_frame(record)) + line
        recorded = outbox.record_sends(sends)
    logger.info(
        "conversation.transferred",
        extra={"conversation": conversation.pk, "assignee": conversation.assignee_id},
    )
    return recorded


LABEL_MAX_CHARS = 32
LABELS_MAX = 20


def _label_names(labels: Any) -> list[str]:
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise errors.invalid(_("The field 'labels' must be a list of label names."))
    names = list(dict.fromkeys(name.strip().lower() for name in labels if name.strip()))
    if len(names) > LABELS_MAX or any(len(name) > LABEL_MAX_CHARS for name in names):
        raise errors.invalid(
            _("At most %(count)d labels of at most %(chars)d characters each.")
            % {"count": LABELS_MAX, "chars": LABEL_MAX_CHARS}
        )
    return names


def set_labels(user: AbstractBaseUser, conversation_id: Any, labels: Any) -> Recorded:
    """Replace a conversation's labels; a name the site has not used yet becomes a label."""
    names = _label_names(labels)
    with transaction.atomic():
        conversation = _locked(user, conversation_id)
        existing = {
            label.name: label
            for label in Label.objects.filter(site_id=conversation.site_id, name__in=names)
        }
        for name in names:
            if name not in existing:
                existing[name], _created = Label.objects.get_or_create(
                    site_id=conversation.site_id, name=name
                )
        conversation.labels.set([existing[name] for name in names])
        sends = outbox.conversation_sends(
            conversation.site_id, conversation.visitor_id, conversation_summary(conversation)
        )
        # Labels are for agents: the visitor's notice carries only id and status anyway.
        recorded = outbox.record_sends(sends)
    return recorded


def take(user: AbstractBaseUser, conversation_id: Any) -> Recorded:
    """An agent takes a waiting (unassigned) conversation by hand."""
    with transaction.atomic():
        conversation = _locked(user, conversation_id)
        if conversation.assignee_id is not None:
            raise errors.invalid(_("Someone already has this conversation."))
        line = assignment.take(conversation, user)
        conversation.save(update_fields=["assignee", "waiting_since", "bot_active"])
        sends = outbox.conversation_sends(
            conversation.site_id, conversation.visitor_id, conversation_summary(conversation)
        )
        recorded = outbox.record_sends(sends + line)
    logger.info("conversation.taken", extra={"conversation": conversation.pk})
    return recorded
