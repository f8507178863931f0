"""One error family for every boundary: HTTP API answers and WebSocket error frames.

Each error has a stable machine-readable `code` (clients switch on it), an HTTP status for the
API, and a human sentence that says what to fix.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions as drf_exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    MALFORMED = "malformed"
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    RATE_LIMITED = "rate_limited"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    UNAUTHENTICATED = "unauthenticated"
    UNAVAILABLE = "unavailable"
    UNKNOWN_SITE = "unknown_site"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    BLOCKED = "blocked"
    UNSUPPORTED_TYPE = "unsupported_type"
    INVALID_TRANSITION = "invalid_transition"
    INTERNAL = "internal"


class GoflyError(Exception):
    """A refusal the client can act on. `detail` is a full sentence, translated lazily."""

    status = 400

    def __init__(self, code: ErrorCode, detail: Any, status: int | None = None) -> None:
        super().__init__(str(detail))
        self.code = code
        self.detail = detail
        if status is not None:
            self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "detail": str(self.detail)}


def malformed(reason: str) -> GoflyError:
    return GoflyError(ErrorCode.MALFORMED, reason)


def invalid(detail: Any) -> GoflyError:
    return GoflyError(ErrorCode.INVALID, detail)


def conversation_not_found() -> GoflyError:
    return GoflyError(
        ErrorCode.NOT_FOUND,
        _("That conversation does not exist or you cannot see it."),
        status=404,
    )


def database_unavailable() -> GoflyError:
    return GoflyError(
        ErrorCode.UNAVAILABLE,
        _("The message could not be saved right now; it was not stored. Send it again."),
        status=503,
    )


def internal_error() -> GoflyError:
    return GoflyError(
        ErrorCode.INTERNAL,
        _("Something went wrong on our side; the frame was not processed. Try again."),
        status=500,
    )


def drf_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Render both our errors and DRF's own as `{"code", "detail"}`."""
    if isinstance(exc, GoflyError):
        logger.info("api.refused", extra={"code": str(exc.code), "status": exc.status})
        return Response(exc.as_dict(), status=exc.status)
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf_exceptions.ValidationError):
        response.data = {
            "code": str(ErrorCode.INVALID),
            "detail": str(_("Some fields are not valid.")),
            "fields": exc.detail,
        }
    elif isinstance(exc, drf_exceptions.NotAuthenticated | drf_exceptions.AuthenticationFailed):
        response.data = {"code": str(ErrorCode.UNAUTHENTICATED), "detail": str(exc.detail)}
    elif isinstance(exc, drf_exceptions.PermissionDenied):
        response.data = {"code": str(ErrorCode.FORBIDDEN), "detail": str(exc.detail)}
    elif isinstance(exc, drf_exceptions.ParseError):
        response.data = {"code": str(ErrorCode.MALFORMED), "detail": str(exc.detail)}
    elif isinstance(exc, drf_exceptions.NotFound):
        response.data = {"code": str(ErrorCode.NOT_FOUND), "detail": str(exc.detail)}
    elif isinstance(exc, drf_exceptions.Throttled):
        response.data = {"code": str(ErrorCode.RATE_LIMITED), "detail": str(exc.detail)}
    else:
        response.data = {"code": str(exc.default_code), "detail": str(response.data)}
    return response
