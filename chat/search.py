"""Search over the whole message history an agent may see: live and archived messages.

Text matches are case-insensitive substrings (`icontains`), so they work for Chinese, which has
no spaces between words: `退款` finds `我想申请退款谢谢`. On PostgreSQL Django spells that
`UPPER(body) LIKE UPPER(%s)`, and migration 0011 indexes exactly that expression with
`gin_trgm_ops` on chat_message and chat_archivedmessage, so the planner can use the index. A
trigram index cannot narrow a query shorter than three characters; such a query reads every
row the other filters leave (docs/architecture.md, Search, has the plans and timings).

Months exported to compressed CSV files (archive mode "export") are not searched: reading
every file for each query would be far too slow. Admin still shows them per conversation.

Results are newest first and paged by a keyset cursor on `(created_at, id)`. A message lives in
exactly one of the two tables at any time (the archive moves it in one transaction, or as a
whole partition), and ids are shared between them, so the pair is unique across both.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Model, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from chat import actions, errors
from chat.models import ArchivedMessage, Conversation, Message

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_QUERY_CHARS = 200
# Characters of context kept on each side of the match in a hit's snippet.
SNIPPET_CONTEXT = 40


@dataclass(frozen=True)
class SearchCriteria:
    """What to look for. Every given criterion must hold (they combine with AND)."""

    text: str = ""
    # A visitor's public id (exact), or part of their name or email.
    visitor: str = ""
    # A user id: messages that agent sent, and messages of conversations assigned to them.
    agent: int | None = None
    # Inclusive calendar days in the server's time zone.
    date_from: date | None = None
    date_to: date | None = None
    status: str = ""
    # A label name (as agents type it, any case): conversations that carry it now.
    label: str = ""

    def is_empty(self) -> bool:
        return not (
            self.text
            or self.visitor
            or self.agent is not None
            or self.date_from
            or self.date_to
            or self.status
            or self.label
        )


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the next page holds what sorts strictly after this hit."""

    created_at: datetime
    id: int

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, value: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
            when, pk = raw.split("|")
            created_at = datetime.fromisoformat(when)
            if created_at.tzinfo is None:
                raise ValueError(when)
            return cls(created_at, int(pk))
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise errors.invalid(
                _("The cursor is not valid; pass the next_cursor of the previous page unchanged.")
            ) from exc


@dataclass(frozen=True)
class SearchPage:
    results: list[dict[str, Any]]
    next_cursor: str | None


# ---------------------------------------------------------------------------------------------
# Checking the request


def _parse_day(value: str, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise errors.invalid(
            _("The field '%(name)s' must be a date written YYYY-MM-DD, e.g. 2026-03-31.")
            % {"name": name}
        ) from exc


def check_search(params: dict[str, str]) -> tuple[SearchCriteria, Cursor | None, int]:
    """Turn query parameters into criteria, cursor and page size, or refuse them."""
    text = params.get("q", "").strip()
    if len(text) > MAX_QUERY_CHARS:
        raise errors.invalid(
            _("The search text is too long; use at most %(max)d characters.")
            % {"max": MAX_QUERY_CHARS}
        )
    agent = params.get("agent", "").strip()
    if agent and not agent.isdigit():
        raise errors.invalid(_("The field 'agent' must be a user id (a number)."))
    status = params.get("status", "").strip()
    if status and status not in Conversation.Status.values:
        raise errors.invalid(_("Unknown status; use open, pending, snoozed or resolved."))
    date_from = _parse_day(params.get("from", "").strip(), "from")
    date_to = _parse_day(params.get("to", "").strip(), "to")
    if date_from and date_to and date_from > date_to:
        raise errors.invalid(_("The date 'from' is after the date 'to'; swap them."))
    limit_text = params.get("limit", "").strip()
    if limit_text and (not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT):
        raise errors.invalid(
            _("The field 'limit' must be a number from 1 to %(max)d.") % {"max": MAX_LIMIT}
        )
    criteria = SearchCriteria(
        text=text,
        visitor=params.get("visitor", "").strip(),
        agent=int(agent) if agent else None,
        date_from=date_from,
        date_to=date_to,
        status=status,
        label=params.get("label", "").strip(),
    )
    if criteria.is_empty():
        raise errors.invalid(
            _(
                "Give something to search for: text, a visitor, an agent, a label, dates or a "
                "status."
            )
        )
    cursor_text = params.get("cursor", "").strip()
    cursor = Cursor.decode(cursor_text) if cursor_text else None
    return criteria, cursor, int(limit_text) if limit_text else DEFAULT_LIMIT


# ---------------------------------------------------------------------------------------------
# Searching


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def _matching(
    model: type[Model], user: AbstractBaseUser, criteria: SearchCriteria, cursor: Cursor | None
) -> QuerySet:
    visible = actions.conversations_visible_to(user)
    if criteria.status:
        visible = visible.filter(status=criteria.status)
    if criteria.visitor:
        visible = visible.filter(
            Q(visitor__public_id=criteria.visitor)
            | Q(visitor__name__icontains=criteria.visitor)
            | Q(visitor__email__icontains=criteria.visitor)
        )
    if criteria.label:
        # Stored label names are lower case (chat.teamwork.set_labels).
        visible = visible.filter(labels__name=criteria.label.lower())
    queryset = model.objects.filter(conversation__in=visible.values("pk"))
    if criteria.text:
        # Paired with the UPPER(body) trigram index of migration 0011; see the module docstring.
        queryset = queryset.filter(body__icontains=criteria.text)
    if criteria.agent is not None:
        assigned = Conversation.objects.filter(assignee_id=criteria.agent).values("pk")
        queryset = queryset.filter(Q(sender_user_id=criteria.agent) | Q(conversation__in=assigned))
    # Bounds on created_at, the partition key, also let PostgreSQL skip whole months.
    if criteria.date_from:
        queryset = queryset.filter(created_at__gte=_day_start(criteria.date_from))
    if criteria.date_to:
        queryset = queryset.filter(created_at__lt=_day_start(criteria.date_to + timedelta(1)))
    if cursor is not None:
        queryset = queryset.filter(
            Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id)
        )
    return queryset.order_by("-created_at", "-id")


