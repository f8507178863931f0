"""End to end in headless Chromium: the demo shop's widget and the agent dashboard.

A real server process (gofly_serve, daphne) runs on its own database: a fresh SQLite file, or a
fresh PostgreSQL database when DATABASE_URL is set; with REDIS_URL it uses the Redis layer.
The browser is Debian's /usr/bin/chromium driven by Playwright; no browser is downloaded.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from tests.conftest import IN_CI

CHROMIUM = os.environ.get("GOFLY_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "demo-" + secrets.token_hex(6)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _require_browser():
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing; install Debian's chromium package (.ci/run does)."
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    return sync_playwright


def _fresh_database_url(tmp: Path) -> tuple[str, str | None]:
    """A database for the server process alone; returns (url, postgres name to drop)."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        return f"sqlite:///{tmp / 'e2e.sqlite3'}", None
    import psycopg2

    name = "gofly_e2e_" + secrets.token_hex(4)
    admin = urlunparse(urlparse(base)._replace(path="/postgres"))
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return urlunparse(urlparse(base)._replace(path="/" + name)), name


def _drop_database(name: str) -> None:
    import psycopg2

    admin = urlunparse(urlparse(os.environ["DATABASE_URL"])._replace(path="/postgres"))
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


class ServerProcess:
    """A real gofly server (daphne) on its own database, which a test can stop and restart."""

    def __init__(self, tmp: Path, scheduler: bool = False) -> None:
        self.tmp = tmp
        self.scheduler = scheduler
        url, self.pg_name = _fresh_database_url(tmp)
        self.env = {
            **os.environ,
            "GOFLY_DATA_DIR": str(tmp),
            "DATABASE_URL": url,
            "GOFLY_DEMO_PASSWORD": PASSWORD,
        }
        self.manage = [sys.executable, str(ROOT / "manage.py")]
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        subprocess.run([*self.manage, "migrate", "-v0"], env=self.env, check=True, cwd=ROOT)
        subprocess.run(
            [*self.manage, "gofly_demo"],
            env=self.env,
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )

    def shell(self, code: str) -> str:
        """Run Python in `manage.py shell` against this server's database; return its output."""
        done = subprocess.run(
            [*self.manage, "shell", "--no-imports", "-c", code],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def start(self) -> None:
        log = open(self.tmp / "server.log", "a")
        options = [] if self.scheduler else ["--no-scheduler"]
        self.process = subprocess.Popen(
            [*self.manage, "gofly_serve", "--port", str(self.port), *options],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1)
                return
            except OSError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    output = (self.tmp / "server.log").read_text()[-2000:]
                    raise RuntimeError("server did not start: " + output) from exc
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def close(self) -> None:
        self.stop()
        if self.pg_name:
            _drop_database(self.pg_name)
        shutil.rmtree(self.tmp, ignore_errors=True)


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


def _demo_site_key(base: str) -> str:
    """The demo site's key, read from the demo page's embed snippet."""
    html = urllib.request.urlopen(base + "/demo/", timeout=10).read().decode()
    return html.split('data-site="', 1)[1].split('"', 1)[0]


def log_in(page, base: str, username: str = "demo") -> None:
    page.goto(base + "/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/dashboard/")


def test_visitor_and_agent_chat_end_to_end(server, browser):
    visitor = browser.new_context().new_page()
    agent = browser.new_context().new_page()

    # The visitor opens the shop and writes.
    visitor.goto(server + "/demo/")
    visitor.click(".gofly-launcher")
    visitor.fill(".gofly-input", "Hello, where is order 1234? <b>now</b>")
    visitor.press(".gofly-input", "Enter")
    sent = visitor.locator(".gofly-msg-visitor[data-seq='1']")
    sent.wait_for()
    assert sent.inner_text().count("<b>now</b>") == 1  # shown as text, not as markup

    # The agent sees it in the dashboard's waiting list and answers.
    log_in(agent, server)
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
        visitor.goto(server.base + "/demo/")
        visitor.click(".gofly-launcher")
        visitor.fill(".gofly-input", "first question")
        visitor.press(".gofly-input", "Enter")
        visitor.locator(".gofly-msg-visitor[data-seq='1']").wait_for()
        log_in(agent, server.base)
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
    visitor.goto(server + "/demo/?site=" + _demo_site_key(server))
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
    assert page.locator("#thread-title").inner_text() == "李雷"
    # Back to the lists, where the resolved conversation does not belong
    page.click("#search-clear")
    page.locator(".tabs").wait_for()
    assert page.locator("#conversation-list .conv-item", has_text="李雷").count() == 0


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
        ann.locator(".conv-item", has_text="visitor 0").wait_for()
        ben.locator(".conv-item", has_text="visitor 1").wait_for()
        # Both are full: the third waits and sees where it stands.
        queue = visitors[2].locator(".gofly-queue")
        queue.wait_for()
        assert queue.inner_text() == "You are number 1 in line. An agent will be with you shortly."
        assert ann.locator(".conv-item").count() == 1 and ben.locator(".conv-item").count() == 1

        # Ann resolves hers: the slot frees and the waiting visitor is hers at once.
        ann.locator(".conv-item", has_text="visitor 0").click()
        ann.click("#resolve")
        ann.locator(".conv-item", has_text="visitor 2").wait_for()
        queue.wait_for(state="hidden")

        # Ann hands it to Ben with a note: it leaves her list and appears in his, live.
        ann.locator(".conv-item", has_text="visitor 2").click()
        ann.select_option("#transfer-to", label="Ben · Online")
        ann.fill("#transfer-note", "asks about a refund")
        ann.click("#transfer button[type=submit]")
        ann.locator(".conv-item", has_text="visitor 2").wait_for(state="detached")
        ben.locator(".conv-item", has_text="visitor 2").click()
        ben.locator("#notes .note", has_text="Transferred to Ben. asks about a refund").wait_for()
        ben.fill("#composer-input", "Ben here, about your refund")
        ben.press("#composer-input", "Enter")
        visitors[2].locator(".gofly-msg-agent", has_text="Ben here").wait_for()
        assert visitors[2].locator(".gofly-msg", has_text="refund").count() == 1  # no note
    finally:
        server.close()
