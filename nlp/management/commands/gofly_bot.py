"""Manage a site's intent bot from the command line: load the starter bot, train, roll back."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from chat.models import Site
from nlp import starter, training


class Command(BaseCommand):
    help = "The intent bot of a site: starter (load the starter intents), train, rollback."

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["starter", "train", "rollback"])
        parser.add_argument("--site", required=True, help="The site's key (or its name).")
        parser.add_argument(
            "--force", action="store_true", help="train: activate even if not better."
        )
        parser.add_argument("--encoder", help="train: lexical, embedding or hybrid.")

    def handle(self, *args, **options) -> None:
        site = (
            Site.objects.filter(key=options["site"]).first()
            or Site.objects.filter(name=options["site"]).first()
        )
        if site is None:
            raise CommandError(f"No site has the key or name {options['site']!r}.")
        if options["action"] == "starter":
            counts = starter.load_starter(site)
            self.stdout.write(f"Starter bot: {counts['intents']} intents and "
                              f"{counts['examples']} examples added to {site.name!r}.")  # fmt: skip
        elif options["action"] == "train":
            version = training.train_site(
                site.pk, force=options["force"], encoder=options["encoder"]
            )
            self.stdout.write(json.dumps(training.summary(version), ensure_ascii=False))
            if version.state == version.State.FAILED:
                raise CommandError(version.note)
        else:
            try:
                version = training.roll_back(site.pk)
            except training.ActivationRefused as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(json.dumps(training.summary(version), ensure_ascii=False))
