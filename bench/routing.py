"""Routing benchmark: how long one routing decision takes at 10, 1,000 and 10,000 agents.

Run from the repository root; it creates its own database and drops it at the end:

    .venv/bin/python -m bench.routing --agents 10 1000 10000 --decisions 2000 \\
        --database-url postgres://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.routing --agents 10 1000 10000 --decisions 2000 --sqlite

`--database-url` is an admin connection: the tool creates `gofly_bench_routing_<random>` on
that server, points `DATABASE_URL` at it before `django.setup()`, migrates, and drops it in a
`finally`. With `--sqlite` it runs on a temporary SQLite file instead (the embedded default).

For every agent count N, in a fresh site:

1. creates N users and agents on the site in bulk, gives each `--open-per-agent` open
   conversations (so the naive baseline has something to count), and brings every agent online
   through `agents.status.change_status` (which writes the seats with `assignment.sync_seats`);
   capacity is set so that nobody fills up during the run;
2. times `--decisions` routing decisions the way `assignment.fill_from_queue` makes them: a
   transaction, the conversation's row lock, `assignment.assign`, save;
3. times as many first messages of new visitors through `actions.post_visitor_message`
   (message, routing and outbox rows in one transaction);
4. times the baseline, routing written without the seats: agents of the site that are online,
   their free room computed from a COUNT of their open conversations, most room first. It has
   its own deadline (`--baseline-seconds`) and reports how many decisions it managed.

At the largest N it also records the query plans (EXPLAIN ANALYZE on PostgreSQL, EXPLAIN QUERY
PLAN on SQLite) of the seat pick, the baseline pick and the previous-agent lookup. Latencies
are measured in this process with `time.perf_counter_ns()` around the whole transaction; the
first `--warmup` decisions of each kind are left out. Every loop is bounded by its count and by
the `--max-seconds` deadline. One JSON object goes to stdout, progress to stderr.

The log lines of the routed path (`routing.decided`, `agents.status_changed`) are raised to
WARNING for the run: writing 10,000 of them to the terminal is not what is being measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.loadtest import percentiles

REPO = Path(__file__).resolve().parent.parent
NS = 1_000_000_000
BULK_BATCH = 1000
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", ""}
# PositiveSmallIntegerField: the largest max_concurrent_chats the schema accepts.
MAX_CAPACITY = 32767


def log(text: str) -> None:
    print(f"[routing {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class Deadline:
    """The run's end time; every loop asks it before the next step."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def passed(self) -> bool:
        return self.left() <= 0

    def sooner(self, seconds: float) -> Deadline:
        """A deadline `seconds` from now, but never later than this one."""
        nested = Deadline(0)
        nested.end = min(self.end, time.monotonic() + seconds)
        return nested


# ---------------------------------------------------------------------------------------------
# The scratch database


def _database_url_for(admin_url: str, name: str) -> str:
    parts = urlsplit(admin_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, ""))


def _admin_execute(admin_url: str, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url)
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        with conn.cursor() as cursor:
            cursor.execute(sql)
    finally:
        conn.close()


@contextmanager
def scratch_database(admin_url: str | None) -> Iterator[str]:
    """Yield the URL of a new empty database (PostgreSQL) or SQLite file; remove it afterwards."""
    if admin_url is None:
        with tempfile.TemporaryDirectory(prefix="gofly_bench_routing_") as directory:
            yield f"sqlite:///{directory}/bench.sqlite3"
        return
    host = urlsplit(admin_url).hostname or ""
    if host not in LOOPBACK_HOSTS:
        raise SystemExit(f"--database-url must point at 127.0.0.1, not {host!r}.")
    name = f"gofly_bench_routing_{secrets.token_hex(4)}"
    _admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    log(f"created database {name}")
    try:
        yield _database_url_for(admin_url, name)
    finally:
        from django.conf import settings

        if settings.configured:  # Django was started: let go of the database before dropping it
            from django.db import connections

            connections.close_all()
        _admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        log(f"dropped database {name}")


