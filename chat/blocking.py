"""Blocks: refusing live chat to a visitor, or to every visitor from an IP address or network.

A block is checked when a visitor starts a session, opens its socket and leaves a message.
Checking is one indexed query for the site's blocks still in force; a site has a handful, so
matching the address against each network happens in Python. Nothing is cached: a block
applies to the very next request, which is what an agent who just pressed "Block" expects.
A visitor whose socket is open when a block lands is sent `chat.blocked` through its group
and disconnected (see `block_visitor` and `notify_blocked`).
"""

from __future__ import annotations

import ipaddress
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from chat import outbox
from chat.errors import ErrorCode, GoflyError
from chat.models import Block, Visitor
from chat.outbox import Recorded, Send, visitor_group

logger = logging.getLogger(__name__)
# Blocks are a security matter: ops can route them on their own.
security_logger = logging.getLogger("gofly.security.blocking")

REASON_MAX = 500
# A network block disconnects at most this many of the site's visitors seen lately.
# TODO(gofly): a larger live audience from one network keeps its sockets until they reconnect
# (refused then); a per-site visitors group would reach them all, once sites grow that large.
NOTIFY_LIMIT = 1000


def blocked() -> GoflyError:
    return GoflyError(ErrorCode.BLOCKED, _("This chat is not available to you."), status=403)


def _in_force(site_id: int) -> Any:
    now = timezone.now()
    return Block.objects.filter(site_id=site_id).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )


def _address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip) if ip else None
    except ValueError:
        return None


def _covers(network: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        # An IPv4 address never lies in an IPv6 network (and back): `in` is simply False.
        return address in ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False  # a row written around the validators; it blocks nobody


def is_blocked(site_id: int, visitor_id: int | None, ip: str | None) -> bool:
    """Whether a block in force names this visitor or covers this address on the site."""
    address = _address(ip)
    for block_visitor_id, network in _in_force(site_id).values_list("visitor_id", "ip_network"):
        if visitor_id is not None and block_visitor_id == visitor_id:
            return True
        if network and address is not None and _covers(network, address):
            return True
    return False


def check_not_blocked(site_id: int, visitor_id: int | None, ip: str | None) -> None:
    if is_blocked(site_id, visitor_id, ip):
        security_logger.info(
            "blocking.refused", extra={"site": site_id, "visitor": visitor_id, "ip": ip}
        )
        raise blocked()


def blocked_sends(block: Block) -> list[Send]:
    """`chat.blocked` to the group of every visitor the block catches who may be connected."""
    if block.visitor_id is not None:
        ids = [block.visitor_id]
    else:
        recent = timezone.now() - timedelta(
            seconds=int(settings.GOFLY["widget"]["token_max_age_seconds"])
        )
        seen = Visitor.objects.filter(
            site_id=block.site_id, ip__isnull=False, last_seen__gte=recent
        )
        ids = [
            pk
            for pk, ip in seen.values_list("pk", "ip").iterator()
            if (address := _address(ip)) is not None and _covers(block.ip_network, address)
        ][:NOTIFY_LIMIT]
    return [(visitor_group(pk), {"type": "chat.blocked"}) for pk in ids]


def notify_blocked(block: Block) -> Recorded:
    """Record the disconnect notices of a block just written, in the caller's transaction."""
    return outbox.record_sends(blocked_sends(block))


def block_visitor(user: AbstractBaseUser, conversation_id: Any, reason: Any) -> Recorded:
    """An agent blocks the visitor of a conversation it can see; the visitor is disconnected."""
    from chat.actions import check_agent_conversation

    if reason is None:
        reason = ""
    if not isinstance(reason, str) or len(reason) > REASON_MAX:
        raise GoflyError(
            ErrorCode.INVALID,
            _("The field 'reason' must be text of at most %(max)d characters.")
            % {"max": REASON_MAX},
        )
    with transaction.atomic():
        conversation = check_agent_conversation(user, conversation_id)
        block = Block.objects.create(
            site_id=conversation.site_id,
            visitor_id=conversation.visitor_id,
            reason=reason.strip(),
            created_by=user,
        )
        recorded = notify_blocked(block)
    security_logger.info(
        "blocking.visitor_blocked",
        extra={"block": block.pk, "visitor": block.visitor_id, "by": user.pk},
    )
    return recorded
