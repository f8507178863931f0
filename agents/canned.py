"""Canned replies: which ones an agent is offered, how they are rendered, who may change them.

A reply's body is text the agent's colleagues wrote, so it is never handed to Django's template
engine (that would let anyone with a reply read settings or load tags). Only the variables in
`VARIABLES` are replaced, by one regular expression; anything else between braces, `{% … %}`
included, stays exactly as written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils.translation import gettext as _

from agents.models import SHORTCUT_PATTERN, Agent, CannedReply
from chat import actions, errors
from chat.errors import ErrorCode, GoflyError
from chat.models import Conversation

logger = logging.getLogger(__name__)

MAX_TITLE_CHARS = 100
MAX_BODY_CHARS = 4000
MAX_LISTED = 50

# `{{ visitor.name }}`, spaces inside the braces optional.
_VARIABLE = re.compile(r"\{\{\s*([a-z_]+)\.([a-z_]+)\s*\}\}")
_SHORTCUT = re.compile(SHORTCUT_PATTERN)


def _agent_name(conversation: Conversation, user: AbstractBaseUser) -> str:
    agent = getattr(user, "agent", None)
    return (agent.display_name if agent else "") or user.get_username()


# A visitor who never gave a name renders as empty rather than "Visitor 4f3a…": the text goes
# to the visitor, who would not recognise the placeholder name the dashboard shows.
# TODO(gofly): a per-use fallback such as `{{ visitor.name | default:"there" }}` once writers
# ask for it; it must stay a whitelist, parsed here, never Django's filters.
VARIABLES: dict[tuple[str, str], Callable[[Conversation, AbstractBaseUser], str]] = {
    ("visitor", "name"): lambda conversation, user: conversation.visitor.name,
    ("visitor", "email"): lambda conversation, user: conversation.visitor.email,
    ("agent", "name"): _agent_name,
    ("site", "name"): lambda conversation, user: conversation.site.name,
    ("conversation", "id"): lambda conversation, user: str(conversation.pk),
}


# ---------------------------------------------------------------------------------------------
# Reading


def _agent_of(user: AbstractBaseUser) -> Agent | None:
    return getattr(user, "agent", None)


def _visible(user: AbstractBaseUser, site_id: int | None) -> QuerySet[CannedReply]:
    """The user's own and the shared replies, for one site or for every site it works on."""
    agent = _agent_of(user)
    owners = Q(owner__isnull=True) | Q(owner=agent) if agent else Q(owner__isnull=True)
    queryset = CannedReply.objects.filter(owners)
    if site_id is not None:
        return queryset.filter(Q(site__isnull=True) | Q(site_id=site_id))
    site_ids = actions.agent_site_ids(user)
    if site_ids is None:
        return queryset
    return queryset.filter(Q(site__isnull=True) | Q(site_id__in=site_ids))


def replies_for(user: AbstractBaseUser, site_id: int | None = None) -> list[CannedReply]:
    """What the agent is offered, by shortcut; its own reply hides a shared one of that name."""
    replies = list(_visible(user, site_id).order_by("shortcut", "owner_id", "pk"))
    personal = {reply.shortcut for reply in replies if reply.owner_id is not None}
    return [
        reply for reply in replies if reply.owner_id is not None or reply.shortcut not in personal
    ]


def search_replies(
    user: AbstractBaseUser, query: str, site_id: int | None = None
) -> list[CannedReply]:
    """Replies whose shortcut starts with the query or whose title contains it."""
    needle = query.strip().lstrip("/").casefold()
    found = [
        reply
        for reply in replies_for(user, site_id)
        if reply.shortcut.startswith(needle) or needle in reply.title.casefold()
    ]
    # Shortcut matches first: `/re` should offer /refund before a title that mentions "re".
    found.sort(key=lambda reply: (not reply.shortcut.startswith(needle), reply.shortcut))
    # TODO(gofly): filter in SQL once a team keeps hundreds of replies; until then one
    # agent's list is small enough to shadow and match in Python.
    return found[:MAX_LISTED]


def reply_summary(reply: CannedReply) -> dict[str, Any]:
    return {
        "id": reply.pk,
        "shortcut": reply.shortcut,
        "title": reply.title,
        "body": reply.body,
        "shared": reply.owner_id is None,
    }


