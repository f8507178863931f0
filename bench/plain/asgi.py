import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.plain.settings")

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.urls import path  # noqa: E402

http = get_asgi_application()

from bench.plain.consumers import AgentConsumer, VisitorConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": http,
        "websocket": URLRouter(
            [
                path("ws/visitor/", VisitorConsumer.as_asgi()),
                path("ws/agent/", AgentConsumer.as_asgi()),
            ]
        ),
    }
)
