"""Search over the whole history (chat/search.py) and its agent API endpoint."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import translation

from chat import archive, partitions, search, teamwork
from chat.models import Conversation, Message, Site, Visitor
from tests.conftest import make_agent

SEARCH = "/api/agent/v1/search"
THIS_MONTH = partitions.month_start(datetime.now(UTC).date())


def _conversation(site: Site, name: str, **fields) -> Conversation:
    visitor = Visitor.objects.create(site=site, name=name, email=f"{name.lower()}@example.com")
    return Conversation.objects.create(site=site, visitor=visitor, **fields)


def _message(conversation: Conversation, body: str, when: datetime | None = None, **fields):
    seq = conversation.messages.count() + 1
    fields.setdefault("sender_kind", "visitor")
    return Message.objects.create(
        conversation=conversation,
        seq=seq,
        body=body,
        client_id=f"c{seq}",
        created_at=when or datetime.now(UTC),
        **fields,
    )


def _find(user, **criteria) -> list[str]:
    page = search.search_messages(user, search.SearchCriteria(**criteria), limit=100)
    return [hit["snippet"] for hit in page.results]


@pytest.fixture
def refund_chats(site):
    """Two conversations on the shop's site: a Chinese refund request and an English one."""
    chinese = _conversation(site, "Li")
    english = _conversation(site, "Sam", status="resolved")
    _message(chinese, "你好")
    _message(chinese, "我想申请退款谢谢")
    _message(english, "Please REFUND my order")
    _message(english, "nothing to see")
    return chinese, english


@pytest.mark.django_db
def test_search_finds_a_chinese_substring_without_word_spaces(refund_chats, agent_alice):
    assert _find(agent_alice.user, text="退款") == ["我想申请退款谢谢"]
    assert _find(agent_alice.user, text="申请退款") == ["我想申请退款谢谢"]
    assert _find(agent_alice.user, text="退货") == []


@pytest.mark.django_db
def test_search_ignores_case_in_english(refund_chats, agent_alice):
    assert _find(agent_alice.user, text="refund") == ["Please REFUND my order"]
    assert _find(agent_alice.user, text="ReFuNd MY") == ["Please REFUND my order"]


@pytest.mark.django_db
def test_search_treats_like_wildcards_as_text(refund_chats, agent_alice):
    _message(refund_chats[1], "50% off")
    assert _find(agent_alice.user, text="%") == ["50% off"]
    assert _find(agent_alice.user, text="_") == []


@pytest.mark.django_db
def test_search_filters_by_visitor_status_and_dates(refund_chats, agent_alice):
    chinese, english = refund_chats
    old = datetime(2026, 3, 31, 23, 30, tzinfo=UTC)
    if partitions.is_partitioned(connection):
        partitions.create_partition(connection, partitions.month_start(old.date()))
    _message(english, "an old refund", when=old)

    assert _find(agent_alice.user, visitor="li", text="你") == ["你好"]
    assert _find(agent_alice.user, visitor=english.visitor.public_id, text="refund") == [
        "Please REFUND my order",
        "an old refund",
    ]
    assert _find(agent_alice.user, visitor="sam@example", text="old") == ["an old refund"]
    assert _find(agent_alice.user, status="open") == ["我想申请退款谢谢", "你好"]
    # Both days inclusive, in the server's time zone (UTC in the tests).
    on_the_day = {"date_from": date(2026, 3, 31), "date_to": date(2026, 3, 31)}
    assert _find(agent_alice.user, **on_the_day) == ["an old refund"]
    assert _find(agent_alice.user, date_from=date(2026, 4, 1), text="refund") == [
        "Please REFUND my order"
    ]
    assert _find(agent_alice.user, date_to=date(2026, 3, 30)) == []


@pytest.mark.django_db
def test_search_by_label_finds_conversations_that_carry_it(refund_chats, agent_alice):
    chinese, english = refund_chats
    teamwork.set_labels(agent_alice.user, chinese.pk, ["Refund", "vip"])
    teamwork.set_labels(agent_alice.user, english.pk, ["vip"])

    # Any case, as agents type it; combined with the other criteria by AND.
    assert _find(agent_alice.user, label="REFUND") == ["我想申请退款谢谢", "你好"]
    assert _find(agent_alice.user, label="vip", text="refund") == ["Please REFUND my order"]
    assert _find(agent_alice.user, label="unused") == []
    page = _client(agent_alice.user).get(SEARCH, {"label": "refund", "q": "你"}).json()
    assert [hit["snippet"] for hit in page["results"]] == ["你好"]


