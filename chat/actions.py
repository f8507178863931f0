"""Domain actions for conversations and messages.

Everything here is synchronous ORM code: consumers call it through `database_sync_to_async`
and views call it directly. `check_*` functions resolve ids and enforce access; the functions
that write trust their arguments, run in one transaction, and return what the caller needs to
notify others once the transaction has committed.

The per-conversation `seq` is assigned under a row lock on the conversation, which is also
what makes a repeated `client_id` safe: every insert into one conversation is serialised.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _

from chat import assignment, blocking, errors, hours, outbox, webhooks
from chat.errors import ErrorCode, GoflyError
from chat.models import Conversation, Message, Site, Upload, Visitor
from chat.outbox import Recorded
from chat.tokens import issue_visitor_token

logger = logging.getLogger(__name__)

PREVIEW_CHARS = 200
# The sender name of the bot's messages; the widget and dashboard show it in their language.
BOT_NAME = "Bot"
# Statuses a visitor's new message wakes up.
DORMANT = (Conversation.Status.RESOLVED, Conversation.Status.SNOOZED)


@dataclass(frozen=True)
class VisitorSession:
    site: Site
    visitor: Visitor
    token: str


@dataclass(frozen=True)
class PostedMessage:
    """A stored message and what to relay once the transaction has committed."""

    frame: dict[str, Any]
    conversation_id: int
    assignee_id: int | None
    # None for a repeated client_id: the first send already recorded the fan-out.
    recorded: Recorded | None
    # The outbox row that makes the bot answer this message (run it after the commit).
    bot_event: int | None = None


# ---------------------------------------------------------------------------------------------
# Visitor sessions


def check_site_for_widget(site_key: Any, origin: str | None) -> Site:
    if not isinstance(site_key, str) or not site_key:
        raise errors.invalid(_("The field 'site' must be the site key from the embed snippet."))
    site = Site.objects.filter(key=site_key).first()
    if site is None:
        raise GoflyError(
            ErrorCode.UNKNOWN_SITE,
            _("No site has this key; copy the snippet again from the site's settings."),
            status=404,
        )
    if not site.origin_allowed(origin):
        logger.warning("widget.origin_refused", extra={"site": site.pk, "origin": origin})
        raise GoflyError(
            ErrorCode.ORIGIN_NOT_ALLOWED,
            _("This page's origin is not in the site's allowed origins."),
            status=403,
        )
    return site


def start_visitor_session(
    site: Site,
    public_id: Any,
    *,
    ip: str | None,
    user_agent: str,
    referrer: str,
    page_url: str,
) -> VisitorSession:
    """Find or create the visitor the browser names, record where it is, and sign a token.

    A blocked visitor or address is refused (`blocked`) before anything is written.
    """
    if public_id is not None and (
        not isinstance(public_id, str)
        or not (8 <= len(public_id) <= 64)
        or not public_id.replace("-", "").replace("_", "").isalnum()
    ):
        raise errors.invalid(
            _("The field 'visitor_id' must be 8 to 64 letters, digits, '-' or '_'.")
        )
    known = (
        Visitor.objects.filter(site=site, public_id=public_id).values_list("pk", flat=True).first()
        if public_id
        else None
    )
    blocking.check_not_blocked(site.pk, known, ip)
    now = timezone.now()
    details = {
        "ip": ip,
        "user_agent": user_agent[:1000],
        "referrer": referrer[:2000],
        "page_url": page_url[:2000],
        "last_seen": now,
    }
    if public_id:
        visitor, _created = Visitor.objects.update_or_create(
            site=site,
            public_id=public_id,
            defaults=details,
            create_defaults={**details, "first_seen": now},
        )
    else:
        visitor = Visitor.objects.create(site=site, first_seen=now, **details)
    return VisitorSession(site, visitor, issue_visitor_token(site.pk, visitor.pk))


def current_conversation(visitor_id: int) -> Conversation | None:
    return Conversation.objects.filter(visitor_id=visitor_id).order_by("-id").first()


# ---------------------------------------------------------------------------------------------
# Access


def agent_site_ids(user: AbstractBaseUser) -> list[int] | None:
    """Sites the user works on, or None for a superuser, who sees every site."""
    if user.is_superuser:
        return None
    agent = getattr(user, "agent", None)
    if agent is None:
        return []
    return list(agent.sites.values_list("id", flat=True))


def conversations_visible_to(user: AbstractBaseUser) -> QuerySet[Conversation]:
    """An agent sees its sites' unassigned conversations and those assigned to it."""
    queryset = Conversation.objects.all()
    site_ids = agent_site_ids(user)
    if site_ids is None:
        return queryset
    return queryset.filter(site_id__in=site_ids).filter(
        Q(assignee__isnull=True) | Q(assignee_id=user.pk)
    )


