"""End to end in headless Chromium: the demo shop's widget and the agent dashboard.

A real server process (gofly_serve, daphne) runs on its own database: a fresh SQLite file, or a
fresh PostgreSQL database when DATABASE_URL is set; with REDIS_URL it uses the Redis layer.
The browser is Debian's /usr/bin/chromium driven by Playwright; no browser is downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.conftest import IN_CI, require_postgres
from tests.processes import PASSWORD, ServerProcess, TcpProxy, demo_site_key

CHROMIUM = os.environ.get("GOFLY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _require_browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing; install Debian's chromium package (.ci/run does)."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    return sync_playwright


@pytest.fixture(scope="module")
def server_process(tmp_path_factory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("e2e"))
    try:
        process.start()
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def server(server_process) -> str:
    return server_process.base


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def log_in(page, base: str, username: str = "demo") -> None:
    page.goto(base + "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/dashboard/")
    # The socket is up and the server has taken the agent's presence (online, for an agent
    # who was offline): from here on routing and the widget's availability count them.
    page.locator("#my-status[data-status]:not([data-status=''])").wait_for(state="attached")


def test_visitor_and_agent_chat_end_to_end(server, browser):
    visitor = browser.new_context().new_page()
    agent = browser.new_context().new_page()

    # An agent is online (with nobody online the widget offers a form instead of live chat).
    log_in(agent, server)

    # The visitor opens the shop and writes.
    visitor.goto(server + "/demo/")
    visitor.click(".gofly-launcher")
    visitor.fill(".gofly-input", "Hello, where is order 1234? <b>now</b>")
    visitor.press(".gofly-input", "Enter")
    sent = visitor.locator(".gofly-msg-visitor[data-seq='1']")
    sent.wait_for()
    assert sent.inner_text().count("<b>now</b>") == 1  # shown as text, not as markup

    # Routing hands the conversation to the agent at once: it shows under Mine.
    item = agent.locator(".conv-item").first
    item.wait_for()
    assert "order 1234" in item.inner_text()
    item.click()
    agent.locator(".msg-visitor[data-seq='1']").wait_for()
    agent.fill("#composer-input", "It left the warehouse today.")
    agent.press("#composer-input", "Enter")
    agent.locator(".msg-agent[data-seq='2']").wait_for()

    # The reply appears in the widget without a refresh.
    reply = visitor.locator(".gofly-msg-agent[data-seq='2']")
    reply.wait_for()
    assert "It left the warehouse today." in reply.inner_text()

    # A second tab of the same agent is live too, and sees what the first one sent.
    second_tab = agent.context.new_page()
    second_tab.goto(server + "/dashboard/")
    second_tab.click("[data-view=mine]")  # answered, so no longer waiting
    second_tab.locator(".conv-item").first.click()
    second_tab.locator(".msg-agent[data-seq='2']").wait_for()
    visitor.fill(".gofly-input", "Thanks!")
    visitor.press(".gofly-input", "Enter")
    for page in (agent, second_tab):
        page.locator(".msg-visitor[data-seq='3']").wait_for()

    # After a reload the widget shows the whole history again.
    visitor.reload()
    visitor.click(".gofly-launcher")
    visitor.locator(".gofly-msg-visitor[data-seq='3']").wait_for()
    assert visitor.locator(".gofly-msg[data-seq]").count() == 3
    assert "order 1234" in visitor.locator(".gofly-msg[data-seq='1']").inner_text()


def test_dashboard_speaks_chinese(server, browser):
    context = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"})
    page = context.new_page()
    page.goto(server + "/accounts/login/")
    assert page.locator("h1").inner_text() == "客服登录"
    log_in(page, server)
    assert page.locator("[data-view=waiting]").inner_text().startswith("等待中")


def test_widget_and_dashboard_catch_up_after_a_server_restart(tmp_path_factory, browser):
    server = ServerProcess(tmp_path_factory.mktemp("restart"))
    try:
        server.start()
        visitor = browser.new_context().new_page()
        agent = browser.new_context().new_page()
        log_in(agent, server.base)
        visitor.goto(server.base + "/demo/")
        visitor.click(".gofly-launcher")
        visitor.fill(".gofly-input", "first question")
        visitor.press(".gofly-input", "Enter")
        visitor.locator(".gofly-msg-visitor[data-seq='1']").wait_for()
        agent.locator(".conv-item").first.click()
        agent.locator(".msg-visitor[data-seq='1']").wait_for()

        server.stop()
        visitor.locator(".gofly-status").filter(has_text="Reconnecting").wait_for()
        # Written while the server is down: kept by the widget, not lost.
        visitor.fill(".gofly-input", "sent while you were away")
        visitor.press(".gofly-input", "Enter")
        assert visitor.locator(".gofly-msg[data-seq='2']").count() == 0

        server.start()
        # No page refresh on either side: both reconnect, resend and resume by themselves.
        visitor.locator(".gofly-msg-visitor[data-seq='2']").wait_for(timeout=30000)
        agent.locator(".msg-visitor[data-seq='2']").wait_for(timeout=30000)
        assert "sent while you were away" in agent.locator(".msg[data-seq='2']").inner_text()
        agent.fill("#composer-input", "back again")
        agent.press("#composer-input", "Enter")
        visitor.locator(".gofly-msg-agent[data-seq='3']").wait_for()
        assert visitor.locator(".gofly-msg[data-seq]").count() == 3
    finally:
        server.close()


def _drop_first(page, pattern: str, body: str) -> None:
    """Relay a page's socket to the server, losing the first live frame with this body."""
    dropped: list[str] = []

    def handler(route) -> None:
        server = route.connect_to_server()

        def from_server(message) -> None:
            if not dropped and json.loads(message).get("body") == body:
                dropped.append(message)
                return
            route.send(message)

        server.on_message(from_server)
        route.on_message(lambda message: server.send(message))

    page.route_web_socket(pattern, handler)


