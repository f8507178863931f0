"""Importing labelled questions (CSV or JSON of question text and intent) into a site's bot.

Used by `manage.py gofly_bot import` and the admin upload. Each row is taken whole or refused
with a reason; the taken rows are stored in one transaction, so a file is never stored half.
A file that cannot be read at all (not UTF-8, not JSON, no header) is refused as a whole with
`ImportRefused` and nothing is stored.

CSV: a header row with a text column (`text`, `question` or `utterance`) and an intent column
(`intent`, `category` or `label`), optionally `language` (en or zh; guessed from the text when
absent). Rows are numbered as a spreadsheet shows them: the header is row 1.

JSON: a list of objects with the same keys, or an object whose `examples` is such a list.
Rows are numbered from 1.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from chat.models import Site
from nlp.models import LANGUAGES, NAME_PATTERN, Example, Intent
from nlp.normalize import language_of

logger = logging.getLogger(__name__)

TEXT_KEYS = ("text", "question", "utterance")
INTENT_KEYS = ("intent", "category", "label")
MAX_ROWS = 100_000
MAX_TEXT = Example._meta.get_field("text").max_length
LANGUAGE_CODES = tuple(code for code, _name in LANGUAGES)


class ImportRefused(Exception):
    """The whole file was refused; nothing was stored."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RowError:
    row: int
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "code": self.code, "message": self.message}


@dataclass
class ImportReport:
    rows: int = 0
    taken: int = 0
    refused: list[RowError] = field(default_factory=list)
    created_intents: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "taken": self.taken,
            "refused": len(self.refused),
            "created_intents": self.created_intents,
            "errors": [error.as_dict() for error in self.refused],
        }