def check_agent_conversation(user: AbstractBaseUser, conversation_id: Any) -> Conversation:
    if not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
        raise errors.invalid(_("The field 'conversation' must be a conversation id (a number)."))
    conversation = conversations_visible_to(user).filter(pk=conversation_id).first()
    if conversation is None:
        raise errors.conversation_not_found()
    return conversation


def check_visitor_conversation(visitor_id: int, conversation_id: Any) -> Conversation:
    if conversation_id is None:
        conversation = current_conversation(visitor_id)
    elif not isinstance(conversation_id, int) or isinstance(conversation_id, bool):
        raise errors.invalid(_("The field 'conversation' must be a conversation id (a number)."))
    else:
        conversation = Conversation.objects.filter(
            pk=conversation_id, visitor_id=visitor_id
        ).first()
    if conversation is None:
        raise errors.conversation_not_found()
    return conversation


def check_upload(
    upload_id: Any, *, site_id: int, visitor_id: int | None, user_id: int | None
) -> Upload | None:
    if upload_id is None:
        return None
    try:
        # A malformed id is simply not an upload; the ORM would raise ValidationError on it.
        upload_uuid = uuid.UUID(upload_id) if isinstance(upload_id, str) else None
    except ValueError:
        upload_uuid = None
    upload = Upload.objects.filter(pk=upload_uuid, site_id=site_id).first() if upload_uuid else None
    owned = upload is not None and (
        (visitor_id is not None and upload.visitor_id == visitor_id)
        or (user_id is not None and upload.agent_user_id == user_id)
    )
    if not owned:
        raise GoflyError(
            ErrorCode.NOT_FOUND, _("That upload does not exist or is not yours."), status=404
        )
    return upload


# ---------------------------------------------------------------------------------------------
# Messages


def upload_frame(upload: Upload) -> dict[str, Any]:
    """How an upload appears in a message frame and in the upload endpoint's answer."""
    return {
        "id": str(upload.pk),
        "name": upload.original_name,
        "size": upload.size,
        "content_type": upload.content_type,
        "url": f"/api/uploads/{upload.pk}",
    }


def message_frame(message: Message, sender_name: str) -> dict[str, Any]:
    """The `message` frame every socket that may see the conversation receives."""
    attachment = upload_frame(message.attachment) if message.attachment_id else None
    return {
        "type": "message",
        "conversation": message.conversation_id,
        "seq": message.seq,
        "id": message.pk,
        "client_id": message.client_id,
        "sender": {"kind": message.sender_kind, "name": sender_name},
        "body": message.body,
        "content_type": message.content_type,
        "attachment": attachment,
        "created_at": message.created_at.isoformat(),
    }


def _sender_name(message: Message) -> str:
    if message.sender_kind == Message.SenderKind.AGENT and message.sender_user_id:
        user = message.sender_user
        agent = getattr(user, "agent", None)
        return agent.display_name if agent and agent.display_name else user.get_username()
    if message.sender_kind == Message.SenderKind.VISITOR:
        return str(message.conversation.visitor)
    if message.sender_kind == Message.SenderKind.BOT:
        return BOT_NAME
    return ""


def _content_type_for(upload: Upload | None) -> str:
    if upload is None:
        return Message.ContentType.TEXT
    if upload.content_type.startswith("image/"):
        return Message.ContentType.IMAGE
    return Message.ContentType.FILE


