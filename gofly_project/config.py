"""Load gofly's configuration: built-in defaults, then a YAML file, then environment variables.

Two modes exist. With no `GOFLY_CONFIG` the embedded defaults apply: SQLite under `var/`, the
in-memory channel layer and the in-process scheduler, so `make run` needs nothing but Python.
With `GOFLY_CONFIG=path/to/file.yaml` gofly runs in production mode and refuses to start
without a secret key. Every key can be overridden by an environment variable named
`GOFLY_<SECTION>_<KEY>` (for example `GOFLY_DATABASE_URL`); the conventional `DATABASE_URL`
and `REDIS_URL` are honoured too, because CI and most hosting platforms set them.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml

BASE_DIR = Path(__file__).resolve().parent.parent

DEFAULTS: dict[str, Any] = {
    "debug": False,
    "secret_key": "",
    "allowed_hosts": ["127.0.0.1", "localhost"],
    "csrf_trusted_origins": [],
    "data_dir": str(BASE_DIR / "var"),
    "server": {"host": "127.0.0.1", "port": 8000, "workers": 1, "public_url": ""},
    "database": {"url": "", "conn_max_age": 60},
    "redis": {"hosts": [], "prefix": "gofly"},
    "celery": {
        "broker_url": "",
        "result_backend": "",
        "visibility_timeout_seconds": 300,
        "webhook_queue": "",
        "training_queue": "",
    },
    "messages": {
        "max_text_bytes": 16384,
        "rate_per_second": 5.0,
        "rate_burst": 20,
        "history_page_size": 200,
    },
    "widget": {"token_max_age_seconds": 86400},
    "uploads": {
        "max_bytes": 10 * 1024 * 1024,
        "allowed_types": [
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf",
            "text/plain",
        ],
    },
    "outbox": {
        "retry_after_seconds": 5,
        "max_attempts": 10,
        "backoff_base_seconds": 2.0,
        "backoff_max_seconds": 600.0,
        "batch_size": 100,
        "keep_done_hours": 24,
    },
    "webhooks": {"timeout_seconds": 10.0},
    "archive": {"after_months": 3, "hour": 3, "mode": "schema", "directory": ""},
    "agents": {"offline_grace_seconds": 60, "away_after_seconds": 900},
    "routing": {"requeue_on_offline": True},
    "nlp": {
        "encoder": "auto",
        "threshold": 0.5,
        "max_misunderstood": 2,
        "handoff_keywords": ["人工", "转人工", "人工客服", "真人", "human", "agent", "operator"],
        "version_check_seconds": 2.0,
        "activation_tolerance": 0.0,
    },
}

# Keys whose environment override is a comma-separated list rather than a scalar.
LIST_KEYS = {
    ("allowed_hosts",),
    ("csrf_trusted_origins",),
    ("redis", "hosts"),
    ("uploads", "allowed_types"),
    ("nlp", "handoff_keywords"),
}


class ConfigError(Exception):
    """The configuration cannot be used; the message says which key to fix."""


@dataclass(frozen=True)
class DatabaseSettings:
    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    options: dict[str, str] | None = None


def _merge(base: dict[str, Any], override: dict[str, Any], path: str = "") -> dict[str, Any]:
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"Unknown config key '{path}{key}'; see configs/example.yaml.")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"Config key '{path}{key}' must be a mapping.")
            _merge(base[key], value, f"{path}{key}.")
        else:
            base[key] = value
    return base


def _default_at(key: tuple[str, ...]) -> Any:
    node: Any = DEFAULTS
    for part in key:
        node = node[part]
    return node


def _coerce(raw: str, key: tuple[str, ...]) -> Any:
    # The type comes from the built-in default, not from the file: `rate_per_second: 5` in
    # YAML is an int, yet the key takes fractions.
    current = _default_at(key)
    if key in LIST_KEYS:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if isinstance(current, bool):
        return raw.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(raw)
    if isinstance(current, float):
        return float(raw)
    return raw


def _apply_env(config: dict[str, Any], env: dict[str, str]) -> None:
    def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = prefix + (key,)
            if isinstance(value, dict):
                walk(value, path)
                continue
            name = "GOFLY_" + "_".join(path).upper()
            if name in env:
                try:
                    node[key] = _coerce(env[name], path)
                except ValueError as exc:
                    raise ConfigError(f"{name}={env[name]!r} is not a valid value: {exc}") from exc

    if env.get("DATABASE_URL"):
        config["database"]["url"] = env["DATABASE_URL"]
    if env.get("REDIS_URL"):
        config["redis"]["hosts"] = [env["REDIS_URL"]]
    walk(config, ())


def _check_nlp(nlp: dict[str, Any]) -> None:
    if nlp["encoder"] not in {"auto", "lexical", "embedding", "hybrid"}:
        raise ConfigError("nlp.encoder must be 'auto', 'lexical', 'embedding' or 'hybrid'.")
    if not 0.0 < float(nlp["threshold"]) <= 1.0:
        raise ConfigError("nlp.threshold must be above 0 and at most 1.")


def _check_archive(archive: dict[str, Any]) -> None:
    if not isinstance(archive["after_months"], int) or archive["after_months"] < 1:
        raise ConfigError("archive.after_months must be a whole number of months, at least 1.")
    if not isinstance(archive["hour"], int) or not 0 <= archive["hour"] <= 23:
        raise ConfigError("archive.hour must be an hour of the day, 0 to 23.")
    if archive["mode"] not in {"schema", "export"}:
        raise ConfigError("archive.mode must be 'schema' or 'export'.")


def load(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Return the effective configuration, with `mode` set to 'embedded' or 'production'."""
    env = dict(os.environ if env is None else env)
    config = copy.deepcopy(DEFAULTS)
    path = env.get("GOFLY_CONFIG")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                loaded = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise ConfigError(
                f"GOFLY_CONFIG points to {path!r}, which cannot be read: {exc}"
            ) from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a YAML mapping at the top level.")
        _merge(config, loaded)
    _apply_env(config, env)
    _check_archive(config["archive"])
    _check_nlp(config["nlp"])
    if config["agents"]["offline_grace_seconds"] < 30:
        # The dashboard pings every 25 s; a shorter grace would take open dashboards offline.
        raise ConfigError("agents.offline_grace_seconds must be at least 30.")
    config["mode"] = "production" if path else "embedded"
    _check_visibility_timeout(config)
    if config["mode"] == "production" and not config["secret_key"]:
        raise ConfigError(
            "Production mode needs a secret key: set secret_key in the config file "
            "or GOFLY_SECRET_KEY in the environment."
        )
    return config


