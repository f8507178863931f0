"""Django settings for gofly, derived from `gofly_project.config` (YAML + environment)."""

from __future__ import annotations

import secrets
from pathlib import Path

from django.utils.translation import gettext_lazy as _

from gofly_project import config as gofly_config

BASE_DIR = gofly_config.BASE_DIR
GOFLY = gofly_config.load()
GOFLY_MODE = GOFLY["mode"]
DATA_DIR = Path(GOFLY["data_dir"])
DATA_DIR.mkdir(parents=True, exist_ok=True)


def _embedded_secret_key() -> str:
    # Kept on disk so sessions and visitor tokens survive a restart of `make run`.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = GOFLY["secret_key"] or _embedded_secret_key()
DEBUG = bool(GOFLY["debug"])
ALLOWED_HOSTS = list(GOFLY["allowed_hosts"])
CSRF_TRUSTED_ORIGINS = list(GOFLY["csrf_trusted_origins"])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "chat",
    "agents",
    "nlp",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gofly_project.urls"
ASGI_APPLICATION = "gofly_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _database() -> dict:
    url = GOFLY["database"]["url"] or f"sqlite:///{DATA_DIR / 'gofly.sqlite3'}"
    db = gofly_config.parse_database_url(url)
    if db.engine.endswith("sqlite3"):
        return {
            "ENGINE": db.engine,
            "NAME": db.name,
            # IMMEDIATE takes the write lock when a transaction starts, so two writers never
            # both read the same last_seq and then fight over the upgrade to a write lock.
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not :memory:, so tests see the same locking as a real run.
            "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
        }
    # TODO(gofly): no default connect_timeout or TCP keepalives: a database that drops packets
    # instead of closing connections holds a pool thread until the OS's TCP timeout. Set them
    # (DATABASE_URL query options work today) once a fault test with a relay that blackholes
    # traffic shows good values (issue 3).
    return {
        "ENGINE": db.engine,
        "NAME": db.name,
        "USER": db.user,
        "PASSWORD": db.password,
        "HOST": db.host,
        "PORT": db.port,
        "OPTIONS": db.options or {},
        "CONN_MAX_AGE": GOFLY["database"]["conn_max_age"],
        # After a database outage, each pool thread's kept connection is broken; checked before
        # use, it is replaced instead of refusing one more message per thread once the
        # database is back (tests/test_faults.py, the database outage test, shows both).
        "CONN_HEALTH_CHECKS": True,
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _channel_layers() -> dict:
    hosts = GOFLY["redis"]["hosts"]
    if not hosts:
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # The pub/sub layer, not the core RedisChannelLayer: the core one silently drops group
    # messages past its capacity (../shared/performance-notes.md). Several hosts shard groups.
    return {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": list(hosts), "prefix": GOFLY["redis"]["prefix"]},
        }
    }


CHANNEL_LAYERS = _channel_layers()

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("zh-hans", _("Simplified Chinese"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
MEDIA_ROOT = DATA_DIR / "media"

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/dashboard/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "chat.errors.drf_exception_handler",
}

CELERY_BROKER_URL = GOFLY["celery"]["broker_url"] or (
    GOFLY["redis"]["hosts"][0] if GOFLY["redis"]["hosts"] else "memory://"
)
CELERY_RESULT_BACKEND = GOFLY["celery"]["result_backend"] or None
# Acknowledge a task when it has finished, not when it arrives, so a worker that dies holding
# one leaves it to be delivered again; every task is written to be safe to run twice.
CELERY_TASK_ACKS_LATE = True
# A pool process killed mid-task (OOM, SIGKILL) sends its task back to the queue as well.
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# With late acks a worker holds what it prefetched; one at a time keeps the others free for it.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# With Redis as broker, a message taken but never acknowledged (its worker died) comes back
# only after this timeout; Celery's default is an hour. It must exceed the longest task, or a
# task still running is given to a second worker too (gofly_project/config.py checks this).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": GOFLY["celery"]["visibility_timeout_seconds"],
    # Live workers look for such messages every 10 s, but kombu scans Redis only on every
    # tenth look by default, so one could wait 100 s past its timeout; the scan is one small
    # sorted-set query.
    "unacked_restore_throttle": 1,
}

if GOFLY_MODE == "production":
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_HSTS_SECONDS = 31536000
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    # Plain-http health checks and the reverse proxy's own requests stay allowed.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
    },
}