def _store_message(
    conversation: Conversation,
    *,
    client_id: str,
    body: str,
    sender_kind: str,
    sender_user_id: int | None,
    upload: Upload | None,
) -> tuple[Message, bool]:
    """Insert the next message of a conversation, or return the one with this client_id.

    The caller holds the conversation's row lock (select_for_update) inside a transaction.
    """
    # Repeats are rare: probe with the cheapest query and load the full row only on a hit.
    repeat = list(
        Message.objects.filter(conversation_id=conversation.pk, client_id=client_id).values_list(
            "pk", flat=True
        )[:1]
    )
    if repeat:
        existing = Message.objects.select_related(
            "attachment", "sender_user__agent", "conversation__visitor"
        ).get(pk=repeat[0])
        return existing, False
    now = timezone.now()
    conversation.last_seq += 1
    message = Message.objects.create(
        conversation=conversation,
        seq=conversation.last_seq,
        created_at=now,
        sender_kind=sender_kind,
        sender_user_id=sender_user_id,
        body=body,
        content_type=_content_type_for(upload),
        attachment=upload,
        client_id=client_id,
    )
    conversation.last_message_at = now
    conversation.last_message_preview = (body or (upload.original_name if upload else ""))[
        :PREVIEW_CHARS
    ]
    if upload is not None and upload.conversation_id is None:
        Upload.objects.filter(pk=upload.pk).update(conversation=conversation)
    return message, True


def _posted(
    message: Message,
    conversation: Conversation,
    created: bool,
    changed: bool,
    extra: list[outbox.Send] | None = None,
) -> PostedMessage:
    """Record the fan-out and the site's webhook in the outbox, inside the caller's transaction.

    conversation.visitor and conversation.site must be loaded.
    """
    frame = message_frame(message, _sender_name(message))
    recorded = None
    if created:
        webhooks.record_message(conversation, frame)
        sends = outbox.message_sends(
            frame,
            site_id=conversation.site_id,
            visitor_id=conversation.visitor_id,
            assignee_id=conversation.assignee_id,
        )
        if changed:
            sends += outbox.conversation_sends(
                conversation.site_id, conversation.visitor_id, conversation_summary(conversation)
            )
        sends += extra or []
        recorded = Recorded(outbox.record(sends), sends)
    return PostedMessage(
        frame=frame,
        conversation_id=conversation.pk,
        assignee_id=conversation.assignee_id,
        recorded=recorded,
    )


def _lock_current_conversation(visitor_id: int) -> Conversation | None:
    # of=("self",): with the join, a plain FOR UPDATE would lock the visitor row as well.
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("visitor", "site")
        .filter(visitor_id=visitor_id)
        .order_by("-id")
        .first()
    )


def _open_conversation(visitor_id: int) -> tuple[Conversation, bool]:
    """Create the visitor's first conversation, once even when two first messages race.

    Locks the visitor row, then looks again: a racing sender may have created the conversation
    while this one waited. Lock order is visitor, then conversation, everywhere.
    """
    visitor = Visitor.objects.select_for_update().get(pk=visitor_id)
    conversation = _lock_current_conversation(visitor_id)
    if conversation is not None:
        return conversation, False
    team_id = Site.objects.filter(pk=visitor.site_id).values_list("team_id", flat=True).get()
    conversation = Conversation.objects.create(
        site_id=visitor.site_id, visitor=visitor, team_id=team_id
    )
    return conversation, True


