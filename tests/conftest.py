"""Shared fixtures.

Services: the suite always runs on SQLite and the in-memory channel layer. With DATABASE_URL
set, Django's settings point at that PostgreSQL and pytest-django creates its test database
there. With REDIS_URL set, every consumer test runs a second time on the Redis pub/sub layer.
A missing URL skips the Redis variant with a reason; with CI=true an unreachable service is a
failure, never a skip.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlparse, urlunparse

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agents.models import Agent
from chat import actions
from chat.models import Site

IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("REDIS_URL", "")


def _redis_reachable(url: str) -> str | None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means the service cannot be used
        return f"{type(exc).__name__}: {exc}"
    return None


def require_redis() -> str:
    """Return REDIS_URL; skip without it, and when unreachable skip (fail under CI)."""
    if not REDIS_URL:
        pytest.skip("REDIS_URL is not set; the Redis channel layer variant needs it.")
    problem = _redis_reachable(REDIS_URL)
    if problem:
        message = f"Redis at {REDIS_URL} is unreachable: {problem}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return REDIS_URL


def require_postgres(reason: str) -> str:
    """Return DATABASE_URL when it names a reachable PostgreSQL; skip with `reason` without one.

    An unreachable PostgreSQL skips too, but fails under CI.
    """
    url = os.environ.get("DATABASE_URL", "")
    if urlparse(url).scheme not in {"postgres", "postgresql", "pgsql"}:
        pytest.skip(reason)
    import psycopg2

    try:
        admin = urlunparse(urlparse(url)._replace(path="/postgres"))
        psycopg2.connect(admin, connect_timeout=2).close()
    except psycopg2.Error as exc:
        message = f"PostgreSQL at {url} is unreachable: {exc}".strip()
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture(autouse=True)
def _layer_settled(monkeypatch):
    """Each test starts with no channel-layer failure remembered from another test."""
    from chat import delivery

    monkeypatch.setattr(delivery, "_last_failure", float("-inf"))


@pytest.fixture(autouse=True)
def _english_outside_requests():
    """Code outside a request speaks the default language, English, in every test.

    Django's test client leaves the language of a request's Accept-Language active in the
    test's thread afterwards; a later test that checks an English sentence would otherwise
    depend on which test ran before it.
    """
    from django.utils import translation

    with translation.override("en"):
        yield


@pytest.fixture(params=["memory", "redis"])
def channel_layer(request, settings):
    """Run the test on the in-memory layer and on the Redis pub/sub layer."""
    if request.param == "memory":
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    else:
        url = require_redis()
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
                # A prefix per test keeps tests from seeing each other's groups.
                "CONFIG": {"hosts": [url], "prefix": f"gofly-test-{uuid.uuid4().hex[:8]}"},
            }
        }
    return request.param


@pytest.fixture
def site(db) -> Site:
    return Site.objects.create(name="Shop", widget_title="Help")


@pytest.fixture
def other_site(db) -> Site:
    return Site.objects.create(name="Other shop")


def make_agent(username: str, *sites: Site) -> Agent:
    user = get_user_model().objects.create_user(username, password="pw-" + username)
    agent = Agent.objects.create(user=user, display_name=username.title())
    agent.sites.add(*sites)
    return agent


@pytest.fixture
def agent_alice(site) -> Agent:
    return make_agent("alice", site)


@pytest.fixture
def agent_bob(site) -> Agent:
    return make_agent("bob", site)


def session_cookie_for(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def new_visitor_session(site: Site, public_id: str | None = None) -> actions.VisitorSession:
    return actions.start_visitor_session(
        site, public_id, ip="127.0.0.1", user_agent="pytest", referrer="", page_url=""
    )


def pytest_report_header(config):
    from django.conf import settings

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    redis = REDIS_URL or "not set: Redis variants skip"
    return [f"gofly backends: database={engine}, redis={redis}, CI={IN_CI}"]


def pytest_configure(config):
    from django.conf import settings

    # Consumers run ORM work in pool threads; persistent connections held by those threads
    # would keep PostgreSQL from dropping the test database at the end of the run.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0


@pytest.fixture(scope="session", autouse=True)
def _release_pool_connections(django_db_setup):
    """Close what worker threads still hold before pytest-django drops the test database.

    Django can only close a connection from the thread that opened it, and a pool thread that
    has gone idle may never run again to do so.
    """
    from django.db import connection

    settings_dict = dict(connection.settings_dict)
    yield
    if connection.vendor != "postgresql":
        return
    import psycopg2

    admin = psycopg2.connect(
        dbname="postgres",
        user=settings_dict["USER"],
        password=settings_dict["PASSWORD"],
        host=settings_dict["HOST"],
        port=settings_dict["PORT"] or None,
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [settings_dict["NAME"]],
        )
    admin.close()
