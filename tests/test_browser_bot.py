"""End to end in headless Chromium: the demo site's starter bot answers in the widget, and a
visitor who asks for a person reaches the agent's dashboard with the whole transcript."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processes import ServerProcess
from tests.test_browser import browser, log_in  # noqa: F401 (the browser fixture)

OPENING_HOURS = "We're open Monday to Friday 9:00-18:00 and Saturday 10:00-16:00"
OPENING_HOURS_ZH = "我们的营业时间是周一至周五 9:00-18:00"


@pytest.fixture(scope="module")
def bot_server(tmp_path_factory) -> Iterator[str]:
    # The demo as `make run` makes it: the starter bot loaded and trained.
    process = ServerProcess(tmp_path_factory.mktemp("e2e-bot"), bot=True)
    try:
        process.start()
        yield process.base
    finally:
        process.close()


def test_the_bot_answers_and_hands_over_to_an_agent_with_the_transcript(bot_server, browser):  # noqa: F811
    agent = browser.new_context().new_page()
    log_in(agent, bot_server)
    visitor = browser.new_context().new_page()
    visitor.goto(bot_server + "/demo/")
    visitor.click(".gofly-launcher")

    # A question the starter bot knows gets its answer at once, from the bot.
    visitor.fill(".gofly-input", "What are your opening hours?")
    visitor.press(".gofly-input", "Enter")
    answer = visitor.locator(".gofly-msg-bot[data-seq='2']")
    answer.wait_for()
    assert OPENING_HOURS in answer.inner_text()
    assert answer.locator(".gofly-name").inner_text() == "Bot"

    # The agent sees the conversation live, marked as the bot's, not waiting for anyone.
    agent.click("[data-view=open]")
    item = agent.locator(".conv-item").first
    item.wait_for()
    assert agent.locator(".conv-item .bot-badge").inner_text() == "Bot"
    assert agent.locator('[data-count="waiting"]').inner_text() == "0"

    # Asking for a person hands over: the bot says so and the agent gets the conversation.
    visitor.fill(".gofly-input", "I want to talk to a human")
    visitor.press(".gofly-input", "Enter")
    handed = visitor.locator(".gofly-msg-bot[data-seq='4']")
    handed.wait_for()
    assert "passing you to a colleague" in handed.inner_text()
    agent.click("[data-view=mine]")
    agent.locator(".conv-item").first.click()
    # The transcript: both questions and both bot replies, and the bot's private note.
    agent.locator(".msg-bot[data-seq='4']").wait_for()
    thread = [agent.locator(f"#messages [data-seq='{seq}']").inner_text() for seq in (1, 2, 3)]
    assert "What are your opening hours?" in thread[0]
    assert OPENING_HOURS in thread[1]
    assert "I want to talk to a human" in thread[2]
    note = agent.locator("#notes .note").first
    note.wait_for()
    assert note.inner_text().startswith("Bot handed over: the visitor asked for a person.")
    assert agent.locator(".conv-item .bot-badge").count() == 0

    # The agent answers; the bot stays silent from here on.
    agent.fill("#composer-input", "Hi, I am Demo. How can I help?")
    agent.press("#composer-input", "Enter")
    visitor.locator(".gofly-msg-agent[data-seq='5']").wait_for()
    visitor.fill(".gofly-input", "What are your opening hours?")
    visitor.press(".gofly-input", "Enter")
    agent.locator(".msg-visitor[data-seq='6']").wait_for()
    visitor.wait_for_timeout(1000)
    assert visitor.locator(".gofly-msg-bot").count() == 2


def test_the_bot_answers_chinese_in_chinese(bot_server, browser):  # noqa: F811
    context = browser.new_context(locale="zh-CN", extra_http_headers={"Accept-Language": "zh-CN"})
    visitor = context.new_page()
    visitor.goto(bot_server + "/demo/")
    visitor.click(".gofly-launcher")
    visitor.fill(".gofly-input", "你们几点开门？")
    visitor.press(".gofly-input", "Enter")
    answer = visitor.locator(".gofly-msg-bot[data-seq='2']")
    answer.wait_for()
    assert OPENING_HOURS_ZH in answer.inner_text()
    assert answer.locator(".gofly-name").inner_text() == "智能客服"