def setup_django(database_url: str, data_dir: str) -> None:
    """Point gofly's settings at the scratch database, start Django and migrate."""
    for name in ("GOFLY_CONFIG", "GOFLY_DATABASE_URL", "REDIS_URL", "GOFLY_REDIS_HOSTS"):
        os.environ.pop(name, None)
    os.environ["DATABASE_URL"] = database_url
    os.environ["GOFLY_DATA_DIR"] = data_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "gofly_project.settings"
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import django

    django.setup()
    for name in ("chat.assignment", "agents.status"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# ---------------------------------------------------------------------------------------------
# Building one site's agents and conversations


def _bulk(model: type, rows: list[Any]) -> list[Any]:
    return model.objects.bulk_create(rows, batch_size=BULK_BATCH)


def make_visitors(site: Any, count: int) -> list[int]:
    from chat.models import Visitor

    return [v.pk for v in _bulk(Visitor, [Visitor(site=site) for _ in range(count)])]


def make_conversations(site: Any, count: int, assignee_ids: list[int] | None = None) -> list[int]:
    """`count` open conversations of new visitors; unassigned unless assignees are given."""
    from chat.models import Conversation

    visitor_ids = make_visitors(site, count)
    rows = [
        Conversation(
            site=site,
            visitor_id=visitor_id,
            assignee_id=assignee_ids[i % len(assignee_ids)] if assignee_ids else None,
        )
        for i, visitor_id in enumerate(visitor_ids)
    ]
    return [c.pk for c in _bulk(Conversation, rows)]


def make_agents(
    site: Any, count: int, capacity: int, open_per_agent: int, deadline: Deadline
) -> dict[str, Any]:
    """N agents on `site`, each holding `open_per_agent` open conversations, all online."""
    from django.contrib.auth import get_user_model

    from agents.models import Agent, AgentStatus, StatusTrigger
    from agents.status import change_status

    user_model = get_user_model()
    started = time.monotonic()
    prefix = f"bench{site.pk}"
    users = _bulk(
        user_model,
        # "!" is Django's mark for an unusable password; hashing 10,000 would dominate setup.
        [user_model(username=f"{prefix}-{i}", password="!") for i in range(count)],
    )
    agents = _bulk(
        Agent,
        [
            Agent(user=user, display_name=f"Agent {i}", max_concurrent_chats=capacity)
            for i, user in enumerate(users)
        ],
    )
    through = Agent.sites.through
    _bulk(through, [through(agent_id=agent.pk, site_id=site.pk) for agent in agents])
    if open_per_agent:
        make_conversations(site, count * open_per_agent, [user.pk for user in users])
        Agent.objects.filter(pk__in=[a.pk for a in agents]).update(active_chats=open_per_agent)
    built = time.monotonic()

    online = 0
    for agent in agents:
        if deadline.passed():
            break
        change_status(agent.pk, AgentStatus.ONLINE, StatusTrigger.CONNECTED)
        online += 1
    return {
        "agent_ids": [a.pk for a in agents],
        "online": online,
        "bulk_seconds": round(built - started, 3),
        "online_seconds": round(time.monotonic() - built, 3),
    }


def analyze() -> None:
    """Refresh the planner's statistics after a bulk load, as autovacuum would shortly."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# ---------------------------------------------------------------------------------------------
# The decisions being timed


def decide_with_seats(conversation_id: int) -> bool:
    """One routing decision on the real path, as `assignment.fill_from_queue` makes it."""
    from django.db import transaction

    from chat import assignment
    from chat.models import Conversation

    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        assigned = assignment.assign(conversation)
        conversation.save(update_fields=["assignee", "waiting_since"])
    return assigned


def first_visitor_message(visitor_id: int) -> bool:
    """A new visitor's first message: stored, routed and put in the outbox in one transaction."""
    from chat import actions

    posted = actions.post_visitor_message(visitor_id, client_id=f"bench-{visitor_id}", body="Hi")
    return posted.assignee_id is not None


def naive_pick_query(site_id: int) -> Any:
    """Routing without ready structures: count every online agent's open conversations."""
    from django.db.models import Count, F, Q
    from django.db.models.functions import Coalesce

    from agents.models import Agent, AgentStatus
    from chat.assignment import HOLDS_SLOT

    holding = Q(user__assigned_conversations__status__in=HOLDS_SLOT)
    return (
        Agent.objects.filter(sites=site_id, status=AgentStatus.ONLINE)
        .annotate(room=F("max_concurrent_chats") - Count("user__assigned_conversations", holding))
        .filter(room__gt=0)
        .order_by("-room", Coalesce("last_assigned_at", "status_changed_at"), "pk")
        .values_list("pk", "user_id")
    )


def decide_naively(conversation_id: int) -> bool:
    """The baseline decision: the naive pick, then the same locks and writes as the real one."""
    from django.db import transaction
    from django.utils import timezone

    from agents.models import Agent
    from chat.models import Conversation

    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        picked = naive_pick_query(conversation.site_id).first()
        if picked is None:
            return False
        agent = Agent.objects.select_for_update().get(pk=picked[0])
        agent.last_assigned_at = timezone.now()
        agent.save(update_fields=["last_assigned_at"])
        conversation.assignee_id = picked[1]
        conversation.save(update_fields=["assignee"])
    return True


def time_decisions(
    decide: Callable[[int], bool], ids: list[int], warmup: int, deadline: Deadline
) -> dict[str, Any]:
    """Run `decide` on each id until the deadline; time all but the first `warmup`."""
    samples: list[int] = []
    cpu_ns = 0
    decided = succeeded = 0
    for i, one_id in enumerate(ids):
        if deadline.passed():
            break
        cpu_started = time.process_time_ns()
        started = time.perf_counter_ns()
        ok = decide(one_id)
        elapsed = time.perf_counter_ns() - started
        if i < warmup:
            continue
        cpu_ns += time.process_time_ns() - cpu_started
        samples.append(elapsed)
        decided += 1
        succeeded += ok
    total = sum(samples)
    return {
        "requested": max(0, len(ids) - warmup),
        "decided": decided,
        "assigned": succeeded,
        "seconds": round(total / NS, 3),
        "decisions_per_second": round(decided / (total / NS), 1) if total else None,
        "latency_ms": percentiles(samples),
        # This process's CPU per decision: ORM work, plus the database's own with SQLite. Unlike
        # latency it does not count waiting for a busy machine's CPU or for PostgreSQL.
        "process_cpu_ms_per_decision": round(cpu_ns / decided / 1e6, 3) if decided else None,
        "stopped_by_deadline": decided < len(ids) - warmup,
    }


def queries_per_decision(decide: Callable[[int], bool], one_id: int) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        decide(one_id)
    return len(captured.captured_queries)


# ---------------------------------------------------------------------------------------------
# Query plans


def _plan(queryset: Any) -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        return queryset.explain(analyze=True, buffers=True)
    return queryset.explain()


def query_plans(site_id: int, visitor_id: int) -> dict[str, str]:
    """How the database runs the seat pick, the baseline's pick and the previous-agent lookup."""
    from chat import assignment
    from chat.models import Conversation

    seat_pick = assignment.seat_pick(assignment.site_pool(site_id))[:1]
    previous = (
        Conversation.objects.filter(visitor_id=visitor_id, assignee__isnull=False)
        .exclude(pk=0)
        .order_by("-id")
        .values_list("assignee_id", flat=True)[:1]
    )
    return {
        "seat_pick": _plan(seat_pick),
        "baseline_pick": _plan(naive_pick_query(site_id)[:1]),
        "previous_agent": _plan(previous),
    }


# ---------------------------------------------------------------------------------------------
# One agent count


def capacity_for(agents: int, decisions: int, warmup: int, open_per_agent: int) -> int:
    """Room for everything the run gives each agent (three kinds of decisions), plus a margin."""
    needed = open_per_agent + math.ceil(3 * (decisions + warmup + 1) / agents) + 10
    if needed > MAX_CAPACITY:
        raise SystemExit(
            f"{agents} agents cannot take {decisions} decisions of each kind without filling "
            f"up (max_concurrent_chats stops at {MAX_CAPACITY}); use more agents or fewer "
            "decisions."
        )
    return needed


def run_one(agents: int, args: argparse.Namespace, deadline: Deadline) -> dict[str, Any]:
    from django.db import connection

    from chat.models import Conversation, Site

    warmup = args.warmup
    capacity = capacity_for(agents, args.decisions, warmup, args.open_per_agent)
    site = Site.objects.create(name=f"Routing bench, {agents} agents")
    log(f"N={agents}: creating agents (capacity {capacity})")
    setup = make_agents(site, agents, capacity, args.open_per_agent, deadline)
    to_route = make_conversations(site, args.decisions + warmup + 1)
    first_messages = make_visitors(site, args.decisions + warmup + 1)
    for_baseline = make_conversations(site, args.decisions + warmup)
    if connection.vendor == "postgresql" and not args.no_analyze:
        analyze()
    result: dict[str, Any] = {
        "agents": agents,
        "agents_online": setup["online"],
        "capacity": capacity,
        "open_per_agent": args.open_per_agent,
        "setup_seconds": {"bulk": setup["bulk_seconds"], "online": setup["online_seconds"]},
        "conversations_in_database": Conversation.objects.count(),
        # The machine is shared: how busy it was says how far to trust the figures.
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }

    log(f"N={agents}: {args.decisions} decisions through assignment.assign")
    result["queries_per_decision"] = {
        "assign": queries_per_decision(decide_with_seats, to_route[0])
    }
    result["assign"] = time_decisions(decide_with_seats, to_route[1:], warmup, deadline)

    log(f"N={agents}: {args.decisions} first messages through actions.post_visitor_message")
    result["queries_per_decision"]["post_visitor_message"] = queries_per_decision(
        first_visitor_message, first_messages[0]
    )
    result["post_visitor_message"] = time_decisions(
        first_visitor_message, first_messages[1:], warmup, deadline
    )

    log(f"N={agents}: baseline (naive COUNT), up to {args.baseline_seconds:g} s")
    baseline = time_decisions(
        decide_naively, for_baseline, warmup, deadline.sooner(args.baseline_seconds)
    )
    baseline["deadline_seconds"] = args.baseline_seconds
    result["baseline_naive"] = baseline
    result["site_id"] = site.pk
    result["sample_visitor_id"] = first_messages[0]
    return result


# ---------------------------------------------------------------------------------------------
# Entry point


def _commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return f"{head}{'-dirty' if dirty else ''}" if head else None


def _database_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SHOW server_version")
            return f"PostgreSQL {cursor.fetchone()[0]}"
        cursor.execute("SELECT sqlite_version()")
        return f"SQLite {cursor.fetchone()[0]}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = Deadline(args.max_seconds)
    started = time.monotonic()
    result: dict[str, Any] = {
        "tool": "bench.routing",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "args": {k: v for k, v in vars(args).items() if k != "database_url"},
    }
    admin_url = None if args.sqlite else args.database_url
    with tempfile.TemporaryDirectory(prefix="gofly_bench_data_") as data_dir:
        with scratch_database(admin_url) as database_url:
            setup_django(database_url, data_dir)
            import django

            result["backend"] = _database_version()
            result["python"] = platform.python_version()
            result["django"] = django.get_version()
            runs = []
            for agents in args.agents:
                if deadline.passed():
                    log(f"deadline passed; N={agents} not run")
                    break
                runs.append(run_one(agents, args, deadline))
            result["runs"] = runs
            if runs:
                largest = max(runs, key=lambda r: r["agents"])
                plans = query_plans(largest["site_id"], largest["sample_visitor_id"])
                result["query_plans"] = {"agents": largest["agents"], **plans}
    result["skipped_agent_counts"] = [
        n for n in args.agents if n not in {r["agents"] for r in runs}
    ]
    result["elapsed_seconds"] = round(time.monotonic() - started, 1)
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, nargs="+", default=[10, 1000, 10000], help="values of N")
    p.add_argument("--decisions", type=int, default=2000, help="timed decisions of each kind")
    p.add_argument("--warmup", type=int, default=20, help="untimed decisions before each series")
    p.add_argument(
        "--open-per-agent",
        type=int,
        default=3,
        help="open conversations each agent holds before the run",
    )
    p.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="admin URL of the PostgreSQL server to create the scratch database on",
    )
    p.add_argument("--sqlite", action="store_true", help="run on a temporary SQLite file instead")
    p.add_argument("--no-analyze", action="store_true", help="skip ANALYZE after each bulk load")
    p.add_argument(
        "--baseline-seconds", type=float, default=60.0, help="time allowed to the baseline per N"
    )
    p.add_argument("--max-seconds", type=float, default=900.0, help="hard cap on the whole run")
    args = p.parse_args(argv)
    if min(args.agents) < 1 or args.decisions < 1 or args.warmup < 0:
        p.error("--agents and --decisions must be at least 1, --warmup at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(json.dumps(run(args), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
