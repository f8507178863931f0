"""Manage a site's intent bot from the command line: starter bot, import, train, roll back."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from chat.models import Site
from nlp import importing, starter, training


class Command(BaseCommand):
    help = (
        "The intent bot of a site: starter (load the starter intents), import FILE (CSV or "
        "JSON of questions and intents), train, rollback."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["starter", "import", "train", "rollback"])
        parser.add_argument("file", nargs="?", type=Path, help="import: the CSV or JSON file.")
        parser.add_argument("--site", required=True, help="The site's key (or its name).")
        parser.add_argument(
            "--force", action="store_true", help="train: activate even if not better."
        )
        parser.add_argument("--encoder", help="train: auto, lexical, embedding or hybrid.")
        parser.add_argument(
            "--create-intents",
            action="store_true",
            help="import: create the intents the file names that the site does not have.",
        )
        parser.add_argument("--json", action="store_true", help="import: print the report as JSON.")

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
        elif options["action"] == "import":
            self._import(site, options)
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

    def _import(self, site: Site, options: dict) -> None:
        path = options["file"]
        if path is None:
            raise CommandError("import needs the file to read: gofly_bot import FILE --site KEY.")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        try:
            report = importing.import_examples(
                site, data, path.name, create_intents=options["create_intents"]
            )
        except importing.ImportRefused as exc:
            raise CommandError(f"Nothing was imported ({exc.code}): {exc.message}") from None
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
            return
        self.stdout.write(
            f"{report.rows} rows read: {report.taken} taken, {len(report.refused)} refused."
        )
        if report.created_intents:
            self.stdout.write("Intents created: " + ", ".join(report.created_intents))
        for error in report.refused:
            self.stdout.write(f"row {error.row}: {error.code}: {error.message}")
