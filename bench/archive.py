"""Benchmark of the archive job on PostgreSQL: whole partitions moved against rows copied.

Run from the repository root; it needs a PostgreSQL on 127.0.0.1 where it may create databases:

    .venv/bin/python -m bench.archive --rows 50000 200000 1000000 > archive.json

`--database-url` is used only to CREATE a fresh database `gofly_bench_archive_<random>`, which
is migrated, measured and DROPped again at the end, whatever happens. For each row count N, in
one run and on the same data:

1. one past month's partition is filled with N messages (one `INSERT … SELECT generate_series`;
   Chinese and English bodies of about 60 bytes, 20 messages a conversation) and vacuumed, as
   an old month would be;
2. `archive.run(mode="schema")` moves it; every SQL statement is timed through Django's
   execute wrapper, so DETACH, SET SCHEMA, ATTACH and the row count are reported apart, and the
   server's DEBUG1 notices say whether ATTACH skipped its validating scan; the table is then
   detached and attached once more without the CHECK constraint DETACH left on it, to time
   the scan that constraint saves;
3. the month is refilled and `archive.run(mode="export")` writes it as gzip CSV; the file's
   CSV is then compressed again in memory at gzip levels 9, 6 and 1 to price each level;
4. the baseline: refilled once more and moved by copying rows in batches of
   `archive.BATCH_SIZE` (`archive._archive_rows`, the SQLite path, run on the partitioned
   tables into an archive partition made for the month).

Then, for the largest N, a writer thread posts visitor messages into the current month through
`chat.actions.post_visitor_message` while the schema-mode archive runs, and the same loop runs
once with no archive beside it; both report insert latency. Last, for the smallest N, the
same writer runs while the archive meets a transaction that has updated a conversation and
stays open for `--hold-seconds`, once with the job's lock timeout switched off and once with
it on. Every loop is bounded by a count and by the `--max-seconds` deadline. One JSON object
goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2

from bench.loadtest import percentiles

MONTH_OFFSET = -3  # the measured month: far enough back for a one-month archive policy
MESSAGES_PER_CONVERSATION = 20
CURRENT_MONTH_ROWS = 20_000
# Bodies are made of words drawn pseudo-randomly per message, so that gzip meets text about as
# varied as real chat; a handful of repeated sentences would compress several times better.
# One message in two is English (9 words, ~60 bytes), the other Chinese (10 words, ~60 bytes).
ENGLISH_WORDS = (
    "order shipping refund invoice payment card delivery address package tracking number "
    "account password login email phone discount coupon price size colour return exchange "
    "warranty receipt today tomorrow yesterday please thanks hello sorry help check still "
    "not yet already when where why how can could would send change cancel update received "
    "arrived broken missing wrong late fast again support agent product store app website "
    "cart checkout week"
).split()
CHINESE_WORDS = (
    "订单 发货 退款 发票 付款 快递 地址 包裹 物流 单号 账号 密码 登录 邮箱 手机 优惠 "
    "价格 尺码 颜色 退货 换货 保修 收据 今天 明天 昨天 请问 谢谢 你好 抱歉 帮忙 查询 "
    "还是 没有 已经 什么 时候 哪里 为什么 怎么 可以 能否 发送 修改 取消 更新 收到 到达 "
    "损坏 缺少 错误 太慢 很快 再次 客服 商品 店铺 网站 购物 结算 本周 麻烦 确认 一下"
).split()


def log(text: str) -> None:
    print(f"[bench.archive {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class Options:
    rows: list[int]
    database_url: str
    max_seconds: float
    inserts: int
    hold_seconds: float  # how long the long transaction of the open-transaction case stays open
    deadline: float = field(default=0.0)

    def time_left(self) -> float:
        return self.deadline - time.monotonic()


# ---------------------------------------------------------------------------------------------
# The throw-away database


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def _admin_connection(url: str) -> Any:
    parts = urlsplit(url)
    connection = psycopg2.connect(
        dbname=parts.path.lstrip("/") or "postgres",
        user=parts.username,
        password=parts.password,
        host=parts.hostname,
        port=parts.port,
    )
    connection.autocommit = True
    return connection


def create_database(url: str) -> str:
    name = f"gofly_bench_archive_{secrets.token_hex(4)}"
    admin = _admin_connection(url)
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    return name


def drop_database(url: str, name: str) -> None:
    admin = _admin_connection(url)
    with admin.cursor() as cursor:
        # Only our own database's sessions: what a crashed writer thread may have left.
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


def setup_django(url: str, data_dir: Path) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["GOFLY_DATA_DIR"] = str(data_dir)
    os.environ.pop("GOFLY_CONFIG", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gofly_project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# ---------------------------------------------------------------------------------------------
# Data


def this_month() -> date:
    from chat import partitions

    return partitions.month_start(datetime.now(UTC).date())


def bench_month() -> date:
    from chat import partitions

    return partitions.add_months(this_month(), MONTH_OFFSET)


def _execute(sql: str, params: Any = None) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def make_conversations(count: int, since: date) -> tuple[int, int]:
    """`count` visitors of one site with a conversation each; return (first id, agent id)."""
    from django.contrib.auth import get_user_model

    from chat.models import Conversation, Site

    site = Site.objects.create(name="Bench shop")
    agent = get_user_model().objects.create_user("bench-agent")
    started = datetime(since.year, since.month, 1, tzinfo=UTC)
    _execute(
        "INSERT INTO chat_visitor (public_id, name, email, user_agent, referrer, page_url,"
        " first_seen, last_seen, site_id)"
        " SELECT 'bench-' || i, '', '', 'bench', '', '', %s, %s, %s"
        " FROM generate_series(1, %s) AS i",
        [started, started, site.pk, count],
    )
    _execute(
        # Every NOT NULL column without a database default is named here; a new one must be too.
        "INSERT INTO chat_conversation (channel, status, created_at, last_seq,"
        " last_message_preview, agent_read_seq, visitor_read_seq, rating_comment, bot_active,"
        " site_id, visitor_id)"
        " SELECT 'web', 'resolved', %s, 0, '', 0, 0, '', false, %s, v.id"
        " FROM chat_visitor v WHERE v.site_id = %s ORDER BY v.id",
        [started, site.pk, site.pk],
    )
    first = Conversation.objects.filter(site=site).order_by("id").values_list("id", flat=True)[0]
    return first, agent.pk


def fill_month(month: date, rows: int, first_conversation: int, agent_id: int) -> float:
    """Create the month's partition and fill it with `rows` messages; return the seconds."""
    from chat import partitions

    started = time.perf_counter()
    partitions.create_partition(_connection(), month)
    begin = datetime(month.year, month.month, 1, tzinfo=UTC)
    end_month = partitions.add_months(month, 1)
    span = datetime(end_month.year, end_month.month, 1, tzinfo=UTC) - begin
    _insert_messages(begin, span.total_seconds(), rows, first_conversation, agent_id)
    # An old month has long been vacuumed; without this the first scan of it sets hint bits.
    _execute(f'VACUUM (ANALYZE) "{partitions.partition_name(month)}"')
    return time.perf_counter() - started