def _check_visibility_timeout(config: dict[str, Any]) -> None:
    # A task still running when its visibility timeout passes is handed to a second worker
    # while the first goes on, so the timeout must exceed the longest task; the webhook send,
    # bounded by its HTTP timeout, is the one whose length a setting decides.
    visibility = config["celery"]["visibility_timeout_seconds"]
    timeout = config["webhooks"]["timeout_seconds"]
    if visibility <= timeout:
        raise ConfigError(
            f"celery.visibility_timeout_seconds ({visibility}) must be longer than "
            f"webhooks.timeout_seconds ({timeout}), or a webhook still being sent would be "
            "handed to a second worker."
        )


def parse_database_url(url: str) -> DatabaseSettings:
    """Turn `sqlite:///path` or `postgres://user:pass@host:port/name` into Django settings."""
    parsed = urlparse(url)
    if parsed.scheme == "sqlite":
        # sqlite:///relative/path and sqlite:////absolute/path, as SQLAlchemy spells them.
        name = parsed.path[1:] if parsed.path.startswith("/") else parsed.path
        if not name:
            raise ConfigError(f"Database URL {url!r} names no SQLite file.")
        return DatabaseSettings(engine="django.db.backends.sqlite3", name=name)
    if parsed.scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ConfigError(f"Database URL {url!r} names no database.")
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return DatabaseSettings(
            engine="django.db.backends.postgresql",
            name=name,
            user=unquote(parsed.username or ""),
            password=unquote(parsed.password or ""),
            host=parsed.hostname or "",
            port=str(parsed.port or ""),
            options=options or None,
        )
    raise ConfigError(
        f"Database URL scheme {parsed.scheme!r} is not supported; use sqlite:/// or postgres://."
    )