@pytest.mark.django_db
def test_search_by_agent_finds_what_they_sent_and_their_conversations(site, agent_alice):
    bob = make_agent("bob", site)
    theirs = _conversation(site, "Ann", assignee=bob.user)
    _message(theirs, "question for bob")
    _message(theirs, "answer from bob", sender_kind="agent", sender_user=bob.user)
    shared = _conversation(site, "Kim")
    _message(shared, "bob helped here", sender_kind="agent", sender_user=bob.user)
    _message(shared, "visitor thanks")

    assert _find(bob.user, agent=bob.user.pk) == [
        "bob helped here",
        "answer from bob",
        "question for bob",
    ]
    # Alice may not open Bob's assigned conversation, so she finds only the unassigned one.
    assert _find(agent_alice.user, agent=bob.user.pk) == ["bob helped here"]
    hit = search.search_messages(bob.user, search.SearchCriteria(text="answer")).results[0]
    assert hit["sender"] == {"kind": "agent", "name": "Bob"}
    assert hit["visitor"]["name"] == "Ann" and hit["conversation_status"] == "open"


@pytest.mark.django_db
def test_search_shows_nothing_from_another_site(refund_chats, other_site):
    outsider = make_agent("olga", other_site)
    assert _find(outsider.user, text="退款") == []
    assert _find(outsider.user, status="open") == []


@pytest.mark.django_db
def test_search_snippet_cuts_long_bodies_around_the_match():
    body = "a" * 100 + "退款" + "b" * 100
    text = search.snippet(body, "退款")
    assert text == "…" + "a" * 40 + "退款" + "b" * 40 + "…"
    assert search.snippet("short", "") == "short"


@pytest.mark.django_db
def test_search_pages_with_a_cursor_without_gaps_or_repeats(site, agent_alice):
    conversation = _conversation(site, "Many")
    same_instant = datetime.now(UTC).replace(microsecond=0)
    for n in range(25):
        # Groups of five share a timestamp, so the id has to break ties.
        when = same_instant - timedelta(minutes=n // 5)
        _message(conversation, f"order {n}", when=when)
    criteria = search.SearchCriteria(text="order")

    seen, cursor, pages = [], None, 0
    while True:
        page = search.search_messages(agent_alice.user, criteria, cursor, limit=7)
        seen += [hit["id"] for hit in page.results]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = search.Cursor.decode(page.next_cursor)

    expected = list(
        Message.objects.filter(body__startswith="order")
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
    )
    assert seen == expected and len(seen) == 25 and pages == 4


# ---------------------------------------------------------------------------------------------
# Archived messages: moved by the real archive job on either database


@pytest.fixture
def old_month(transactional_db):
    """A month old enough to archive, with its partition on PostgreSQL; cleaned up after."""
    month = partitions.add_months(THIS_MONTH, -6)
    name = partitions.partition_name(month)

    def drop() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP TABLE IF EXISTS "{name}"')
            cursor.execute(f'DROP TABLE IF EXISTS {archive.SCHEMA}."{name}"')

    postgres = partitions.is_partitioned(connection)
    if postgres:
        drop()
        partitions.create_partition(connection, month)
    yield month
    if postgres:
        drop()


def test_search_finds_archived_messages_and_marks_them(old_month, site):
    agent = make_agent("alice", site)
    conversation = _conversation(site, "Old", status="resolved")
    then = datetime(old_month.year, old_month.month, 3, 9, tzinfo=UTC)
    _message(conversation, "很久以前的退款申请", when=then)
    _message(conversation, "Refund approved, long ago", when=then + timedelta(hours=1))
    recent = _conversation(site, "New")
    _message(recent, "退款到账了吗")

    moved = archive.run(after_months=3, mode="schema")

    assert [result.month for result in moved] == [old_month]
    page = search.search_messages(agent.user, search.SearchCriteria(text="退款"))
    assert [(hit["snippet"], hit["archived"]) for hit in page.results] == [
        ("退款到账了吗", False),
        ("很久以前的退款申请", True),
    ]
    assert _find(agent.user, text="REFUND APPROVED") == ["Refund approved, long ago"]
    if partitions.is_partitioned(connection):
        # The moved partition brought its trigram index along, and the archive table adopted
        # it as its own instead of building a second one.
        name = partitions.partition_name(old_month)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT c.relname, parent.relname FROM pg_index x "
                "JOIN pg_class c ON c.oid = x.indexrelid "
                "JOIN pg_inherits i ON i.inhrelid = c.oid "
                "JOIN pg_class parent ON parent.oid = i.inhparent "
                "WHERE x.indrelid = %s::regclass AND pg_get_indexdef(c.oid) LIKE %s",
                [f"{archive.SCHEMA}.{name}", "%gin_trgm_ops%"],
            )
            assert cursor.fetchall() == [(f"{name}_upper_idx", "chat_archivedmessage_body_trgm")]


