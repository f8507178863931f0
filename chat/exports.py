"""Conversations with every message, live or archived, as JSON or CSV for admins."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from chat.archive import COLUMNS, conversation_messages
from chat.models import Conversation

CSV_COLUMNS = ["conversation_id", *[c for c in COLUMNS if c != "conversation_id"], "stored_in"]


def conversation_record(conversation: Conversation) -> dict[str, Any]:
    return {
        "id": conversation.pk,
        "site": conversation.site.name,
        "visitor": conversation.visitor.public_id,
        "channel": conversation.channel,
        "status": conversation.status,
        "created_at": conversation.created_at.isoformat(),
        "messages": conversation_messages(conversation),
    }


def as_json(conversations: Iterable[Conversation]) -> str:
    records = [conversation_record(c) for c in conversations]
    return json.dumps({"conversations": records}, ensure_ascii=False, indent=1)


def as_csv(conversations: Iterable[Conversation]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS)
    writer.writeheader()
    for conversation in conversations:
        for message in conversation_messages(conversation):
            writer.writerow({"conversation_id": conversation.pk, **message})
    return out.getvalue()
