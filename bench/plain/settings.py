"""Settings of the plain Channels baseline app: the minimum Channels needs, DEBUG off."""

import os

SECRET_KEY = "plain-channels-baseline-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["daphne", "channels"]
ROOT_URLCONF = "bench.plain.urls"
ASGI_APPLICATION = "bench.plain.asgi.application"
DATABASES = {}
USE_TZ = True
LOGGING_CONFIG = None

_redis = os.environ.get("REDIS_URL")
CHANNEL_LAYERS = {
    "default": (
        {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [_redis], "prefix": os.environ.get("PLAIN_PREFIX", "plain")},
        }
        if _redis
        else {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    )
}
