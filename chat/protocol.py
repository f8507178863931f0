"""Parsing and validation of client frames (see docs/protocol.md).

Nothing here touches the database: a frame is refused before any work is done for it.
"""

from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from chat import errors
from chat.errors import ErrorCode, GoflyError

CLIENT_ID_MAX = 64
TYPING_PREVIEW_MAX = 500


def max_text_bytes() -> int:
    return int(settings.GOFLY["messages"]["max_text_bytes"])


def too_large() -> GoflyError:
    return GoflyError(
        ErrorCode.TOO_LARGE,
        _("The message is longer than %(limit)d bytes; split it or send a file.")
        % {"limit": max_text_bytes()},
    )


def parse_frame(text: str | None, data: bytes | None, allowed_types: frozenset[str]) -> dict:
    """Decode one client frame into a dict with a known `type`, or raise a GoflyError."""
    if text is None:
        raise errors.malformed(_("Frames must be JSON text, not binary."))
    # JSON escaping can at most make text a few times longer than its bytes; anything well
    # past the body limit cannot be a valid frame, so it is refused without parsing.
    if len(text) > 6 * max_text_bytes() + 1024:
        raise too_large()
    try:
        frame = json.loads(text)
    except ValueError:
        raise errors.malformed(_("The frame is not valid JSON.")) from None
    if not isinstance(frame, dict):
        raise errors.malformed(_("A frame must be a JSON object with a 'type'."))
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in allowed_types:
        raise GoflyError(
            ErrorCode.UNKNOWN_TYPE,
            _("Unknown frame type %(type)r; expected one of: %(allowed)s.")
            % {"type": kind, "allowed": ", ".join(sorted(allowed_types))},
        )
    return frame


def client_id_of(frame: dict) -> str:
    client_id = frame.get("client_id")
    if not isinstance(client_id, str) or not (1 <= len(client_id) <= CLIENT_ID_MAX):
        raise errors.invalid(
            _("The field 'client_id' must be a string of 1 to %(max)d characters.")
            % {"max": CLIENT_ID_MAX}
        )
    return client_id


def body_of(frame: dict) -> str:
    body = frame.get("body", "")
    if not isinstance(body, str):
        raise errors.invalid(_("The field 'body' must be a string."))
    if len(body.encode("utf-8")) > max_text_bytes():
        raise too_large()
    has_attachment = frame.get("attachment") is not None
    if not body.strip() and not has_attachment:
        raise errors.invalid(_("The message is empty; write something or attach a file."))
    return body


def after_seq_of(frame: dict) -> int:
    after = frame.get("after_seq", 0)
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise errors.invalid(_("The field 'after_seq' must be a sequence number (0 or more)."))
    return after


def typing_of(frame: dict, allow_preview: bool) -> tuple[bool, str]:
    state = frame.get("state", "start")
    if state not in ("start", "stop"):
        raise errors.invalid(_("The field 'state' must be 'start' or 'stop'."))
    preview = frame.get("preview", "") if allow_preview else ""
    if not isinstance(preview, str):
        raise errors.invalid(_("The field 'preview' must be a string."))
    return state == "start", preview[:TYPING_PREVIEW_MAX]


class TokenBucket:
    """Allow `rate` events a second on average with bursts up to `burst`."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def rate_limited() -> GoflyError:
    return GoflyError(
        ErrorCode.RATE_LIMITED,
        _("You are sending too fast; wait a moment and send again."),
        status=429,
    )


def message_bucket() -> TokenBucket:
    limits = settings.GOFLY["messages"]
    return TokenBucket(float(limits["rate_per_second"]), float(limits["rate_burst"]))


def frame_bucket() -> TokenBucket:
    # Typing, read and resume frames are cheap but not free: allow four times the message rate.
    limits = settings.GOFLY["messages"]
    return TokenBucket(4 * float(limits["rate_per_second"]), 4 * float(limits["rate_burst"]))


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
