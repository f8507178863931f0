"""Slots: the facts a visitor states in passing, found by patterns and kept for the session.

An order number is a run of digits after a word that names one ("order", "订单", "单号", "#"),
or a run of at least 8 digits that is not a phone number; a phone is a Chinese mobile number
(11 digits starting 1[3-9]) or an international number written with "+"; an email address is
the usual local@domain. Patterns, not a model: they are predictable and need no training.
"""

from __future__ import annotations

import re
import unicodedata

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_MOBILE_CN = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d[\d -]{6,16}\d")
_ORDER_AFTER_WORD = re.compile(
    r"(?:order|订单号?|单号|订单编号|#)\s*(?:number|no\.?|num|号|是|为|:)?\s*#?\s*(\d{4,20})",
    re.IGNORECASE,
)
_LONG_DIGITS = re.compile(r"(?<!\d)\d{8,20}(?!\d)")


def find_slots(text: str) -> dict[str, str]:
    """Slots stated in one message; a later message's value replaces an earlier one."""
    text = unicodedata.normalize("NFKC", text)
    found: dict[str, str] = {}
    if email := _EMAIL.search(text):
        found["email"] = email.group()
    phone = _MOBILE_CN.search(text) or _PHONE_INTL.search(text)
    if phone:
        found["phone"] = re.sub(r"[ -]", "", phone.group())
    without_contacts = _MOBILE_CN.sub(" ", _EMAIL.sub(" ", _PHONE_INTL.sub(" ", text)))
    order = _ORDER_AFTER_WORD.search(without_contacts) or _LONG_DIGITS.search(without_contacts)
    if order:
        found["order_number"] = order.group(order.lastindex or 0)
    return found
