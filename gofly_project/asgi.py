"""ASGI entry point: HTTP through Django, WebSockets through Channels (see chat.routing)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gofly_project.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

from chat.routing import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Static files are served by the app itself so `make run` needs no web server in front;
        # docs/deployment.md shows how to let a reverse proxy serve them instead.
        "http": ASGIStaticFilesHandler(django_asgi_app),
        "websocket": websocket_application,
    }
)
