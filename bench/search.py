"""Benchmark of message search on PostgreSQL: the trigram index against none.

Run from the repository root; it needs a PostgreSQL on 127.0.0.1 where it may create databases:

    .venv/bin/python -m bench.search --rows 200000 > search.json

`--database-url` is used only to CREATE a fresh database `gofly_bench_search_<random>`, which
is migrated, filled, measured and DROPped again at the end, whatever happens. The fill: N
messages over the last twelve months (one partition each), 20 a conversation, conversations
spread over five sites; bodies are 32 Chinese and English customer-service sentences (10 to 50
characters) with a running number, each used for 1/32 of the messages, so that `申请退款` and
`refund` are each in 3.1 % of them, `退款` in 9.4 % and `order 4711` in a handful. Then, for
each query, `chat.search.search_messages` (first page, 20 hits) is timed `--repeat` times
as a superuser and as an agent of one site, with the index and then with it dropped inside a
transaction that is rolled back. The plans of the live-table query come from EXPLAIN
(ANALYZE). One JSON object goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
MONTHS = 12
SITES = 5
MESSAGES_PER_CONVERSATION = 20
QUERIES = {
    "chinese_4_chars": {"text": "申请退款"},
    "english": {"text": "refund"},
    "chinese_2_chars": {"text": "退款"},
    "chinese_2_chars_one_month": {"text": "退款", "month": True},
    "rare_english": {"text": "order 4711"},
}

# Customer-service sentences; # becomes a running number so bodies do not repeat exactly.
FILL_SQL = """
WITH phrases(n, body) AS (VALUES
    (0, '你好，请问订单#什么时候发货？'),
    (1, 'Hello, where is my order #? It has been a week.'),
    (2, '我想申请退款，订单号#，谢谢'),
    (3, 'The parcel # arrived damaged, what can I do?'),
    (4, '好的，已经为您查询，订单#今天出库'),
    (5, 'Can I change the delivery address for order #?'),
    (6, '请问可以开发票吗？订单#'),
    (7, 'Thanks, that solved it (ticket #).'),
    (8, '退款多久到账？单号#'),
    (9, 'I would like a refund please, order #'),
    (10, '商品尺码不合适，能换货吗？#'),
    (11, 'Your warehouse sent the wrong colour, order #'),
    (12, '客服您好，优惠券#用不了'),
    (13, 'Is there a discount for students? #'),
    (14, '已经收到货了，谢谢#'),
    (15, 'Please call me back at extension #'),
    (16, '物流信息一直没有更新，单号#'),
    (17, 'How long does shipping to Berlin take? #'),
    (18, '退款已经处理，请注意查收#'),
    (19, 'OK, thank you very much! #'),
    (20, '会员积分#怎么用？'),
    (21, 'The app crashes when I pay, case #'),
    (22, '能帮我取消订单#吗'),
    (23, 'Do you ship to Canada? #'),
    (24, '价格#元包邮吗'),
    (25, 'Great service, thanks #'),
    (26, '我要投诉，订单#'),
    (27, 'My password reset mail never came #'),
    (28, '请问周末有人值班吗#'),
    (29, 'Which size fits a 90 cm chest? #'),
    (30, '客服在吗？#'),
    (31, 'Bye! #')
)
INSERT INTO chat_message (created_at, conversation_id, seq, sender_kind, body, content_type,
                          client_id)
SELECT %(start)s::timestamptz + (i::float / %(rows)s) * (%(end)s::timestamptz - %(start)s),
       %(first_conversation)s + i / {per},
       i %% {per} + 1,
       CASE WHEN i %% 2 = 0 THEN 'visitor' ELSE 'agent' END,
       replace(p.body, '#', i::text),
       'text',
       'b' || i