def snippet(body: str, text: str, context: int = SNIPPET_CONTEXT) -> str:
    """Part of `body` around the first match of `text`, with `…` where it was cut."""
    at = body.casefold().find(text.casefold()) if text else -1
    if at < 0 or len(body.casefold()) != len(body):
        # No text asked for, or case folding changed lengths (ß → ss): show the beginning.
        at = 0
    start = max(0, at - context)
    end = min(len(body), at + len(text) + context)
    return ("…" if start else "") + body[start:end] + ("…" if end < len(body) else "")


def _hit(message: Message | ArchivedMessage, text: str, archived: bool) -> dict[str, Any]:
    conversation = message.conversation
    sender = message.sender_user
    if message.sender_kind == Message.SenderKind.VISITOR:
        sender_name = str(conversation.visitor)
    elif sender is not None:
        agent = getattr(sender, "agent", None)
        sender_name = agent.display_name if agent and agent.display_name else sender.get_username()
    else:
        sender_name = ""
    return {
        "id": message.pk,
        "conversation": message.conversation_id,
        "seq": message.seq,
        "sender": {"kind": message.sender_kind, "name": sender_name},
        "created_at": message.created_at.isoformat(),
        "snippet": snippet(message.body, text),
        "archived": archived,
        "conversation_status": conversation.status,
        "visitor": {"id": conversation.visitor.public_id, "name": str(conversation.visitor)},
    }


def search_messages(
    user: AbstractBaseUser,
    criteria: SearchCriteria,
    cursor: Cursor | None = None,
    limit: int = DEFAULT_LIMIT,
) -> SearchPage:
    """One page of the messages matching `criteria` that `user` may see, newest first.

    Visibility is `actions.conversations_visible_to`: an agent finds what it could open (its
    sites' unassigned conversations and its own), a superuser everything, so every hit opens.
    """
    related = ("conversation__visitor", "sender_user__agent")
    found: list[tuple[Message | ArchivedMessage, bool]] = []
    for model, archived in ((Message, False), (ArchivedMessage, True)):
        # One more than a page from each table: enough to merge both and know if more follow.
        rows = _matching(model, user, criteria, cursor).select_related(*related)[: limit + 1]
        found.extend((row, archived) for row in rows)
    found.sort(key=lambda pair: (pair[0].created_at, pair[0].pk), reverse=True)
    page = found[:limit]
    next_cursor = None
    if len(found) > limit:
        last = page[-1][0]
        next_cursor = Cursor(last.created_at, last.pk).encode()
    results = [_hit(message, criteria.text, archived) for message, archived in page]
    logger.info(
        "search.done",
        extra={"user": user.pk, "hits": len(results), "more": next_cursor is not None},
    )
    return SearchPage(results, next_cursor)
