"""WebSocket routes.

The agent socket is authenticated by the Django session cookie, so it also checks the Origin
header against ALLOWED_HOSTS: a page on another site must not ride an agent's cookie. The
visitor socket carries its own token and is meant to be opened from customers' pages.
"""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from chat import consumers

websocket_urlpatterns = [
    path("ws/visitor/", consumers.VisitorConsumer.as_asgi()),
    path(
        "ws/agent/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(consumers.AgentConsumer.as_asgi())),
    ),
]

websocket_application = URLRouter(websocket_urlpatterns)