# ---------------------------------------------------------------------------------------------
# The API endpoint


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_search_api_answers_a_page_and_the_next(refund_chats, agent_alice):
    client = _client(agent_alice.user)

    first = client.get(SEARCH, {"q": "e", "limit": "1"}).json()
    second = client.get(SEARCH, {"q": "e", "limit": "1", "cursor": first["next_cursor"]}).json()

    assert [hit["snippet"] for hit in first["results"]] == ["nothing to see"]
    assert [hit["snippet"] for hit in second["results"]] == ["Please REFUND my order"]
    assert second["next_cursor"] is None
    hit = second["results"][0]
    assert set(hit) == {
        "id",
        "conversation",
        "seq",
        "sender",
        "created_at",
        "snippet",
        "archived",
        "conversation_status",
        "visitor",
    }
    assert hit["conversation"] == refund_chats[1].pk and hit["archived"] is False


NOTHING_ASKED = (
    "Give something to search for: text, a visitor, an agent, a label, dates or a status."
)
BAD_DATE = "The field '{}' must be a date written YYYY-MM-DD, e.g. 2026-03-31."


@pytest.mark.parametrize(
    "params, detail",
    [
        ({}, NOTHING_ASKED),
        ({"q": "   "}, NOTHING_ASKED),
        ({"q": "x" * 201}, "The search text is too long; use at most 200 characters."),
        ({"from": "2026-13-01"}, BAD_DATE.format("from")),
        ({"to": "yesterday"}, BAD_DATE.format("to")),
        (
            {"from": "2026-04-02", "to": "2026-04-01"},
            "The date 'from' is after the date 'to'; swap them.",
        ),
        ({"q": "a", "limit": "0"}, "The field 'limit' must be a number from 1 to 100."),
        ({"q": "a", "limit": "101"}, "The field 'limit' must be a number from 1 to 100."),
        ({"q": "a", "limit": "ten"}, "The field 'limit' must be a number from 1 to 100."),
        ({"agent": "bob"}, "The field 'agent' must be a user id (a number)."),
        ({"status": "closed"}, "Unknown status; use open, pending, snoozed or resolved."),
        (
            {"q": "a", "cursor": "not-a-cursor"},
            "The cursor is not valid; pass the next_cursor of the previous page unchanged.",
        ),
    ],
)
@pytest.mark.django_db
def test_search_api_refuses_bad_input_with_exact_sentences(agent_alice, params, detail):
    response = _client(agent_alice.user).get(SEARCH, params)
    assert response.status_code == 400
    assert response.json() == {"code": "invalid", "detail": detail}


@pytest.mark.django_db
def test_search_api_needs_a_logged_in_agent(refund_chats):
    response = Client().get(SEARCH, {"q": "refund"})
    assert response.status_code == 403
    assert response.json()["code"] == "unauthenticated"


@pytest.mark.django_db
def test_search_api_answers_in_chinese_when_asked(agent_alice):
    try:
        response = _client(agent_alice.user).get(SEARCH, {}, HTTP_ACCEPT_LANGUAGE="zh-hans")
    finally:
        # The locale middleware leaves Chinese active in this thread; later tests that raise
        # errors outside a request would otherwise speak it too.
        translation.deactivate()
    assert response.json()["detail"] == "请给出搜索条件：文字、访客、客服、标签、日期或状态。"


# ---------------------------------------------------------------------------------------------
# PostgreSQL: the trigram index is really used


@pytest.fixture
def postgresql(db):
    if connection.vendor != "postgresql":
        pytest.skip("Trigram indexes are PostgreSQL's; set DATABASE_URL to a PostgreSQL to run it.")


def test_search_query_uses_the_trigram_index(postgresql, site, agent_alice):
    # Given a site with some history, and statistics about it
    conversations = [_conversation(site, f"v{n}") for n in range(50)]
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            seq=seq,
            body=f"订单{n}什么时候发货？" if n % 50 else "我想申请退款谢谢",
            client_id=f"c{seq}",
            sender_kind="visitor",
        )
        for n, (conversation, seq) in enumerate((c, s) for s in range(1, 41) for c in conversations)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE chat_message, chat_conversation, chat_visitor")
        # On tables this small, reading whole tables or indexes is cheapest; forbid that, so
        # the plan shows whether the trigram index can serve the query at all
        # (docs/architecture.md shows the planner choosing it unaided at 200,000 messages).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
    criteria = search.SearchCriteria(text="申请退款")

    # When the search query is planned
    plan = search._matching(Message, agent_alice.user, criteria, None).explain()

    # Then it reads the partition's copy of chat_message_body_trgm, named after its expression
    current = partitions.partition_name(THIS_MONTH)
    assert f"Bitmap Index Scan on {current}_upper_idx" in plan, plan
    assert "Index Cond: (upper(body) ~~ '%申请退款%'::text)" in plan, plan


def test_new_partitions_get_the_trigram_index(postgresql):
    month = partitions.add_months(THIS_MONTH, 9)
    partitions.create_partition(connection, month)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = %s AND indexdef LIKE %s",
            [partitions.partition_name(month), "%gin_trgm_ops%"],
        )
        definitions = [row[0] for row in cursor.fetchall()]
    assert len(definitions) == 1 and "upper(body)" in definitions[0], definitions
