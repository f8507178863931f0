"""The starter bot: bilingual intents for a shop (shipping, refunds, hours, account, ...).

`nlp/data/starter_bot.json` holds each intent's name, reply in English and Simplified Chinese
and its examples in both languages, written for gofly (the Chinese ones in Chinese, not
translated). Loading is idempotent: intents are matched by name and examples by text, so
loading twice, or after an admin edited a reply, adds only what is missing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from django.db import transaction

from chat.models import Site
from nlp.models import BotSettings, Example, Intent

logger = logging.getLogger(__name__)

STARTER_FILE = Path(__file__).resolve().parent / "data" / "starter_bot.json"


def load_starter(site: Site, path: Path = STARTER_FILE) -> dict[str, int]:
    """Add the starter intents and examples to a site, and bot settings if it has none."""
    data = json.loads(path.read_text(encoding="utf-8"))
    counts = {"intents": 0, "examples": 0}
    with transaction.atomic():
        BotSettings.objects.get_or_create(site=site)
        for item in data["intents"]:
            intent, created = Intent.objects.get_or_create(
                site=site,
                name=item["name"],
                defaults={
                    "description": item.get("description", ""),
                    "reply_en": item["reply"].get("en", ""),
                    "reply_zh": item["reply"].get("zh", ""),
                    "clarify": bool(item.get("clarify", False)),
                },
            )
            counts["intents"] += int(created)
            known = set(intent.examples.values_list("text", flat=True))
            new = [
                Example(intent=intent, text=text, language=language, source=Example.Source.STARTER)
                for language, texts in item["examples"].items()
                for text in texts
                if text not in known
            ]
            Example.objects.bulk_create(new)
            counts["examples"] += len(new)
    logger.info("nlp.starter_loaded", extra={"site": site.pk, **counts})
    return counts