FROM generate_series(0, %(rows)s - 1) AS i
JOIN phrases p ON p.n = (i * 7 + i / 32) %% 32
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _admin_url(url: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/postgres"))


def _admin(url: str, statement: str) -> None:
    connection = psycopg2.connect(_admin_url(url))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(statement)
    connection.close()


def _fill(rows: int) -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.db import connection

    from agents.models import Agent
    from chat import partitions
    from chat.models import Conversation, Site, Visitor

    today = datetime.now(UTC).date()
    first_month = partitions.add_months(partitions.month_start(today), -(MONTHS - 1))
    for offset in range(MONTHS + 1):
        partitions.create_partition(connection, partitions.add_months(first_month, offset))
    sites = [Site.objects.create(name=f"bench {n}") for n in range(SITES)]
    conversations = rows // MESSAGES_PER_CONVERSATION
    start = datetime(first_month.year, first_month.month, 1, tzinfo=UTC)
    end = datetime.now(UTC)
    visitors = Visitor.objects.bulk_create(
        [Visitor(site=sites[n % SITES], name=f"v{n}") for n in range(conversations)]
    )
    spread = end - start
    made = Conversation.objects.bulk_create(
        [
            Conversation(
                site=sites[n % SITES],
                visitor=visitor,
                status="resolved" if n % 3 else "open",
                created_at=start + spread * (n / conversations),
            )
            for n, visitor in enumerate(visitors)
        ]
    )
    ids = sorted(c.pk for c in made)
    began = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute(
            FILL_SQL.format(per=MESSAGES_PER_CONVERSATION),
            {"start": start, "end": end, "rows": rows, "first_conversation": ids[0]},
        )
        cursor.execute("ANALYZE")
    filled = time.monotonic() - began
    superuser = get_user_model().objects.create_superuser("root", password="x")
    agent_user = get_user_model().objects.create_user("agent", password="x")
    Agent.objects.create(user=agent_user, display_name="Agent").sites.add(sites[0])
    return {
        "superuser": superuser,
        "agent": agent_user,
        "month": partitions.add_months(partitions.month_start(today), -6),
        "fill_seconds": round(filled, 2),
    }


def _sizes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sum(pg_relation_size(i.indexrelid)), sum(pg_relation_size(i.indrelid)) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname LIKE 'chat_message_p%%_upper_idx'"
        )
        index, table = cursor.fetchone()
    return {"index_bytes": int(index or 0), "table_bytes": int(table or 0)}


def _criteria(spec: dict[str, Any], month: date) -> Any:
    from chat import partitions, search

    if spec.get("month"):
        last = partitions.add_months(month, 1)
        return search.SearchCriteria(
            text=spec["text"], date_from=month, date_to=date.fromordinal(last.toordinal() - 1)
        )
    return search.SearchCriteria(text=spec["text"])


def _time(user: Any, criteria: Any, repeat: int) -> dict[str, Any]:
    from chat import search

    timings, hits = [], 0
    for _ in range(repeat):
        began = time.perf_counter()
        hits = len(search.search_messages(user, criteria).results)
        timings.append((time.perf_counter() - began) * 1000)
    return {"median_ms": round(statistics.median(timings), 1), "hits": hits}


def _explain(user: Any, criteria: Any) -> str:
    from django.db import connection

    from chat import search
    from chat.models import Message

    queryset = search._matching(Message, user, criteria, None)[: search.DEFAULT_LIMIT + 1]
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _measure(fill: dict[str, Any], repeat: int) -> dict[str, Any]:
    from django.db import connection, transaction

    results: dict[str, Any] = {}
    for name, spec in QUERIES.items():
        criteria = _criteria(spec, fill["month"])
        entry: dict[str, Any] = {"criteria": spec}
        for who in ("superuser", "agent"):
            entry[who] = {"index": _time(fill[who], criteria, repeat)}
        entry["plan_superuser"] = _explain(fill["superuser"], criteria)
        entry["plan_agent"] = _explain(fill["agent"], criteria)
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("DROP INDEX chat_message_body_trgm")
            for who in ("superuser", "agent"):
                entry[who]["no_index"] = _time(fill[who], criteria, repeat)
            entry["plan_superuser_no_index"] = _explain(fill["superuser"], criteria)
            transaction.set_rollback(True)
        results[name] = entry
        log(f"{name}: {json.dumps({k: entry[k] for k in ('superuser', 'agent')})}")
    return results


def _index_build_seconds() -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX chat_message_body_trgm")
        began = time.monotonic()
        cursor.execute(
            "CREATE INDEX chat_message_body_trgm ON chat_message "
            "USING gin (UPPER(body) gin_trgm_ops)"
        )
        return round(time.monotonic() - began, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    name = "gofly_bench_search_" + secrets.token_hex(4)
    url = urlunsplit(urlsplit(args.database_url)._replace(path="/" + name))
    _admin(args.database_url, f'CREATE DATABASE "{name}"')
    try:
        env = {**os.environ, "DATABASE_URL": url}
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"], env=env, cwd=ROOT, check=True
        )
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gofly_project.settings")
        import django

        django.setup()
        import logging

        logging.disable(logging.INFO)
        from django.db import connection

        log(f"filling {args.rows} messages")
        fill = _fill(args.rows)
        build = _index_build_seconds()
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            version = cursor.fetchone()[0]
        report = {
            "rows": args.rows,
            "postgres": version,
            "fill_seconds": fill["fill_seconds"],
            "index_build_seconds": build,
            **_sizes(),
            "queries": _measure(fill, args.repeat),
        }
        connection.close()
        print(json.dumps(report, indent=2, ensure_ascii=False))
    finally:
        _admin(args.database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
