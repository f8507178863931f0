"""Signed, expiring visitor tokens.

A token names one visitor of one site and nothing else, so its holder can reach only that
visitor's conversations. Tampered or expired tokens are logged to `gofly.security` so operators
can route them apart from ordinary traffic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core import signing

security_logger = logging.getLogger("gofly.security")

SALT = "gofly.visitor-token"


@dataclass(frozen=True)
class VisitorClaim:
    site_id: int
    visitor_id: int


def issue_visitor_token(site_id: int, visitor_id: int) -> str:
    return signing.dumps({"s": site_id, "v": visitor_id}, salt=SALT, compress=False)


def read_visitor_token(token: str | None) -> VisitorClaim | None:
    """Return the claim, or None when the token is missing, tampered with or expired."""
    if not token:
        return None
    max_age = settings.GOFLY["widget"]["token_max_age_seconds"]
    try:
        data = signing.loads(token, salt=SALT, max_age=max_age)
    except signing.SignatureExpired:
        security_logger.info("visitor_token.expired")
        return None
    except signing.BadSignature:
        security_logger.warning("visitor_token.bad_signature")
        return None
    try:
        return VisitorClaim(site_id=int(data["s"]), visitor_id=int(data["v"]))
    except (KeyError, TypeError, ValueError):
        security_logger.warning("visitor_token.bad_payload")
        return None