def _pick(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in row:
            return row[key]
    return None


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportRefused(
            "not_utf8", _("The file is not UTF-8 text; save it as UTF-8 and upload it again.")
        ) from None


def read_rows(data: bytes, filename: str = "") -> list[tuple[int, Any]]:
    """(row number, row) pairs of a CSV or JSON file; a JSON row may be any value."""
    text = _decode(data)
    stripped = text.lstrip()
    is_json = filename.lower().endswith(".json") or (
        not filename.lower().endswith(".csv") and stripped[:1] in ("[", "{")
    )
    if is_json:
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportRefused(
                "malformed",
                _("The file is not valid JSON: %(error)s at line %(line)s.")
                % {"error": exc.msg, "line": exc.lineno},
            ) from None
        if isinstance(parsed, dict) and isinstance(parsed.get("examples"), list):
            parsed = parsed["examples"]
        if not isinstance(parsed, list):
            raise ImportRefused(
                "malformed",
                _("The JSON file must hold a list of examples, or an object with “examples”."),
            )
        rows = list(enumerate(parsed, start=1))
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = [name.strip().lower() for name in reader.fieldnames or []]
        if not set(header) & set(TEXT_KEYS) or not set(header) & set(INTENT_KEYS):
            raise ImportRefused(
                "missing_column",
                _(
                    "The CSV file needs a header row with a “text” (or “question”) column and "
                    "an “intent” column."
                ),
            )
        reader.fieldnames = header
        rows = [(number, row) for number, row in enumerate(reader, start=2)]
    if len(rows) > MAX_ROWS:
        raise ImportRefused(
            "too_many_rows",
            _("The file has %(count)s rows; import at most %(max)s at a time.")
            % {"count": len(rows), "max": MAX_ROWS},
        )
    return rows


def _key(text: str) -> str:
    # Two rows are the same question when they differ only in width, case or spacing. (Not
    # `normalize`: it folds numbers, and "order 1234" and "order 5678" are two questions.)
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


@dataclass
class _Candidate:
    row: int
    text: str
    intent: str
    language: str


def _check(number: int, row: Any) -> _Candidate | RowError:
    if not isinstance(row, dict):
        return RowError(
            number, "not_an_object", _("The row is not an object with text and intent.")
        )
    row = {str(key).strip().lower(): value for key, value in row.items()}
    text = str(_pick(row, TEXT_KEYS) or "").strip()
    intent = str(_pick(row, INTENT_KEYS) or "").strip()
    language = str(row.get("language") or "").strip().lower()
    if not text:
        return RowError(number, "empty_text", _("The question is empty."))
    if len(text) > MAX_TEXT:
        return RowError(
            number,
            "text_too_long",
            _("The question has %(length)s characters; at most %(max)s are allowed.")
            % {"length": len(text), "max": MAX_TEXT},
        )
    if not intent:
        return RowError(number, "no_intent", _("No intent is given."))
    if not NAME_PATTERN.match(intent):
        return RowError(
            number,
            "bad_intent_name",
            _(
                "“%(value)s” is not an intent name; use lowercase words joined by dots, "
                "e.g. refund.status."
            )
            % {"value": intent},
        )
    if language and language not in LANGUAGE_CODES:
        return RowError(
            number,
            "bad_language",
            _("“%(value)s” is not a supported language; use en or zh.") % {"value": language},
        )
    return _Candidate(number, text, intent, language or language_of(text))


def import_examples(
    site: Site,
    data: bytes,
    filename: str = "",
    *,
    create_intents: bool = False,
    source: str = Example.Source.IMPORT,
) -> ImportReport:
    """Add the file's questions to the site's intents; see the module docstring."""
    rows = read_rows(data, filename)
    report = ImportReport(rows=len(rows))
    with transaction.atomic():
        intents = {intent.name: intent for intent in Intent.objects.filter(site=site)}
        # question key -> (intent name, where it comes from); one question, one intent.
        owner: dict[str, tuple[str, int | None]] = {}
        for text, name in Example.objects.filter(intent__site=site).values_list(
            "text", "intent__name"
        ):
            owner.setdefault(_key(text), (name, None))
        new_intents: dict[str, Intent] = {}
        taken: list[tuple[_Candidate, str]] = []
        for number, row in rows:
            checked = _check(number, row)
            if isinstance(checked, RowError):
                report.refused.append(checked)
                continue
            refusal = _refusal(checked, intents, owner, create_intents)
            if refusal is not None:
                report.refused.append(refusal)
                continue
            if checked.intent not in intents and checked.intent not in new_intents:
                new_intents[checked.intent] = Intent(site=site, name=checked.intent)
            owner[_key(checked.text)] = (checked.intent, checked.row)
            taken.append((checked, checked.intent))
        for intent in new_intents.values():
            intent.save()
            intents[intent.name] = intent
        Example.objects.bulk_create(
            [
                Example(
                    intent=intents[name],
                    text=candidate.text,
                    language=candidate.language,
                    source=source,
                )
                for candidate, name in taken
            ]
        )
    report.taken = len(taken)
    report.created_intents = sorted(new_intents)
    log = logger.warning if report.refused else logger.info
    log(
        "nlp.imported",
        extra={
            "site": site.pk,
            "rows": report.rows,
            "taken": report.taken,
            "refused": len(report.refused),
            "codes": sorted({error.code for error in report.refused}),
        },
    )
    return report


def _refusal(
    candidate: _Candidate,
    intents: dict[str, Intent],
    owner: dict[str, tuple[str, int | None]],
    create_intents: bool,
) -> RowError | None:
    number = candidate.row
    if candidate.intent not in intents and not create_intents:
        return RowError(
            number,
            "unknown_intent",
            _(
                "The site has no intent “%(name)s”; add it in admin first, or import with "
                "missing intents created."
            )
            % {"name": candidate.intent},
        )
    found = owner.get(_key(candidate.text))
    if found is None:
        return None
    name, row = found
    if row is None:
        if name == candidate.intent:
            return RowError(
                number,
                "duplicate",
                _("This question is already an example of “%(name)s”.") % {"name": name},
            )
        return RowError(
            number,
            "conflict",
            _("This question is already an example of another intent, “%(name)s”.")
            % {"name": name},
        )
    if name == candidate.intent:
        return RowError(
            number, "duplicate", _("Row %(row)s already has this question.") % {"row": row}
        )
    return RowError(
        number,
        "conflict",
        _("Row %(row)s gives this question another intent, “%(name)s”.")
        % {"row": row, "name": name},
    )