def post_visitor_message(
    visitor_id: int, *, client_id: str, body: str, upload_id: Any = None
) -> PostedMessage:
    """Store a visitor's message in its current conversation, opening or reopening one."""
    with transaction.atomic():
        conversation = _lock_current_conversation(visitor_id)
        changed = opened = False
        if conversation is None:
            conversation, changed = _open_conversation(visitor_id)
            opened = changed
        upload = check_upload(
            upload_id, site_id=conversation.site_id, visitor_id=visitor_id, user_id=None
        )
        message, created = _store_message(
            conversation,
            client_id=client_id,
            body=body,
            sender_kind=Message.SenderKind.VISITOR,
            sender_user_id=None,
            upload=upload,
        )
        if created:
            fields = ["last_seq", "last_message_at", "last_message_preview"]
            if opened or conversation.status == Conversation.Status.RESOLVED:
                # A new question starts with the site's bot, when it has one.
                conversation.bot_active = hours.bot_serves(conversation.site_id)
                fields.append("bot_active")
            if conversation.status in DORMANT:
                previous = conversation.status
                conversation.status = Conversation.Status.OPEN
                conversation.resolved_at = conversation.snoozed_until = None
                fields += ["status", "resolved_at", "snoozed_until"]
                changed = True
                webhooks.record_status_change(
                    conversation,
                    previous,
                    {"kind": Message.SenderKind.VISITOR, "id": conversation.visitor.public_id},
                )
            conversation.save(update_fields=fields)
        bot_event = None
        routed: list[outbox.Send] = []
        if created and conversation.bot_active and conversation.assignee_id is None:
            # The bot answers first; it routes to a human itself when it hands over.
            bot_event = outbox.record_bot(conversation, message.pk)
        elif created and (opened or changed):
            # A new or reopened conversation needs a human: route it in the same transaction,
            # so the stored message, its assignment and both notices commit together.
            routed = assignment.route(conversation)
        message.conversation = conversation
        posted = _posted(message, conversation, created, changed, routed)
        return dataclasses.replace(posted, bot_event=bot_event)


def post_bot_message(
    conversation: Conversation, *, client_id: str, body: str, changed: bool, extra: list
) -> PostedMessage:
    """Store the bot's reply. The caller holds the conversation's row lock in its transaction
    and has saved any other field it changed; `changed` says the summary changed too."""
    message, created = _store_message(
        conversation,
        client_id=client_id,
        body=body,
        sender_kind=Message.SenderKind.BOT,
        sender_user_id=None,
        upload=None,
    )
    if created:
        conversation.save(update_fields=["last_seq", "last_message_at", "last_message_preview"])
    message.conversation = conversation
    return _posted(message, conversation, created, changed, extra)


def post_agent_message(
    user: AbstractBaseUser,
    conversation_id: Any,
    *,
    client_id: str,
    body: str,
    upload_id: Any = None,
) -> PostedMessage:
    """Store an agent's reply; an unassigned conversation becomes the replying agent's."""
    with transaction.atomic():
        visible = check_agent_conversation(user, conversation_id)
        # Lock only the conversation: locking the joined visitor row too would take the two
        # locks in the opposite order to post_visitor_message and deadlock with it.
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("visitor", "site")
            .get(pk=visible.pk)
        )
        if conversation.assignee_id not in (None, user.pk) and not user.is_superuser:
            raise errors.conversation_not_found()
        upload = check_upload(
            upload_id, site_id=conversation.site_id, visitor_id=None, user_id=user.pk
        )
        message, created = _store_message(
            conversation,
            client_id=client_id,
            body=body,
            sender_kind=Message.SenderKind.AGENT,
            sender_user_id=user.pk,
            upload=upload,
        )
        changed = False
        line: list[outbox.Send] = []
        if created:
            fields = ["last_seq", "last_message_at", "last_message_preview"]
            if conversation.assignee_id is None:
                line = assignment.take(conversation, user)
                fields += ["assignee", "waiting_since", "bot_active"]
                changed = True
            if conversation.first_agent_reply_at is None:
                conversation.first_agent_reply_at = message.created_at
                fields.append("first_agent_reply_at")
            # The agent has seen everything up to its own reply.
            conversation.agent_read_seq = message.seq
            fields.append("agent_read_seq")
            conversation.save(update_fields=fields)
        message.conversation = conversation
        return _posted(message, conversation, created, changed, line)


# ---------------------------------------------------------------------------------------------
# Leave a message (the widget's form when live chat is not available)

LEFT_NAME_MAX = 200


