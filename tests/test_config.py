"""Configuration: defaults, YAML, environment overrides, production checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gofly_project import config

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "configs" / "example.yaml"


def test_load_without_config_file_is_embedded():
    loaded = config.load({})
    assert loaded["mode"] == "embedded"
    assert loaded["database"]["url"] == ""
    assert loaded["redis"]["hosts"] == []
    assert loaded["redis"]["prefix"] == "gofly"


def test_load_example_file_with_env_overrides():
    loaded = config.load(
        {
            "GOFLY_CONFIG": str(EXAMPLE),
            "GOFLY_SECRET_KEY": "s" * 60,
            "GOFLY_SERVER_PORT": "9000",
            "GOFLY_REDIS_HOSTS": "redis://a:6379/0, redis://b:6379/0",
            "GOFLY_REDIS_PREFIX": "gofly-eu",
            "GOFLY_MESSAGES_RATE_PER_SECOND": "2.5",
            "GOFLY_DEBUG": "false",
        }
    )
    assert loaded["mode"] == "production"
    assert loaded["server"]["port"] == 9000
    assert loaded["server"]["workers"] == 2
    assert loaded["redis"]["hosts"] == ["redis://a:6379/0", "redis://b:6379/0"]
    assert loaded["redis"]["prefix"] == "gofly-eu"
    assert loaded["messages"]["rate_per_second"] == 2.5
    assert loaded["database"]["url"] == "postgres://gofly@127.0.0.1:5432/gofly"


def test_database_and_redis_url_conventions_are_honoured():
    loaded = config.load({"DATABASE_URL": "postgres://u@h/db", "REDIS_URL": "redis://r/1"})
    assert loaded["database"]["url"] == "postgres://u@h/db"
    assert loaded["redis"]["hosts"] == ["redis://r/1"]


def test_production_without_secret_key_is_refused():
    with pytest.raises(config.ConfigError) as error:
        config.load({"GOFLY_CONFIG": str(EXAMPLE)})
    assert str(error.value) == (
        "Production mode needs a secret key: set secret_key in the config file "
        "or GOFLY_SECRET_KEY in the environment."
    )


def test_unknown_key_in_file_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  prot: 80\n")
    with pytest.raises(config.ConfigError) as error:
        config.load({"GOFLY_CONFIG": str(path), "GOFLY_SECRET_KEY": "x"})
    assert str(error.value) == "Unknown config key 'server.prot'; see configs/example.yaml."


def test_bad_number_in_environment_names_the_variable():
    with pytest.raises(config.ConfigError) as error:
        config.load({"GOFLY_SERVER_PORT": "eighty"})
    assert str(error.value).startswith("GOFLY_SERVER_PORT='eighty' is not a valid value")


@pytest.mark.parametrize(
    "url,expected",
    [
        ("sqlite:///var/x.sqlite3", ("django.db.backends.sqlite3", "var/x.sqlite3", "", "")),
        ("sqlite:////tmp/x.sqlite3", ("django.db.backends.sqlite3", "/tmp/x.sqlite3", "", "")),
        (
            "postgres://gofly:p%40ss@db.local:6543/chat",
            ("django.db.backends.postgresql", "chat", "db.local", "6543"),
        ),
    ],
)
def test_parse_database_url(url, expected):
    parsed = config.parse_database_url(url)
    assert (parsed.engine, parsed.name, parsed.host, parsed.port) == expected


def test_parse_database_url_refuses_unknown_scheme():
    with pytest.raises(config.ConfigError) as error:
        config.parse_database_url("mysql://root@localhost/x")
    assert str(error.value) == (
        "Database URL scheme 'mysql' is not supported; use sqlite:/// or postgres://."
    )


def test_check_deploy_is_clean_in_production_mode(tmp_path):
    env = {
        **os.environ,
        "GOFLY_CONFIG": str(EXAMPLE),
        "GOFLY_SECRET_KEY": "k" * 20 + "Q9-x_" * 10,
        "GOFLY_DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