def test_lost_live_frames_are_fetched_when_a_hole_shows(server, browser):
    visitor = browser.new_context().new_page()
    agent = browser.new_context().new_page()
    _drop_first(visitor, "**/ws/visitor/**", "lost for the visitor")
    _drop_first(agent, "**/ws/agent/**", "lost for the agent")
    visitor.goto(server + "/demo/?site=" + demo_site_key(server))
    visitor.click(".gofly-launcher")
    visitor.fill(".gofly-input", "hello")
    visitor.press(".gofly-input", "Enter")
    visitor.locator(".gofly-msg-visitor[data-seq='1']").wait_for()
    log_in(agent, server)
    agent.locator(".conv-item", has_text="hello").first.click()
    agent.locator(".msg-visitor[data-seq='1']").wait_for()

    # The agent's reply never reaches the widget live; the next ack shows the hole.
    agent.fill("#composer-input", "lost for the visitor")
    agent.press("#composer-input", "Enter")
    agent.locator(".msg-agent[data-seq='2']").wait_for()
    visitor.fill(".gofly-input", "lost for the agent")
    visitor.press(".gofly-input", "Enter")
    visitor.locator(".gofly-msg-agent[data-seq='2']").wait_for()

    # The visitor's message never reaches the dashboard live; the next one shows the hole.
    visitor.fill(".gofly-input", "are you there?")
    visitor.press(".gofly-input", "Enter")
    agent.locator(".msg-visitor[data-seq='4']").wait_for()
    assert "lost for the agent" in agent.locator(".msg[data-seq='3']").inner_text()


def test_dashboards_show_the_team_s_status_live(server_process, browser):
    server = server_process.base
    server_process.shell(
        "from django.contrib.auth import get_user_model; from agents.models import Agent; "
        "from chat.models import Site; "
        f"u = get_user_model().objects.create_user('bob', password='{PASSWORD}'); "
        "a = Agent.objects.create(user=u, display_name='Bob'); a.sites.add(*Site.objects.all())"
    )
    demo = browser.new_context().new_page()
    log_in(demo, server)
    assert demo.locator("#my-status").input_value() == "online"
    demo.locator("#team li[data-status=offline]", has_text="Bob").wait_for()

    bob = browser.new_context().new_page()
    log_in(bob, server, "bob")
    demo.locator("#team li[data-status=online]", has_text="Bob").wait_for()
    bob.select_option("#my-status", "busy")
    demo.locator("#team li[data-status=busy]", has_text="Bob").wait_for()
    bob.locator("#team li[data-status=busy]", has_text="Bob").wait_for()
    assert "Busy" in demo.locator("#team li", has_text="Bob").inner_text()

    events = server_process.shell(
        "from agents.models import AgentStatusEvent as E; "
        "print(list(E.objects.filter(agent__user__username='bob')"
        ".order_by('id').values_list('to_status', 'trigger')))"
    )
    assert events.strip() == "[('online', 'connected'), ('busy', 'chosen')]"