@dataclass(frozen=True)
class LeftMessage:
    name: str
    email: str
    body: str
    client_id: str


def check_left_message(data: Any) -> LeftMessage:
    """Validate the leave-a-message form; each refusal names the field to fix."""
    if not isinstance(data, dict):
        raise errors.malformed(_("The request body must be a JSON object."))
    name = data.get("name")
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > LEFT_NAME_MAX:
        raise errors.invalid(
            _("Write your name, in at most %(max)d characters.") % {"max": LEFT_NAME_MAX}
        )
    email = data.get("email")
    email = email.strip() if isinstance(email, str) else ""
    try:
        validate_email(email)
    except ValidationError:
        raise errors.invalid(_("Write a valid email address, so that we can answer you.")) from None
    body = data.get("message")
    body = body.strip() if isinstance(body, str) else ""
    if not body:
        raise errors.invalid(_("Write a message."))
    limit = int(settings.GOFLY["messages"]["max_text_bytes"])
    if len(body.encode()) > limit:
        raise GoflyError(
            ErrorCode.TOO_LARGE,
            _("The message is longer than %(limit)d bytes; shorten it.") % {"limit": limit},
        )
    client_id = data.get("client_id")
    if client_id is None:
        client_id = uuid.uuid4().hex
    elif not isinstance(client_id, str) or not (1 <= len(client_id) <= 64):
        raise errors.invalid(_("The field 'client_id' must be a string of 1 to 64 characters."))
    return LeftMessage(name=name, email=email, body=body, client_id=client_id)


def leave_message(visitor_id: int, left: LeftMessage) -> PostedMessage:
    """Store a message left while live chat was unavailable, as the visitor's own message.

    The visitor's name and email are kept for the reply. The message goes through the usual
    path, so a new conversation is routed at once: with nobody online it waits in line and
    coming online assigns it (chat.assignment.after_status_change).
    """
    with transaction.atomic():
        Visitor.objects.filter(pk=visitor_id).update(name=left.name, email=left.email)
        posted = post_visitor_message(visitor_id, client_id=left.client_id, body=left.body)
    logger.info(
        "conversation.message_left",
        extra={"conversation": posted.conversation_id, "visitor": visitor_id},
    )
    return posted


def history_queryset(conversation: Conversation, after_seq: int) -> QuerySet[Message]:
    """A conversation's messages after `after_seq`, in order.

    No message is older than its conversation, and saying so lets PostgreSQL skip the monthly
    partitions from before the conversation began (docs/architecture.md shows the plan).
    """
    return Message.objects.filter(
        conversation_id=conversation.pk,
        created_at__gte=conversation.created_at,
        seq__gt=after_seq,
    ).order_by("seq")


def messages_after(conversation: Conversation, after_seq: int, limit: int) -> list[dict[str, Any]]:
    """Frames for up to `limit` messages with seq > after_seq, oldest first."""
    messages = history_queryset(conversation, after_seq).select_related(
        "attachment", "sender_user__agent", "conversation__visitor"
    )[:limit]
    return [message_frame(m, _sender_name(m)) for m in messages]


# ---------------------------------------------------------------------------------------------
# Conversation state


def conversation_summary(conversation: Conversation) -> dict[str, Any]:
    """How a conversation appears in the dashboard list.

    `unread` counts the messages after the agent's read position. Replying moves that position
    to the reply, so what follows is the visitor's; no join over messages is needed.
    """
    visitor = conversation.visitor
    assignee = conversation.assignee
    return {
        "id": conversation.pk,
        "site": conversation.site_id,
        "status": conversation.status,
        "visitor": {"id": visitor.public_id, "name": str(visitor)},
        "assignee": (
            {
                "id": assignee.pk,
                "name": getattr(getattr(assignee, "agent", None), "display_name", "")
                or assignee.get_username(),
            }
            if assignee
            else None
        ),
        "last_seq": conversation.last_seq,
        "last_message_at": (
            conversation.last_message_at.isoformat() if conversation.last_message_at else None
        ),
        "last_message_preview": conversation.last_message_preview,
        "unread": max(0, conversation.last_seq - conversation.agent_read_seq),
        "snoozed_until": (
            conversation.snoozed_until.isoformat() if conversation.snoozed_until else None
        ),
        "rating": conversation.rating,
        "bot_active": conversation.bot_active,
        "labels": sorted(label.name for label in conversation.labels.all()),
        "created_at": conversation.created_at.isoformat(),
    }