def _insert_messages(
    begin: datetime, span_seconds: float, rows: int, first_conversation: int, agent_id: int
) -> None:
    conversations = max(1, rows // MESSAGES_PER_CONVERSATION)
    _execute(
        "INSERT INTO chat_message (created_at, seq, sender_kind, sender_user_id, body,"
        " content_type, client_id, conversation_id)"
        " SELECT %(begin)s + (i - 1) * %(step)s * interval '1 second',"
        "  (i - 1) / %(convs)s + 1,"
        "  CASE WHEN i %% 2 = 0 THEN 'agent' ELSE 'visitor' END,"
        "  CASE WHEN i %% 2 = 0 THEN %(agent)s END,"
        f"  CASE WHEN i %% 2 = 0 THEN {_random_words('en', 9, ' ')}"
        f"  ELSE {_random_words('zh', 10, '')} END,"
        "  'text', 'bench-' || i, %(first)s + (i - 1) %% %(convs)s"
        " FROM generate_series(1, %(rows)s) AS i",
        {
            "begin": begin,
            "step": span_seconds / rows,
            "convs": conversations,
            "agent": agent_id,
            "en": ENGLISH_WORDS,
            "zh": CHINESE_WORDS,
            "first": first_conversation,
            "rows": rows,
        },
    )


def _random_words(words: str, count: int, separator: str) -> str:
    """SQL for `count` words of the named array parameter, picked by a hash of row and place."""
    array = f"%({words})s::text[]"
    pick = f"({array})[1 + (hashint8(i * 16 + k) & 2147483647) %% cardinality({array})]"
    chosen = f"ARRAY(SELECT {pick} FROM generate_series(1, {count}) AS k)"
    return f"array_to_string({chosen}, '{separator}')"


def fill_current_month(rows: int, first_conversation: int, agent_id: int) -> None:
    """Some live traffic in the current month, so the live table is not empty."""
    month = this_month()
    begin = datetime(month.year, month.month, 1, tzinfo=UTC)
    elapsed = (datetime.now(UTC) - begin).total_seconds()
    _insert_messages(begin, max(elapsed - 60, 1), rows, first_conversation, agent_id)


def body_bytes(month: date) -> float:
    from chat import partitions

    name = partitions.partition_name(month)
    return float(_execute(f'SELECT avg(octet_length(body)) FROM "{name}"')[0][0])


def clear_month(month: date) -> None:
    """Remove every trace of the month: live and archived tables, catalogue row, export file."""
    from chat import archive, partitions
    from chat.models import ArchivedMonth

    name = partitions.partition_name(month)
    _execute(f'DROP TABLE IF EXISTS "{name}"')
    _execute(f'DROP TABLE IF EXISTS {archive.SCHEMA}."{name}"')
    _execute(f"DROP TABLE IF EXISTS {archive.SCHEMA}.{_copy_target(month)}")
    ArchivedMonth.objects.filter(month=month).delete()
    archive.export_path(month).unlink(missing_ok=True)


def _connection() -> Any:
    from django.db import connection

    return connection


# ---------------------------------------------------------------------------------------------
# Measuring


class StatementTimer:
    """Django execute wrapper: wall time of every statement, summed per archive step."""

    STEPS = [
        ("DETACH PARTITION", "detach"),
        ("SET SCHEMA", "set_schema"),
        ("ATTACH PARTITION", "attach"),
        ("SELECT count(*)", "count"),
        ("DROP TABLE", "drop"),
    ]

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            step = next((name for key, name in self.STEPS if key in sql), "other")
            self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - started

    def rounded(self) -> dict[str, float]:
        return {step: round(value, 4) for step, value in sorted(self.seconds.items())}


class WarningCounter(logging.Handler):
    """Counts the archive job's warnings by message key."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = record.getMessage()
        self.counts[key] = self.counts.get(key, 0) + 1


def _notices() -> list[str]:
    return _connection().connection.notices


def timed_archive(mode: str) -> dict[str, Any]:
    """Run the archive job once with a one-month policy; time it and each of its statements."""
    from chat import archive

    connection = _connection()
    connection.ensure_connection()
    timer = StatementTimer()
    warnings = WarningCounter()
    _execute("SET client_min_messages TO debug1")
    del _notices()[:]
    archive.logger.addHandler(warnings)
    started = time.perf_counter()
    try:
        with connection.execute_wrapper(timer):
            results = archive.run(after_months=1, mode=mode)
    finally:
        seconds = time.perf_counter() - started
        archive.logger.removeHandler(warnings)
        _execute("RESET client_min_messages")
    implied = [n for n in _notices() if "implied by existing constraints" in n]
    return {
        "seconds": round(seconds, 4),
        "steps": timer.rounded(),
        "rows": sum(result.rows for result in results),
        "months": len(results),
        "location": results[0].location if results else None,
        "attach_scan_skipped": bool(implied) if mode == "schema" else None,
        "lock_timeouts": warnings.counts.get("archive.lock_timeout", 0),
    }


def measure_schema(month: date, rows: int, first: int, agent: int) -> dict[str, Any]:
    fill = fill_month(month, rows, first, agent)
    bytes_per_body = body_bytes(month)
    log(f"N={rows}: filled in {fill:.1f} s; archiving (schema)")
    result = timed_archive("schema")
    result["fill_seconds"] = round(fill, 2)
    result["body_bytes_avg"] = round(bytes_per_body, 1)
    result["attach_with_scan_seconds"] = reattach_with_scan(month)
    clear_month(month)
    return result


def reattach_with_scan(month: date) -> float:
    """Time ATTACH once more without the CHECK constraint DETACH … CONCURRENTLY left behind.

    That is what ATTACH costs when it must scan the table to prove every row is in the month.
    """
    from chat import archive, partitions

    name = partitions.partition_name(month)
    table = f'{archive.SCHEMA}."{name}"'
    _execute(f'ALTER TABLE "{archive.ARCHIVE_TABLE}" DETACH PARTITION {table}')
    for (constraint,) in _execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c' "
        "AND pg_get_constraintdef(oid) LIKE '%%created_at%%'",
        [f"{archive.SCHEMA}.{name}"],
    ):
        _execute(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
    bounds = (
        f"FROM ('{partitions.month_bound(month)}') "
        f"TO ('{partitions.month_bound(partitions.add_months(month, 1))}')"
    )
    started = time.perf_counter()
    _execute(f'ALTER TABLE "{archive.ARCHIVE_TABLE}" ATTACH PARTITION {table} FOR VALUES {bounds}')
    return round(time.perf_counter() - started, 4)


def measure_export(month: date, rows: int, first: int, agent: int) -> dict[str, Any]:
    fill_month(month, rows, first, agent)
    log(f"N={rows}: archiving (export)")
    result = timed_archive("export")
    path = Path(result["location"])
    result["bytes"] = path.stat().st_size
    result["bytes_per_row"] = round(result["bytes"] / max(result["rows"], 1), 1)
    result["recount_seconds"] = recount_seconds(path)
    result["gzip_levels"] = gzip_level_costs(path)
    clear_month(month)
    return result


def gzip_level_costs(path: Path) -> dict[int, dict[str, float]]:
    """Seconds and bytes to compress the export's CSV in memory at levels 9, 6 and 1."""
    with gzip.open(path, "rb") as fh:
        csv_bytes = fh.read()
    costs = {}
    for level in (9, 6, 1):
        started = time.perf_counter()
        size = len(gzip.compress(csv_bytes, compresslevel=level, mtime=0))
        costs[level] = {"seconds": round(time.perf_counter() - started, 3), "bytes": size}
    costs[0] = {"seconds": 0.0, "bytes": len(csv_bytes)}  # uncompressed, for the ratio
    return costs


def recount_seconds(path: Path) -> float:
    """Time to read the file back and count its rows, as the export step does after writing."""
    import csv

    started = time.perf_counter()
    with gzip.open(path, "rt", encoding="utf-8", newline="") as check:
        sum(1 for _ in csv.reader(check))
    return round(time.perf_counter() - started, 4)


def _copy_target(month: date) -> str:
    return f"bench_copy_p{month:%Y_%m}"


def measure_copy(month: date, rows: int, first: int, agent: int) -> dict[str, Any]:
    """The baseline: the same month moved row by row, in batches, into an archive partition."""
    from chat import archive, partitions

    fill_month(month, rows, first, agent)
    bounds = (
        f"FROM ('{partitions.month_bound(month)}') "
        f"TO ('{partitions.month_bound(partitions.add_months(month, 1))}')"
    )
    _execute(
        f"CREATE TABLE {archive.SCHEMA}.{_copy_target(month)} "
        f'PARTITION OF "{archive.ARCHIVE_TABLE}" FOR VALUES {bounds}'
    )
    log(f"N={rows}: archiving (row copy, batches of {archive.BATCH_SIZE})")
    started = time.perf_counter()
    result = archive._archive_rows(month, "schema")
    seconds = time.perf_counter() - started
    left = _execute(f'SELECT count(*) FROM "{partitions.partition_name(month)}"')[0][0]
    clear_month(month)
    return {"seconds": round(seconds, 4), "rows": result.rows, "rows_left_live": left}


# ---------------------------------------------------------------------------------------------
# Live writes while the archive runs


@dataclass
class Writer:
    """Posts visitor messages back to back from its own thread and its own connection."""

    visitor_ids: list[int]
    count: int
    deadline: float
    spans_ns: list[tuple[int, int]] = field(default_factory=list)  # (start, end) per insert
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from django.db import connection

        from chat import actions

        try:
            for n in range(self.count):
                if self.stop.is_set() or time.monotonic() > self.deadline:
                    break
                visitor = self.visitor_ids[n % len(self.visitor_ids)]
                begin = time.perf_counter_ns()
                try:
                    actions.post_visitor_message(
                        visitor,
                        client_id=f"w{secrets.token_hex(6)}",
                        body=" ".join(ENGLISH_WORDS[n % 50 : n % 50 + 9]),
                    )
                except Exception as exc:  # a failed insert is a result, not a crash
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.spans_ns.append((begin, time.perf_counter_ns()))
        finally:
            connection.close()

    def latencies(self, window: tuple[int, int] | None = None) -> dict[str, Any]:
        chosen = [
            end - begin
            for begin, end in self.spans_ns
            if window is None or (end >= window[0] and begin <= window[1])
        ]
        return percentiles(chosen)


def _live_body(n: int) -> str:
    return " ".join(ENGLISH_WORDS[n % 50 : n % 50 + 9])


def live_visitors(count: int) -> list[int]:
    """Visitors with an open conversation in the current month (each posts once here)."""
    from chat import actions
    from chat.models import Site, Visitor

    site = Site.objects.create(name="Live shop")
    ids = [Visitor.objects.create(site=site).pk for _ in range(count)]
    for visitor in ids:
        actions.post_visitor_message(visitor, client_id="warm", body="hello")
    return ids


def writes_beside(
    visitors: list[int], options: Options, action: Callable[[], Any]
) -> dict[str, Any]:
    """Run `action` while a writer posts; latency overall and of the posts overlapping it."""
    writer = Writer(visitors, options.inserts, time.monotonic() + min(120, options.time_left()))
    thread = threading.Thread(target=writer.run, name="bench-writer", daemon=True)
    thread.start()
    lead = max(1, options.inserts // 4)
    while len(writer.spans_ns) < lead and thread.is_alive():
        time.sleep(0.005)
    window_start = time.perf_counter_ns()
    outcome = action()
    window = (window_start, time.perf_counter_ns())
    thread.join(timeout=max(1.0, writer.deadline - time.monotonic()))
    writer.stop.set()
    thread.join(timeout=10)
    return {
        "action": outcome,
        "action_ms": round((window[1] - window[0]) / 1e6, 3),
        "inserts_ms": writer.latencies(),
        "inserts_during_action_ms": writer.latencies(window),
        "errors": writer.errors[:5],
        "error_count": len(writer.errors),
    }


def measure_concurrency(
    month: date, rows: int, first: int, agent: int, options: Options, visitors: list[int]
) -> dict[str, Any]:
    log(f"writer alone: {options.inserts} posts")
    # The baseline "action" takes about as long as a schema-mode archive, doing nothing.
    alone = writes_beside(visitors, options, lambda: time.sleep(0.5))
    fill_month(month, rows, first, agent)
    log(f"writer beside the schema-mode archive of N={rows}")
    beside = writes_beside(visitors, options, lambda: timed_archive("schema"))
    clear_month(month)
    return {"rows": rows, "without_archive": alone, "with_archive": beside}


def _hold_conversation_update(
    conversation_id: int, seconds: float, holding: threading.Event
) -> None:
    """An open transaction that has updated a conversation, like a slow bulk admin action."""
    from django.db import connection, transaction

    from chat.models import Conversation

    try:
        with transaction.atomic():
            Conversation.objects.filter(pk=conversation_id).update(status="pending")
            holding.set()
            time.sleep(seconds)
    finally:
        connection.close()


def archive_beside_open_transaction(conversation_id: int, seconds: float) -> dict[str, Any]:
    holding = threading.Event()
    holder = threading.Thread(
        target=_hold_conversation_update, args=(conversation_id, seconds, holding), daemon=True
    )
    holder.start()
    holding.wait(timeout=10)
    try:
        return timed_archive("schema")
    finally:
        holder.join(timeout=seconds + 10)


def measure_open_transaction(
    month: date, rows: int, first: int, agent: int, options: Options, visitors: list[int]
) -> dict[str, Any]:
    """Live posts while the archive meets a long transaction, without and with a lock timeout."""
    from chat import archive

    result: dict[str, Any] = {"rows": rows, "hold_seconds": options.hold_seconds}
    configured = archive.LOCK_TIMEOUT_MS
    for label, timeout in (("lock_timeout_off", 0), ("lock_timeout_on", configured)):
        if options.time_left() <= 0:
            break
        fill_month(month, rows, first, agent)
        log(f"writer beside the archive and a {options.hold_seconds} s transaction, {label}")
        archive.LOCK_TIMEOUT_MS = timeout
        try:
            result[label] = writes_beside(
                visitors,
                options,
                lambda: archive_beside_open_transaction(first, options.hold_seconds),
            )
        finally:
            archive.LOCK_TIMEOUT_MS = configured
            clear_month(month)
    result["lock_timeout_ms"] = configured
    return result


# ---------------------------------------------------------------------------------------------
# The run


def measure_all(options: Options) -> dict[str, Any]:
    month = bench_month()
    past = max(options.rows) // MESSAGES_PER_CONVERSATION + 1
    live = CURRENT_MONTH_ROWS // MESSAGES_PER_CONVERSATION
    first, agent = make_conversations(past + live, month)
    # The current month's stream uses conversations of its own, after the past month's.
    fill_current_month(CURRENT_MONTH_ROWS, first + past, agent)
    results: dict[str, Any] = {"per_rows": [], "skipped": []}
    for rows in sorted(options.rows):
        if options.time_left() <= 0:
            results["skipped"].append(rows)
            continue
        entry = {
            "rows": rows,
            "schema": measure_schema(month, rows, first, agent),
            "export": measure_export(month, rows, first, agent),
            "copy": measure_copy(month, rows, first, agent),
        }
        results["per_rows"].append(entry)
        log(
            f"N={rows}: schema {entry['schema']['seconds']} s, export "
            f"{entry['export']['seconds']} s, copy {entry['copy']['seconds']} s"
        )
    done = [entry["rows"] for entry in results["per_rows"]]
    if done and options.time_left() > 0:
        visitors = live_visitors(20)
        results["concurrency"] = measure_concurrency(
            month, max(done), first, agent, options, visitors
        )
        results["open_transaction"] = measure_open_transaction(
            month, min(done), first, agent, options, visitors
        )
    return results


def environment() -> dict[str, Any]:
    server = _execute("SHOW server_version")[0][0]
    return {
        "postgresql": server,
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run_bench(options: Options) -> dict[str, Any]:
    """Create the database, measure everything, drop the database; return the result dict."""
    options.deadline = time.monotonic() + options.max_seconds
    name = create_database(options.database_url)
    data_dir = Path(tempfile.mkdtemp(prefix="gofly_bench_archive_"))
    log(f"database {name}, files in {data_dir}")
    try:
        setup_django(_with_database(options.database_url, name), data_dir)
        # No statement of ours may outlive the run's deadline.
        _execute(f"SET statement_timeout = {int(options.max_seconds * 1000)}")
        result = {"database": name, "environment": environment(), **measure_all(options)}
        result["seconds_total"] = round(options.max_seconds - options.time_left(), 1)
        return result
    finally:
        _close_django()
        drop_database(options.database_url, name)
        shutil.rmtree(data_dir, ignore_errors=True)
        log(f"dropped {name}")


def _close_django() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument(
        "--database-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="server to create the throw-away database on (its own database is not touched)",
    )
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--inserts", type=int, default=2000, help="posts per writer loop")
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=3.0,
        help="how long the open transaction of the last case holds a conversation updated",
    )
    args = parser.parse_args(argv)
    if urlsplit(args.database_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("benchmarks target 127.0.0.1 only")
    if min(args.rows) < 1 or args.inserts < 4 or args.max_seconds <= 0 or args.hold_seconds < 0:
        parser.error("--rows >= 1, --inserts >= 4, --max-seconds > 0, --hold-seconds >= 0")
    return Options(args.rows, args.database_url, args.max_seconds, args.inserts, args.hold_seconds)


def main(argv: list[str] | None = None) -> int:
    result = run_bench(parse_args(argv))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