def test_search_finds_a_chinese_refund_and_opens_its_conversation(server_process, browser):
    # Given a resolved conversation (so in none of the lists) that mentions a refund
    conversation_id = server_process.shell(
        "from chat.models import Conversation, Message, Site, Visitor\n"
        "site = Site.objects.first()\n"
        "v = Visitor.objects.create(site=site, name='李雷')\n"
        "c = Conversation.objects.create(site=site, visitor=v, status='resolved', last_seq=2)\n"
        "for seq, body in ((1, '我想申请退款谢谢'), (2, '订单号 8812')):\n"
        "    Message.objects.create(conversation=c, seq=seq, sender_kind='visitor',"
        " body=body, client_id=f'search-{seq}')\n"
        "print(c.pk)"
    ).strip()
    page = browser.new_context().new_page()
    log_in(page, server_process.base)

    # When the agent searches for the two characters 退款
    page.fill("#search-input", "退款")
    page.press("#search-input", "Enter")

    # Then the hit shows with the match marked, and clicking it opens the whole thread
    hit = page.locator(f".search-hit[data-conversation='{conversation_id}']")
    hit.wait_for()
    assert hit.locator("mark").inner_text() == "退款"
    assert "李雷" in hit.inner_text()
    hit.click()
    page.locator(".msg-visitor[data-seq='2']", has_text="订单号 8812").wait_for()
    assert "我想申请退款谢谢" in page.locator(".msg-visitor[data-seq='1']").inner_text()
    # The summary comes over HTTP, separately from the messages: wait for it too.
    page.locator("#thread-title", has_text="李雷").wait_for()
    assert page.locator("#thread-title").inner_text() == "李雷"
    # Back to the lists, where the resolved conversation does not belong
    page.click("#search-clear")
    page.locator(".tabs").wait_for()
    assert page.locator("#conversation-list .conv-item", has_text="李雷").count() == 0

    # Filters alone, with no text: resolved conversations of this visitor
    page.click("#search-filters summary")
    page.fill("#search-filters input[name=visitor]", "李雷")
    page.select_option("#search-filters select[name=status]", "resolved")
    page.click("#search-filters button[type=submit]")
    page.locator(".search-hit", has_text="订单号 8812").wait_for()
    assert page.locator("#search-summary").inner_text() == "Messages matching the filters"
    assert page.locator(f".search-hit[data-conversation='{conversation_id}']").count() == 2