def conversation_list(user: AbstractBaseUser, view: str, limit: int = 100) -> list[dict[str, Any]]:
    """The dashboard's list: `waiting` (unassigned), `mine`, `open` (all open it can see)."""
    queryset = conversations_visible_to(user).exclude(status=Conversation.Status.RESOLVED)
    if view == "waiting":
        queryset = queryset.filter(assignee__isnull=True)
    elif view == "mine":
        queryset = queryset.filter(assignee_id=user.pk)
    elif view == "resolved":
        queryset = conversations_visible_to(user).filter(status=Conversation.Status.RESOLVED)
    elif view != "open":
        raise errors.invalid(_("Unknown list; use waiting, mine, open or resolved."))
    queryset = queryset.select_related("visitor", "assignee__agent").prefetch_related("labels")
    queryset = queryset.order_by("-last_message_at", "-id")[:limit]
    return [conversation_summary(c) for c in queryset]


def conversation_detail(conversation: Conversation) -> dict[str, Any]:
    visitor = conversation.visitor
    summary = conversation_summary(conversation)
    summary["visitor"].update(
        {
            "email": visitor.email,
            "ip": visitor.ip,
            "user_agent": visitor.user_agent,
            "page_url": visitor.page_url,
            "referrer": visitor.referrer,
            "first_seen": visitor.first_seen.isoformat(),
            "last_seen": visitor.last_seen.isoformat(),
        }
    )
    return summary


@dataclass(frozen=True)
class StatusChanged:
    """The notice to relay, and the pool whose waiting line may move (a slot was freed)."""

    recorded: Recorded
    freed_pool: str | None


def _snooze_until(status: str, until: Any) -> datetime | None:
    if status != Conversation.Status.SNOOZED:
        return None
    moment = parse_datetime(until) if isinstance(until, str) else None
    if moment is None or timezone.is_naive(moment):
        raise errors.invalid(
            _("Snoozing needs 'until': a time with its offset, e.g. 2026-12-04T09:00+08:00.")
        )
    if moment <= timezone.now():
        raise errors.invalid(_("Snooze until a time in the future."))
    return moment


def set_conversation_status(
    user: AbstractBaseUser, conversation_id: Any, status: Any, until: Any = None
) -> StatusChanged:
    """Change a conversation's status and record the notice to its agents and visitor.

    Resolving or snoozing gives the assignee's slot back; reopening routes the conversation
    again (its previous agent first).
    """
    if status not in Conversation.Status.values:
        raise errors.invalid(_("The field 'status' must be open, pending, snoozed or resolved."))
    snoozed_until = _snooze_until(status, until)
    with transaction.atomic():
        visible = check_agent_conversation(user, conversation_id)
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("visitor", "site", "assignee__agent")
            .get(pk=visible.pk)
        )
        previous = conversation.status
        conversation.status = status
        conversation.resolved_at = timezone.now() if status == "resolved" else None
        conversation.snoozed_until = snoozed_until
        conversation.save(update_fields=["status", "resolved_at", "snoozed_until"])
        routed: list[outbox.Send] = []
        holds = assignment.HOLDS_SLOT
        freed = previous in holds and status not in holds
        if freed:
            assignment.release(conversation)
        elif previous not in holds and status in holds:
            routed = assignment.route(conversation)
        if previous != status:
            webhooks.record_status_change(
                conversation, previous, {"kind": Message.SenderKind.AGENT, "id": user.pk}
            )
        sends = outbox.conversation_sends(
            conversation.site_id, conversation.visitor_id, conversation_summary(conversation)
        )
        recorded = Recorded(outbox.record(sends + routed), sends + routed)
    logger.info("conversation.status", extra={"conversation": conversation.pk, "status": status})
    return StatusChanged(recorded, assignment.pool_of(conversation) if freed else None)


