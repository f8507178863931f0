"""Socket clients for fault tests that keep the promises widget.js and dashboard.js keep.

Like the real clients they hold every message until its ack and send it again, with the same
`client_id`, after an `unavailable` or `rate_limited` error (on a doubling timer) and after every
reconnect; they resume each conversation from the last seq up to which they hold everything,
fetch what a hole in `seq` shows is missing, and drop frames whose seq they already hold.
They also count what they saw, so a test can tell lost from doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import urllib.request
from collections import Counter
from typing import Any

import websockets

# As widget.js: the first resend after an error waits 2 s, doubling up to 30 s.
FLUSH_FIRST_SECONDS = 2.0
FLUSH_MAX_SECONDS = 30.0
# Reconnects back off from 0.1 s doubling to 2 s, with jitter; a test ends long before the cap.
RECONNECT_ATTEMPTS = 200
RETRYABLE = {"unavailable", "rate_limited"}


class ChatClient:
    """One visitor or agent: its outbox of unacked messages and what it has shown, by seq.

    `bases` are the servers' http://host:port addresses; a reconnect tries the one that worked
    last, then the next, as a load balancer would steer around a dead process.
    """

    def __init__(self, name: str, bases: list[str]) -> None:
        self.name = name
        self.bases = bases
        self.base_index = 0
        self.socket: Any = None
        self.connected = asyncio.Event()
        self.pending: dict[str, dict[str, Any]] = {}  # the outbox: client_id -> frame
        self.sent: list[str] = []
        self.transmitted: set[str] = set()  # client_ids written to some socket at least once
        self.acks: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self.held: dict[int, dict[int, str]] = {}  # conversation -> seq -> client_id
        self.up_to: dict[int, int] = {}  # conversation -> every seq up to this one is held
        self.shown: list[str] = []  # client_ids in the order they appeared on screen
        self.repeats_dropped = 0
        self.resent = 0
        self.connects = 0
        self.resuming: set[int] = set()
        self._flush_task: asyncio.Task | None = None
        self._flush_delay = FLUSH_FIRST_SECONDS

    # Connection ---------------------------------------------------------------------------

    def url(self, base: str) -> str:
        raise NotImplementedError

    def headers(self, base: str) -> dict[str, str]:
        return {}

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until `stop`, reconnecting with backoff; bounded in attempts."""
        failures = 0
        for _ in range(RECONNECT_ATTEMPTS):
            if stop.is_set():
                return
            base = self.bases[self.base_index % len(self.bases)]
            try:
                async with websockets.connect(
                    self.url(base), additional_headers=self.headers(base), open_timeout=5
                ) as socket:
                    failures = 0
                    await self._session(socket, base, stop)
            except (OSError, TimeoutError, websockets.WebSocketException):
                self.base_index += 1
            self.socket = None
            self.connected.clear()
            self.resuming.clear()
            if stop.is_set():
                return
            failures += 1
            cap = min(2.0, 0.1 * 2**failures)
            await asyncio.sleep(cap / 2 + random.random() * cap / 2)
        raise AssertionError(f"{self.name} gave up after {RECONNECT_ATTEMPTS} connects")

    async def _session(self, socket: Any, base: str, stop: asyncio.Event) -> None:
        ready = json.loads(await asyncio.wait_for(socket.recv(), 10))
        if ready["type"] != "ready":
            raise AssertionError(f"{self.name}: expected ready, got {ready}")
        self.socket = socket
        self.connects += 1
        await self.on_ready(ready, base)
        self.connected.set()
        await self.flush()
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(socket.recv(), 0.5)
            except TimeoutError:
                continue
            await self.on_frame(json.loads(text))

    async def send(self, frame: dict[str, Any]) -> bool:
        if self.socket is None:
            return False
        try:
            await self.socket.send(json.dumps(frame))
        except websockets.ConnectionClosed:
            return False  # the reconnect sends the outbox again
        return True

    # Outgoing -----------------------------------------------------------------------------

    async def submit(self, body: str, **fields: Any) -> str:
        """Put a message in the outbox and send it if connected, as pressing Enter does."""
        client_id = f"{self.name}-{len(self.sent)}"
        frame = {"type": "message", "client_id": client_id, "body": body, **fields}
        self.pending[client_id] = frame
        self.sent.append(client_id)
        await self.send_message(client_id, frame)
        return client_id

    async def flush(self) -> None:
        """Send every unacked message again; the server stores a known client_id only once."""
        for client_id, frame in list(self.pending.items()):
            await self.send_message(client_id, frame)

    async def send_message(self, client_id: str, frame: dict[str, Any]) -> None:
        if await self.send(frame):
            self.resent += client_id in self.transmitted
            self.transmitted.add(client_id)

    def _schedule_flush(self) -> None:
        if self._flush_task is not None and not self._flush_task.done():
            return
        delay = self._flush_delay
        self._flush_delay = min(self._flush_delay * 2, FLUSH_MAX_SECONDS)

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.flush()

        self._flush_task = asyncio.create_task(later())

    async def close(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task

    # Incoming -----------------------------------------------------------------------------

    async def on_ready(self, frame: dict[str, Any], base: str) -> None:
        raise NotImplementedError

    async def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        if kind == "message":
            await self.on_message(frame)
        elif kind == "ack":
            await self.on_ack(frame)
        elif kind == "error":
            self.on_error(frame)
        elif kind == "resumed":
            self.resuming.discard(frame["conversation"])

    def hold(self, conversation: int, seq: int, client_id: str) -> bool:
        """Keep a message once; False when its seq is already held (a repeat, dropped)."""
        held = self.held.setdefault(conversation, {})
        if seq in held:
            self.repeats_dropped += 1
            return False
        held[seq] = client_id
        self.shown.append(client_id)
        up_to = self.up_to.get(conversation, 0)
        while up_to + 1 in held:
            up_to += 1
        self.up_to[conversation] = up_to
        return True

    async def resume(self, conversation: int) -> None:
        if conversation in self.resuming:
            return
        after = self.up_to.get(conversation, 0)
        frame = {"type": "resume", "conversation": conversation, "after_seq": after}
        if await self.send(frame):
            self.resuming.add(conversation)

    async def on_message(self, frame: dict[str, Any]) -> None:
        conversation = frame["conversation"]
        self.hold(conversation, frame["seq"], frame["client_id"])
        # Seqs have no gaps: a hole means a live frame was lost, so fetch what is missing.
        if self.up_to.get(conversation, 0) < frame["seq"]:
            await self.resume(conversation)

    async def on_ack(self, frame: dict[str, Any]) -> None:
        self.acks.append(frame)
        self._flush_delay = FLUSH_FIRST_SECONDS
        self.pending.pop(frame["client_id"], None)

    def on_error(self, frame: dict[str, Any]) -> None:
        self.errors.append(frame)
        if frame.get("client_id") in self.pending and frame["code"] in RETRYABLE:
            self._schedule_flush()

    # Counts -------------------------------------------------------------------------------

    def acked(self) -> set[str]:
        return {ack["client_id"] for ack in self.acks}

    def shown_twice(self) -> list[str]:
        """client_ids on screen more than once: one message stored under two seqs."""
        return sorted(cid for cid, count in Counter(self.shown).items() if count > 1)

    def holds_all(self, last_seq: dict[int, int]) -> bool:
        return all(self.up_to.get(conv, 0) >= seq for conv, seq in last_seq.items())


class VisitorClient(ChatClient):
    """A widget: one visitor's socket, by token, on whichever server answers."""

    def __init__(self, name: str, bases: list[str], site: str) -> None:
        super().__init__(name, bases)
        request = urllib.request.Request(
            bases[0] + "/api/widget/v1/sessions",
            json.dumps({"site": site}).encode(),
            {"Content-Type": "application/json"},
        )
        self.token = json.load(urllib.request.urlopen(request, timeout=10))["token"]
        self.conversation: int | None = None

    def url(self, base: str) -> str:
        return base.replace("http", "ws", 1) + "/ws/visitor/?token=" + self.token

    async def on_ready(self, frame: dict[str, Any], base: str) -> None:
        if frame["conversation"]:
            self.conversation = frame["conversation"]["id"]
            await self.resume(self.conversation)

    async def on_ack(self, frame: dict[str, Any]) -> None:
        # As widget.js: the ack shows the pending message at its seq, and a hole before it
        # is fetched at once.
        await super().on_ack(frame)
        conversation = self.conversation = frame["conversation"]
        self.hold(conversation, frame["seq"], frame["client_id"])
        if self.up_to.get(conversation, 0) < frame["seq"]:
            await self.resume(conversation)


class AgentClient(ChatClient):
    """A dashboard: the agent's socket by session cookie, its list fetched on every connect."""

    def __init__(self, name: str, bases: list[str], cookie: str) -> None:
        super().__init__(name, bases)
        self.cookie = cookie
        self.conversations: list[int] = []

    def url(self, base: str) -> str:
        return base.replace("http", "ws", 1) + "/ws/agent/"

    def headers(self, base: str) -> dict[str, str]:
        return {"Cookie": f"sessionid={self.cookie}", "Origin": base}

    def _open_conversations(self, base: str) -> list[int]:
        request = urllib.request.Request(
            base + "/api/agent/v1/conversations?view=open", headers=self.headers(base)
        )
        listed = json.load(urllib.request.urlopen(request, timeout=10))["conversations"]
        return [summary["id"] for summary in listed]

    def know(self, conversation: int) -> None:
        if conversation not in self.conversations:
            self.conversations.append(conversation)

    async def on_ready(self, frame: dict[str, Any], base: str) -> None:
        # As dashboard.js: the lists come again over HTTP, then the threads resume. The
        # dashboard resumes the open thread only; this agent has every conversation open.
        for conversation in await asyncio.to_thread(self._open_conversations, base):
            self.know(conversation)
        for conversation in self.conversations:
            await self.resume(conversation)

    async def on_frame(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "conversation":
            self.know(frame["conversation"]["id"])
        elif frame["type"] == "message":
            self.know(frame["conversation"])
        await super().on_frame(frame)
