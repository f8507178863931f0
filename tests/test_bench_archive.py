"""Smoke test of bench/archive.py: it runs end to end on PostgreSQL and moves every row.

No duration is asserted: figures belong in docs/performance.md, not in a pass/fail line. The
bench creates and drops a database of its own, so it runs as a separate process beside the
test database rather than inside it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

ROWS = 300
REPO = Path(__file__).resolve().parent.parent


def _server_url() -> str:
    """DATABASE_URL's server with its maintenance database; skip without a PostgreSQL."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.skip("DATABASE_URL does not name a PostgreSQL; bench/archive.py needs one.")
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def _run_bench(url: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "bench.archive",
        "--rows",
        str(ROWS),
        "--inserts",
        "8",
        "--hold-seconds",
        "0.2",
        "--max-seconds",
        "60",
        "--database-url",
        url,
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _database_exists(url: str, name: str) -> bool:
    parts = urlsplit(url)
    with psycopg2.connect(
        dbname="postgres", user=parts.username, password=parts.password, host=parts.hostname
    ) as admin:
        with admin.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            return cursor.fetchone() is not None


def test_bench_archive_moves_every_row_and_drops_its_database():
    url = _server_url()

    result = _run_bench(url)

    (entry,) = result["per_rows"]
    assert entry["rows"] == ROWS
    assert entry["schema"]["rows"] == entry["export"]["rows"] == entry["copy"]["rows"] == ROWS
    assert entry["copy"]["rows_left_live"] == 0
    assert entry["export"]["bytes"] > 0
    # DETACH … CONCURRENTLY leaves a CHECK constraint that spares ATTACH its scan.
    assert entry["schema"]["attach_scan_skipped"] is True
    assert {"detach", "set_schema", "attach", "count"} <= entry["schema"]["steps"].keys()
    for case in ("without_archive", "with_archive"):
        assert result["concurrency"][case]["inserts_ms"]["count"] > 0
        assert result["concurrency"][case]["error_count"] == 0
    for case in ("lock_timeout_off", "lock_timeout_on"):
        assert result["open_transaction"][case]["action"]["rows"] == ROWS
    assert result["skipped"] == []
    assert not _database_exists(url, result["database"])