def wake_snoozed(now: datetime | None = None, limit: int = 200) -> list[Recorded]:
    """Reopen conversations whose snooze has run out and route them; one transaction each."""
    now = now or timezone.now()
    due = Conversation.objects.filter(
        status=Conversation.Status.SNOOZED, snoozed_until__lte=now
    ).values_list("pk", flat=True)[:limit]
    recorded = []
    for conversation_id in list(due):
        with transaction.atomic():
            conversation = (
                Conversation.objects.select_for_update(of=("self",))
                .select_related("visitor", "site")
                .get(pk=conversation_id)
            )
            if conversation.status != Conversation.Status.SNOOZED:
                continue  # a visitor message woke it meanwhile
            conversation.status = Conversation.Status.OPEN
            conversation.snoozed_until = None
            conversation.save(update_fields=["status", "snoozed_until"])
            routed = assignment.route(conversation)
            webhooks.record_status_change(
                conversation, Conversation.Status.SNOOZED, {"kind": "system", "id": None}
            )
            sends = outbox.conversation_sends(
                conversation.site_id, conversation.visitor_id, conversation_summary(conversation)
            )
            recorded.append(outbox.record_sends(sends + routed))
    return recorded


RATING_COMMENT_MAX = 2000


def rate_conversation(
    visitor_id: int, conversation_id: Any, score: Any, comment: Any = ""
) -> Recorded:
    """The visitor's satisfaction rating (1-5, optional comment) of a resolved conversation.

    May be given again until the conversation reopens; the last one counts.
    """
    if not isinstance(score, int) or isinstance(score, bool) or not 1 <= score <= 5:
        raise errors.invalid(_("The rating must be a whole number from 1 to 5."))
    comment = "" if comment is None else comment
    if not isinstance(comment, str) or len(comment) > RATING_COMMENT_MAX:
        raise errors.invalid(
            _("The comment must be text of at most %(limit)d characters.")
            % {"limit": RATING_COMMENT_MAX}
        )
    with transaction.atomic():
        visible = check_visitor_conversation(visitor_id, conversation_id)
        conversation = (
            Conversation.objects.select_for_update(of=("self",))
            .select_related("visitor", "site")
            .get(pk=visible.pk)
        )
        if conversation.status != Conversation.Status.RESOLVED:
            raise errors.invalid(_("You can rate a conversation once it is resolved."))
        conversation.rating = score
        conversation.rating_comment = comment.strip()
        conversation.rated_at = timezone.now()
        conversation.save(update_fields=["rating", "rating_comment", "rated_at"])
        summary = conversation_summary(conversation)
        assignee = conversation.assignee_id
        sends = [
            (
                outbox.site_agents_group(conversation.site_id),
                {"type": "chat.conversation", "summary": summary, "assignee": assignee},
            )
        ]
        recorded = outbox.record_sends(sends)
    logger.info("conversation.rated", extra={"conversation": conversation.pk, "score": score})
    return recorded


def mark_read_by_agent(user: AbstractBaseUser, conversation_id: Any, seq: Any) -> Conversation:
    conversation = check_agent_conversation(user, conversation_id)
    _check_seq(seq)
    Conversation.objects.filter(pk=conversation.pk, agent_read_seq__lt=seq).update(
        agent_read_seq=min(seq, conversation.last_seq)
    )
    return conversation


def mark_read_by_visitor(visitor_id: int, conversation_id: Any, seq: Any) -> Conversation:
    conversation = check_visitor_conversation(visitor_id, conversation_id)
    _check_seq(seq)
    Conversation.objects.filter(pk=conversation.pk, visitor_read_seq__lt=seq).update(
        visitor_read_seq=min(seq, conversation.last_seq)
    )
    return conversation


def _check_seq(seq: Any) -> None:
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise errors.invalid(_("The field 'seq' must be a message sequence number (0 or more)."))
