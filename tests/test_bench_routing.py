"""Smoke test of bench/routing.py with tiny numbers: it runs, counts and reports; no timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parent.parent
DECISIONS = 5


def admin_url_from_environment() -> str | None:
    """The PostgreSQL server of DATABASE_URL, reached through its `postgres` database."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))


def run_bench(*backend_args: str) -> dict:
    command = [sys.executable, "-m", "bench.routing", "--agents", "3", "12"]
    command += ["--decisions", str(DECISIONS), "--warmup", "1", "--max-seconds", "90"]
    done = subprocess.run(
        [*command, *backend_args], cwd=REPO, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def backends() -> list:
    admin_url = admin_url_from_environment()
    postgres = pytest.param(
        ["--database-url", admin_url or ""],
        id="postgresql",
        marks=pytest.mark.skipif(admin_url is None, reason="DATABASE_URL is not PostgreSQL"),
    )
    return [pytest.param(["--sqlite"], id="sqlite"), postgres]


@pytest.mark.parametrize("backend_args", backends())
def test_bench_routing_counts_every_requested_decision(backend_args):
    # When: the benchmark runs with 3 and 12 agents and a handful of decisions.
    result = run_bench(*backend_args)

    # Then: every kind of decision was made as often as asked, and all found an agent.
    assert [run["agents"] for run in result["runs"]] == [3, 12]
    assert result["skipped_agent_counts"] == []
    for run in result["runs"]:
        assert run["agents_online"] == run["agents"]
        for kind in ("assign", "post_visitor_message", "baseline_naive"):
            series = run[kind]
            assert series["requested"] == series["decided"] == series["assigned"] == DECISIONS
            assert series["latency_ms"]["count"] == DECISIONS
            assert series["stopped_by_deadline"] is False
    # And: the plans are those of the largest pool, the seat pick reading its index.
    assert result["query_plans"]["agents"] == 12
    assert "seat_pick" in result["query_plans"]["seat_pick"]