def reply_not_found() -> GoflyError:
    return GoflyError(
        ErrorCode.NOT_FOUND, _("That canned reply does not exist or you cannot see it."), status=404
    )


def check_reply(user: AbstractBaseUser, reply_id: int) -> CannedReply:
    """A reply the user may use: its own or a shared one, on a site it works on."""
    reply = _visible(user, None).filter(pk=reply_id).first()
    if reply is None:
        raise reply_not_found()
    return reply


# ---------------------------------------------------------------------------------------------
# Rendering


def render_text(body: str, conversation: Conversation, user: AbstractBaseUser) -> str:
    """Replace the known variables in `body`; unknown ones stay as written."""

    def replace(match: re.Match[str]) -> str:
        value = VARIABLES.get((match.group(1), match.group(2)))
        return match.group(0) if value is None else value(conversation, user)

    return _VARIABLE.sub(replace, body)


def render_reply(user: AbstractBaseUser, reply_id: int, conversation_id: Any) -> str:
    """The reply's text for a conversation the agent can see, variables filled in."""
    conversation = actions.check_agent_conversation(user, conversation_id)
    reply = check_reply(user, reply_id)
    if reply.site_id is not None and reply.site_id != conversation.site_id:
        raise GoflyError(
            ErrorCode.INVALID, _("That canned reply is not for this conversation's site.")
        )
    conversation = Conversation.objects.select_related("visitor", "site").get(pk=conversation.pk)
    return render_text(reply.body, conversation, user)


# ---------------------------------------------------------------------------------------------
# Changing


def _check_text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise errors.invalid(
            _("The field '%(field)s' must be text of 1 to %(limit)d characters.")
            % {"field": field, "limit": limit}
        )
    return value


def create_reply(
    user: AbstractBaseUser, shortcut: Any, title: Any, body: Any, shared: Any = False
) -> CannedReply:
    """Store a personal reply, or a shared one when a staff user asks for it."""
    if not isinstance(shortcut, str) or not _SHORTCUT.match(shortcut):
        raise errors.invalid(
            _("The field 'shortcut' must be 1 to 32 lowercase letters, digits, '-' or '_'.")
        )
    title = _check_text(title, "title", MAX_TITLE_CHARS)
    body = _check_text(body, "body", MAX_BODY_CHARS)
    if not isinstance(shared, bool):
        raise errors.invalid(_("The field 'shared' must be true or false."))
    owner = None if shared else _agent_of(user)
    if shared and not user.is_staff:
        raise GoflyError(
            ErrorCode.FORBIDDEN, _("Only staff can create shared canned replies."), status=403
        )
    if not shared and owner is None:
        raise GoflyError(
            ErrorCode.FORBIDDEN,
            _("Only agents keep personal canned replies; create a shared one instead."),
            status=403,
        )
    reply = CannedReply(shortcut=shortcut, title=title.strip(), body=body, owner=owner)
    try:
        reply.validate_constraints()
        # A concurrent create can pass the check above; the constraint still holds.
        with transaction.atomic():
            reply.save()
    except (ValidationError, IntegrityError):
        raise _duplicate(shortcut, shared) from None
    logger.info("canned.created", extra={"reply": reply.pk, "shared": shared})
    return reply


def _duplicate(shortcut: str, shared: bool) -> GoflyError:
    if shared:
        detail = _("A shared canned reply with the shortcut /%(shortcut)s already exists.")
    else:
        detail = _("You already have a canned reply with the shortcut /%(shortcut)s.")
    return errors.invalid(detail % {"shortcut": shortcut})


def delete_reply(user: AbstractBaseUser, reply_id: int) -> None:
    """Delete the user's own reply, or a shared one when the user is staff."""
    reply = check_reply(user, reply_id)
    if reply.owner_id is None and not user.is_staff:
        raise GoflyError(
            ErrorCode.FORBIDDEN, _("Only staff can delete shared canned replies."), status=403
        )
    reply.delete()
    logger.info("canned.deleted", extra={"reply": reply_id, "shared": reply.owner_id is None})
