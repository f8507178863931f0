"""Business hours and whether live chat is available to a visitor right now.

A site's hours are written in its own time zone as spans per weekday:
`{"mon": [["09:00", "18:00"]], "sat": [["10:00", "14:00"]]}`. A day left out, or with no spans,
is closed; no days at all (`{}`) means always open. A span ends before it starts only by mistake,
so a night shift is written as two spans, one on each day. "24:00" may end a span.
"""

from __future__ import annotations

import logging
import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from agents.models import Agent, AgentStatus
from chat.models import Conversation, Site

logger = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
END_OF_DAY = "24:00"

# Why live chat is not available; the widget switches on these.
CLOSED = "closed"
NOBODY_ONLINE = "nobody_online"


@dataclass(frozen=True)
class Availability:
    available: bool
    reason: str | None  # CLOSED or NOBODY_ONLINE when not available


def _minutes(value: object, *, may_end_day: bool) -> int:
    if may_end_day and value == END_OF_DAY:
        return 24 * 60
    match = _TIME.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(
            _("“%(value)s” is not a time; write it as HH:MM, e.g. 09:00."),
            params={"value": value},
        )
    return int(match[1]) * 60 + int(match[2])


def check_weekly_hours(value: object) -> None:
    """Raise a ValidationError that says what to fix, unless `value` is valid weekly hours."""
    if not isinstance(value, dict):
        raise ValidationError(
            _('Business hours must be an object of weekdays, e.g. {"mon": [["09:00", "18:00"]]}.')
        )
    for day, spans in value.items():
        if day not in WEEKDAYS:
            raise ValidationError(
                _("Unknown weekday “%(day)s”; use mon, tue, wed, thu, fri, sat or sun."),
                params={"day": day},
            )
        if not isinstance(spans, list) or not all(
            isinstance(span, list) and len(span) == 2 for span in spans
        ):
            raise ValidationError(
                _('The hours of %(day)s must be a list of ["HH:MM", "HH:MM"] pairs.'),
                params={"day": day},
            )
        for start, end in spans:
            if _minutes(start, may_end_day=False) >= _minutes(end, may_end_day=True):
                raise ValidationError(
                    _(
                        "On %(day)s, %(start)s–%(end)s ends before it starts; "
                        "write a span past midnight as two, one on each day."
                    ),
                    params={"day": day, "start": start, "end": end},
                )


def is_open(site: Site, now: datetime) -> bool:
    """Whether `now` (an aware datetime, any zone) falls in the site's business hours."""
    hours = site.business_hours or {}
    if not hours:
        return True
    try:
        zone = zoneinfo.ZoneInfo(site.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        # Written around the admin's validation, or the tz database lost the name: hours in
        # UTC are wrong by the offset, which beats refusing every visitor with an error.
        logger.warning("hours.unknown_time_zone", extra={"site": site.pk, "tz": site.timezone})
        zone = zoneinfo.ZoneInfo("UTC")
    local = now.astimezone(zone)
    minute = local.hour * 60 + local.minute
    spans = hours.get(WEEKDAYS[local.weekday()]) or []
    return any(
        _minutes(start, may_end_day=False) <= minute < _minutes(end, may_end_day=True)
        for start, end in spans
    )


def anyone_online(site: Site) -> bool:
    """Whether an agent who would be routed this site's new conversations is online.

    Routing picks online agents only (away and busy get nothing new), from the site's team
    when it has one, else from the site's own agents; so that is who counts here. An online
    agent at full capacity counts: the visitor then waits in line for a slot, with live chat.
    """
    agents = Agent.objects.filter(status=AgentStatus.ONLINE)
    if site.team_id is not None:
        agents = agents.filter(teams=site.team_id)
    else:
        agents = agents.filter(sites=site)
    return agents.exists()


def in_progress(visitor_id: int | None) -> bool:
    """Whether the visitor's latest conversation is still going (not resolved)."""
    if visitor_id is None:
        return False
    latest = Conversation.objects.filter(visitor_id=visitor_id).order_by("-id")
    status = latest.values_list("status", flat=True).first()
    return status is not None and status != Conversation.Status.RESOLVED


def availability(site: Site, now: datetime, visitor_id: int | None = None) -> Availability:
    """Whether the widget offers live chat now, or the leave-a-message form and why.

    A visitor whose conversation is in progress keeps live chat whatever the hour or who is
    online: its messages reach the agent who has it, or wait in line as any message does, and
    swapping the thread for a form mid-conversation would only confuse.
    """
    if in_progress(visitor_id):
        return Availability(True, None)
    reason = CLOSED if not is_open(site, now) else None
    if reason is None and not anyone_online(site):
        reason = NOBODY_ONLINE
    # The bot answers at any hour (a handoff nobody can take waits in line); asked last, so a
    # session while people are available costs no query for it.
    if reason is None or bot_serves(site.pk):
        return Availability(True, None)
    return Availability(False, reason)


def bot_serves(site_id: int) -> bool:
    """Whether the site's bot is on and has a trained version to answer with."""
    # Imported here: nlp's models import chat's.
    from nlp.models import ModelVersion

    return ModelVersion.objects.filter(
        site_id=site_id, state=ModelVersion.State.ACTIVE, site__bot__enabled=True
    ).exists()


def people_available(site: Site, now: datetime) -> bool:
    """Whether a person could answer now: within business hours and someone online."""
    return is_open(site, now) and anyone_online(site)
