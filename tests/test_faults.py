"""Faults survived by real processes: a gofly server whose own Redis is killed mid-conversation.

The test starts its own redis-server on a spare port (never the shared one), a gofly server
using it, and plain WebSocket clients on 127.0.0.1. Loops are bounded in count and time, and
only the processes started here are stopped, by their PIDs.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request

import pytest
import websockets

from tests.conftest import REDIS_URL
from tests.processes import ServerProcess, demo_site_key, free_port

ROUNDS = 5


def _require_redis_server() -> str:
    if not REDIS_URL:
        pytest.skip("REDIS_URL is not set; fault tests run in the Redis pass.")
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed, though REDIS_URL is set.")
    return binary


class OwnRedis:
    """A redis-server of the test's own, on a spare port, that the test can kill and restart."""

    def __init__(self, binary: str, directory) -> None:
        self.binary = binary
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


class Party:
    """One socket and what it saw: messages by seq, and how many arrived twice."""

    def __init__(self, socket) -> None:
        self.socket = socket
        self.seen: dict[int, str] = {}
        self.duplicates = 0
        self.acked: set[str] = set()
        self.conversation: int | None = None

    async def read(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                frame = json.loads(await asyncio.wait_for(self.socket.recv(), 0.5))
            except TimeoutError:
                continue
            if frame["type"] == "message":
                if frame["seq"] in self.seen:
                    self.duplicates += 1  # dropped by the widget and the dashboard
                self.seen[frame["seq"]] = frame["body"]
            elif frame["type"] == "ack":
                self.acked.add(frame["client_id"])
                self.conversation = frame["conversation"]


async def _converse(base: str, site: str, cookie: str, redis: OwnRedis) -> dict:
    request = urllib.request.Request(
        base + "/api/widget/v1/sessions",
        json.dumps({"site": site}).encode(),
        {"Content-Type": "application/json"},
    )
    session = json.load(urllib.request.urlopen(request, timeout=10))
    visitor = Party(await websockets.connect(session["ws_url"]))
    agent = Party(
        await websockets.connect(
            base.replace("http", "ws") + "/ws/agent/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": base},
        )
    )
    assert json.loads(await visitor.socket.recv())["type"] == "ready"
    assert json.loads(await agent.socket.recv())["type"] == "ready"
    stop = asyncio.Event()
    readers = [asyncio.create_task(p.read(stop)) for p in (visitor, agent)]
    sent: list[str] = []

    async def send_round(label: str) -> None:
        for n in range(ROUNDS):
            client_id = f"{label}-v{n}"
            sent.append(client_id)
            await visitor.socket.send(
                json.dumps({"type": "message", "client_id": client_id, "body": client_id})
            )
            await asyncio.sleep(0.05)
        for _ in range(100):  # the agent replies once the first ack names the conversation
            if visitor.conversation is not None:
                break
            await asyncio.sleep(0.05)
        conversation = visitor.conversation
        for n in range(ROUNDS):
            client_id = f"{label}-a{n}"
            sent.append(client_id)
            await agent.socket.send(
                json.dumps(
                    {
                        "type": "message",
                        "client_id": client_id,
                        "body": client_id,
                        "conversation": conversation,
                    }
                )
            )
            await asyncio.sleep(0.05)

    await send_round("before")
    await asyncio.sleep(1)
    redis.kill()
    await send_round("during")
    await asyncio.sleep(2)
    redis.start()
    await send_round("after")

    # Bounded wait for the outbox retry job (every 5 s) to bring the rest.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if len(visitor.seen) == len(sent) and len(agent.seen) == len(sent):
            break
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*readers)
    await visitor.socket.close()
    await agent.socket.close()
    acked = visitor.acked | agent.acked
    bodies = set(visitor.seen.values())
    return {
        "sent": len(sent),
        "acked": len(acked),
        "visitor_saw": len(visitor.seen),
        "agent_saw": len(agent.seen),
        "lost_for_visitor": sorted(set(sent) - bodies),
        "lost_for_agent": sorted(set(sent) - set(agent.seen.values())),
        "seqs": sorted(visitor.seen),
        "duplicates_arrived": visitor.duplicates + agent.duplicates,
    }


@pytest.mark.timeout(240)
def test_redis_killed_mid_conversation_loses_nothing(tmp_path_factory):
    binary = _require_redis_server()
    redis = OwnRedis(binary, tmp_path_factory.mktemp("redis"))
    redis.start()
    server = ServerProcess(tmp_path_factory.mktemp("faults"), scheduler=True)
    server.env["REDIS_URL"] = redis.url
    try:
        server.start()  # embedded mode with a Redis layer: its scheduler relays the outbox
        site = demo_site_key(server.base)
        cookie = server.agent_cookie()
        result = asyncio.run(_converse(server.base, site, cookie, redis))
    finally:
        server.close()
        redis.kill()

    # Every message committed and acked; every one reached both parties (repeats from the
    # outbox's at-least-once delivery are dropped by seq, as the widget and dashboard do).
    assert result["acked"] == result["sent"] == 6 * ROUNDS, result
    assert result["lost_for_visitor"] == [] and result["lost_for_agent"] == [], result
    assert result["seqs"] == list(range(1, 6 * ROUNDS + 1)), result