def test_routing_shares_visitors_queues_the_third_and_transfers_live(tmp_path_factory, browser):
    server = ServerProcess(tmp_path_factory.mktemp("routing"))
    try:
        server.start()
        server.shell(
            "from django.contrib.auth import get_user_model; from agents.models import Agent; "
            "from chat.models import Site\n"
            "for name in ('ann', 'ben'):\n"
            f"    u = get_user_model().objects.create_user(name, password='{PASSWORD}')\n"
            "    a = Agent.objects.create(user=u, display_name=name.title(), "
            "max_concurrent_chats=1)\n"
            "    a.sites.add(*Site.objects.all())"
        )
        ann, ben = browser.new_context().new_page(), browser.new_context().new_page()
        log_in(ann, server.base, "ann")
        log_in(ben, server.base, "ben")
        ann.locator("#team li[data-status=online]", has_text="Ben").wait_for()
        for page in (ann, ben):
            page.click("[data-view=mine]")

        visitors = []
        for n in range(3):
            page = browser.new_context().new_page()
            page.goto(server.base + "/demo/")
            page.click(".gofly-launcher")
            page.fill(".gofly-input", f"question from visitor {n}")
            page.press(".gofly-input", "Enter")
            page.locator(".gofly-msg-visitor[data-seq='1']").wait_for()
            visitors.append(page)

        # One each: Ann has been online longest, so the first is hers, the second Ben's.
        ann.locator(".conv-item", has_text="question from visitor 0").wait_for()
        ben.locator(".conv-item", has_text="question from visitor 1").wait_for()
        # Both are full: the third waits and sees where it stands.
        queue = visitors[2].locator(".gofly-queue")
        queue.wait_for()
        assert queue.inner_text() == "You are number 1 in line. An agent will be with you shortly."
        assert ann.locator(".conv-item").count() == 1 and ben.locator(".conv-item").count() == 1

        # Ann resolves hers: the slot frees and the waiting visitor is hers at once.
        ann.locator(".conv-item", has_text="question from visitor 0").click()
        ann.click("#resolve")
        ann.locator(".conv-item", has_text="question from visitor 2").wait_for()
        queue.wait_for(state="hidden")

        # Ann hands it to Ben with a note: it leaves her list and appears in his, live.
        ann.locator(".conv-item", has_text="question from visitor 2").click()
        ann.select_option("#transfer-to", label="Ben · Online")
        ann.fill("#transfer-note", "asks about a refund")
        ann.click("#transfer button[type=submit]")
        ann.locator(".conv-item", has_text="question from visitor 2").wait_for(state="detached")
        ben.locator(".conv-item", has_text="question from visitor 2").click()
        ben.locator("#notes .note", has_text="Transferred to Ben. asks about a refund").wait_for()
        ben.fill("#composer-input", "Ben here, about your refund")
        ben.press("#composer-input", "Enter")
        visitors[2].locator(".gofly-msg-agent", has_text="Ben here").wait_for()
        assert visitors[2].locator(".gofly-msg", has_text="refund").count() == 1  # no note
    finally:
        server.close()


def test_the_visitor_rates_a_resolved_conversation(tmp_path_factory, browser):
    server = ServerProcess(tmp_path_factory.mktemp("rating"))
    try:
        server.start()
        agent = browser.new_context().new_page()
        log_in(agent, server.base)
        visitor = browser.new_context().new_page()
        visitor.goto(server.base + "/demo/")
        visitor.click(".gofly-launcher")
        visitor.fill(".gofly-input", "where is my parcel")
        visitor.press(".gofly-input", "Enter")
        agent.click("[data-view=mine]")
        agent.locator(".conv-item", has_text="where is my parcel").click()
        agent.click("#resolve")

        rating = visitor.locator(".gofly-rating")
        rating.wait_for()
        assert rating.locator(".gofly-rating-title").inner_text() == "How did we do?"
        visitor.click(".gofly-star[data-score='4']")
        visitor.fill(".gofly-rating-comment", "quick and kind")
        visitor.click(".gofly-rating-send")
        visitor.locator(".gofly-rating-thanks", has_text="Thank you").wait_for()

        stored = server.shell(
            "from chat.models import Conversation as C; "
            "print(list(C.objects.values_list('rating', 'rating_comment')))"
        )
        assert stored.strip() == "[(4, 'quick and kind')]"
    finally:
        server.close()


