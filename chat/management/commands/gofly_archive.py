"""`manage.py gofly_archive`: run the archive job now, whatever the hour."""

from datetime import date

from django.core.management.base import BaseCommand, CommandError

from chat import archive


class Command(BaseCommand):
    help = "Move messages older than archive.after_months out of the live table, now."

    def add_arguments(self, parser):
        parser.add_argument("--after-months", type=int, help="Override archive.after_months.")
        parser.add_argument("--mode", choices=["schema", "export"], help="Override archive.mode.")
        parser.add_argument(
            "--today", type=date.fromisoformat, help="Pretend today is this date (YYYY-MM-DD)."
        )

    def handle(self, *args, after_months=None, mode=None, today=None, **options):
        try:
            moved = archive.run(today, after_months=after_months, mode=mode)
        except archive.ArchiveError as exc:
            raise CommandError(str(exc)) from exc
        if not moved:
            self.stdout.write("Nothing to archive.")
        for result in moved:
            self.stdout.write(f"{result.month:%Y-%m}: {result.rows} messages -> {result.location}")
