"""Serve gofly with daphne; on embedded defaults also run the periodic jobs in-process."""

from __future__ import annotations

from daphne.cli import CommandLineInterface
from django.conf import settings
from django.core.management.base import BaseCommand

from gofly_project import scheduler


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets on the configured host and port."

    def add_arguments(self, parser) -> None:
        server = settings.GOFLY["server"]
        parser.add_argument("--host", default=server["host"])
        parser.add_argument("--port", type=int, default=int(server["port"]))
        parser.add_argument(
            "--no-scheduler", action="store_true", help="Do not run periodic jobs in this process."
        )

    def handle(self, *args, host: str, port: int, no_scheduler: bool, **options) -> None:
        if settings.GOFLY_MODE == "embedded" and not no_scheduler:
            # daphne's event loop, created when daphne.server is imported; the scheduler hands
            # it the jobs that must use the in-memory channel layer living on it.
            from daphne.server import twisted_loop

            from nlp.training import fail_interrupted

            fail_interrupted()  # this process trains on embedded defaults; none is running yet
            scheduler.start(server_loop=twisted_loop)
        base = f"http://{host}:{port}"
        self.stdout.write(
            f"gofly is serving on {base}\n"
            f"  dashboard: {base}/dashboard/\n"
            f"  demo shop: {base}/demo/\n"
            f"  admin:     {base}/admin/\n"
            f"  backends:  database={settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}"
            f" channel_layer={settings.CHANNEL_LAYERS['default']['BACKEND'].rsplit('.', 1)[-1]}"
        )
        self.stdout.flush()
        CommandLineInterface().run(
            ["-b", host, "-p", str(port), "--proxy-headers", "gofly_project.asgi:application"]
        )