def test_widget_and_dashboard_resend_what_the_database_refused(tmp_path_factory, browser):
    require_postgres(
        "DATABASE_URL is not set to PostgreSQL; the outage needs a database server to cut "
        "off (the embedded SQLite is a local file)."
    )
    server = ServerProcess(tmp_path_factory.mktemp("outage-e2e"))
    target = urlparse(server.database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    server.env["DATABASE_URL"] = proxy.url_for(server.database_url)
    sockets: list[str] = []
    refusals: list[str] = []

    def watch(socket) -> None:
        sockets.append(socket.url)

        def received(payload) -> None:
            frame = json.loads(payload)
            if frame.get("type") == "error" and frame.get("code") == "unavailable":
                refusals.append(socket.url)

        socket.on("framereceived", received)

    try:
        proxy.start()
        server.start()
        visitor = browser.new_context().new_page()
        agent = browser.new_context().new_page()
        for page in (visitor, agent):
            page.on("websocket", watch)
        log_in(agent, server.base)
        visitor.goto(server.base + "/demo/")
        visitor.click(".gofly-launcher")
        visitor.fill(".gofly-input", "first question")
        visitor.press(".gofly-input", "Enter")
        visitor.locator(".gofly-msg-visitor[data-seq='1']").wait_for()
        agent.locator(".conv-item").first.click()
        agent.locator(".msg-visitor[data-seq='1']").wait_for()

        # When: the database is unreachable while both write; each gets `unavailable`.
        proxy.cut()
        visitor.fill(".gofly-input", "written while the database was away")
        visitor.press(".gofly-input", "Enter")
        agent.fill("#composer-input", "answered while the database was away")
        agent.press("#composer-input", "Enter")
        visitor.locator(".gofly-note", has_text="Not sent, retrying").wait_for()
        for _ in range(100):  # at most 10 s for the dashboard's refusal
            if any("/ws/agent/" in url for url in refusals):
                break
            agent.wait_for_timeout(100)
        assert {url.split("/ws/")[1][:5] for url in refusals} == {"visit", "agent"}, refusals
        proxy.restore()

        # Then: with no click, no reload and no reconnect, both messages are stored and shown.
        visitor_line = "written while the database was away"
        agent_line = "answered while the database was away"
        visitor.locator(".gofly-msg-visitor[data-seq]", has_text=visitor_line).wait_for()
        visitor.locator(".gofly-msg-agent[data-seq]", has_text=agent_line).wait_for()
        agent.locator(".msg-visitor[data-seq]", has_text=visitor_line).wait_for()
        agent.locator(".msg-agent[data-seq]", has_text=agent_line).wait_for()
        assert len(sockets) == 2, sockets
        assert visitor.locator(".gofly-msg[data-seq]").count() == 3
        assert agent.locator(".msg[data-seq]").count() == 3
        assert _stored_bodies(server.database_url) == {
            "first question": 1,
            visitor_line: 1,
            agent_line: 1,
        }
    finally:
        server.close()
        proxy.close()


def _stored_bodies(url: str) -> dict[str, int]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT body, count(*) FROM chat_message GROUP BY body")
            return dict(cursor.fetchall())
    finally:
        conn.close()


def test_agent_picks_a_canned_reply_with_the_visitor_s_name(server_process, browser):
    server = server_process.base
    server_process.shell(
        "from agents.models import CannedReply\n"
        "CannedReply.objects.create(shortcut='refund', title='Refund on its way', "
        "body='Hi {{ visitor.name }}, your refund is on its way. {{ settings.SECRET_KEY }}')\n"
        "CannedReply.objects.create(shortcut='hello', title='Greeting', body='Hello!')"
    )
    visitor = browser.new_context().new_page()
    visitor.goto(server + "/demo/")
    visitor.click(".gofly-launcher")
    visitor.fill(".gofly-input", "where is my refund?")
    visitor.press(".gofly-input", "Enter")
    visitor.locator(".gofly-msg-visitor[data-seq='1']").wait_for()
    server_process.shell(
        "from chat.models import Conversation\n"
        "c = Conversation.objects.get(last_message_preview='where is my refund?')\n"
        "c.visitor.name = 'Mia'\n"
        "c.visitor.save()"
    )

    agent = browser.new_context().new_page()
    log_in(agent, server)
    agent.click("[data-view=open]")  # another test's agent may already have it
    agent.locator(".conv-item", has_text="where is my refund?").click()
    agent.locator(".msg-visitor[data-seq='1']").wait_for()
    composer = agent.locator("#composer-input")

    # "/" alone offers every reply; the arrows move, Escape closes without touching the text.
    composer.press_sequentially("/")
    items = agent.locator("#canned-list .canned-item")
    items.nth(1).wait_for()
    shortcuts = [item.get_attribute("data-shortcut") for item in items.all()]
    assert shortcuts == ["hello", "refund"]
    assert "Refund on its way" in items.nth(1).inner_text()
    composer.press("ArrowDown")
    assert agent.locator("#canned-list .active").get_attribute("data-shortcut") == "refund"
    composer.press("Escape")
    agent.locator("#canned-list").wait_for(state="hidden")
    assert composer.input_value() == "/"

    # "/ref" narrows to one; Enter picks it instead of sending, and the server fills the name.
    composer.press_sequentially("ref")
    agent.locator("#canned-list .canned-item[data-shortcut=refund]").wait_for()
    assert items.count() == 1
    composer.press("Enter")
    text = "Hi Mia, your refund is on its way. {{ settings.SECRET_KEY }}"
    agent.wait_for_function(
        "text => document.getElementById('composer-input').value === text", arg=text
    )
    assert agent.locator(".msg-agent").count() == 0  # picking did not send

    # With the list closed, Enter sends as always, and the visitor gets the rendered text.
    composer.press("Enter")
    agent.locator(".msg-agent[data-seq='2']").wait_for()
    reply = visitor.locator(".gofly-msg-agent[data-seq='2']")
    reply.wait_for()
    assert text in reply.inner_text()

    # A personal reply saved from the sidebar is offered at once.
    agent.fill("#canned-shortcut", "thanks")
    agent.fill("#canned-title", "Thank the visitor")
    agent.fill("#canned-body", "Thanks, {{ visitor.name }}!")
    agent.click("#canned-form button[type=submit]")
    agent.locator("#canned-result", has_text="/thanks").wait_for()
    composer.press_sequentially("/than")
    agent.locator("#canned-list .canned-item[data-shortcut=thanks]").wait_for()
    composer.press("Tab")
    agent.wait_for_function(
        "() => document.getElementById('composer-input').value === 'Thanks, Mia!'"
    )


def test_visitor_leaves_a_message_while_nobody_is_online_and_the_agent_gets_it(
    tmp_path_factory, browser
):
    # A server of its own: no agent has opened a dashboard there, so nobody is online.
    server = ServerProcess(tmp_path_factory.mktemp("leave"))
    try:
        server.start()
        visitor = browser.new_context().new_page()
        visitor.goto(server.base + "/demo/")
        visitor.click(".gofly-launcher")

        # The form replaces the composer and says why.
        intro = visitor.locator(".gofly-leave-intro")
        intro.wait_for()
        assert intro.inner_text() == (
            "Nobody is online right now. Leave a message and we will get back to you."
        )
        assert visitor.locator(".gofly-composer").is_hidden()

        # A bad email gets the server's sentence; once fixed, the message is left.
        visitor.fill(".gofly-field[type=text]", "Mei")
        visitor.fill(".gofly-field[type=email]", "mei@")
        visitor.fill("textarea.gofly-field", "Do you ship to Lyon?")
        visitor.click(".gofly-leave button[type=submit]")
        error = visitor.locator(".gofly-leave-error")
        error.wait_for()
        assert error.inner_text() == "Write a valid email address, so that we can answer you."
        visitor.fill(".gofly-field[type=email]", "mei@example.com")
        visitor.click(".gofly-leave button[type=submit]")
        visitor.locator(".gofly-leave-intro", has_text="Thank you!").wait_for()
        # It is in the visitor's history like any message.
        visitor.locator(".gofly-msg-visitor[data-seq='1']", has_text="Lyon").wait_for()

        # The agent comes online: the waiting conversation is assigned to them at once.
        agent = browser.new_context().new_page()
        log_in(agent, server.base)
        agent.click("[data-view=mine]")
        item = agent.locator(".conv-item", has_text="Lyon")
        item.wait_for()
        assert "Mei" in item.inner_text()
        item.click()
        agent.locator(".msg-visitor[data-seq='1']", has_text="Do you ship to Lyon?").wait_for()

        # The agent blocks the visitor: the widget says so at once and stays refused on reload.
        agent.once("dialog", lambda dialog: dialog.accept())
        agent.click("#block")
        agent.locator("#block-done").wait_for()
        refusal = "This chat is not available to you."
        visitor.locator(".gofly-status", has_text=refusal).wait_for()
        assert visitor.locator(".gofly-leave").is_hidden()
        visitor.reload()
        visitor.click(".gofly-launcher")
        visitor.locator(".gofly-status", has_text=refusal).wait_for()
    finally:
        server.close()
