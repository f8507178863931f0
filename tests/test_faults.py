"""Faults survived by real processes, each test printing its counts as a FAULT-COUNTS line.

- Redis killed: a gofly server whose own redis-server (on a spare port, never the shared one)
  is killed mid-conversation and started again.
- Server killed: two gofly servers share one PostgreSQL database and the Redis of REDIS_URL;
  the one every socket is on gets SIGKILL while they send, and the clients carry on with the
  other.
- Database unreachable: a gofly server reaches PostgreSQL through a TCP relay the test cuts.

Clients are plain WebSocket clients on 127.0.0.1 that keep what widget.js and dashboard.js
keep (tests/chat_clients.py). Loops are bounded in count and time, and only the processes
started here are stopped, by their PIDs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections import Counter
from urllib.parse import urlparse

import pytest
import websockets

from tests.chat_clients import RETRYABLE, AgentClient, ChatClient, VisitorClient
from tests.conftest import REDIS_URL, require_postgres, require_redis
from tests.processes import ServerProcess, TcpProxy, demo_site_key, free_port

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
def test_redis_killed_mid_conversation_loses_nothing(tmp_path_factory, capsys):
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
    report_counts(capsys, "redis_killed", result)

    # Every message committed and acked; every one reached both parties (repeats from the
    # outbox's at-least-once delivery are dropped by seq, as the widget and dashboard do).
    assert result["acked"] == result["sent"] == 6 * ROUNDS, result
    assert result["lost_for_visitor"] == [] and result["lost_for_agent"] == [], result
    assert result["seqs"] == list(range(1, 6 * ROUNDS + 1)), result


def report_counts(capsys: pytest.CaptureFixture, test: str, counts: dict) -> None:
    """Print a test's counts as one JSON line, shown even when pytest captures output."""
    with capsys.disabled():
        print("\nFAULT-COUNTS", json.dumps({"test": test, **counts}, sort_keys=True))


def _database_state(url: str) -> dict:
    """What the database holds: messages by conversation and client_id, outbox rows left."""
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT conversation_id, client_id FROM chat_message")
            rows = cursor.fetchall()
            cursor.execute("SELECT id, last_seq FROM chat_conversation")
            last_seq = dict(cursor.fetchall())
            cursor.execute("SELECT count(*) FROM chat_outboxevent WHERE status = 'pending'")
            outbox_pending = cursor.fetchone()[0]
    finally:
        conn.close()
    stored = Counter(rows)
    by_conversation: dict[int, set[str]] = {}
    for conversation, client_id in rows:
        by_conversation.setdefault(conversation, set()).add(client_id)
    return {
        "rows": len(rows),
        "client_ids": {client_id for _, client_id in rows},
        # Rows beyond the first for one (conversation, client_id): a message stored twice.
        "stored_twice": sum(count - 1 for count in stored.values()),
        "by_conversation": by_conversation,
        "last_seq": last_seq,
        "outbox_pending": outbox_pending,
    }


async def _wait_for(check, seconds: float, every: float = 0.25) -> bool:
    """Poll an async `check` until it holds; bounded in time and so in count."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return await check()


def _lost_and_doubled(parties: list[ChatClient], state: dict) -> tuple[dict, dict, dict]:
    """Per party: stored messages it never showed, ones it showed twice, and how many it saw."""
    lost, doubled, delivered = {}, {}, {}
    for party in parties:
        if isinstance(party, VisitorClient):
            expected = state["by_conversation"].get(party.conversation, set())
        else:
            expected = state["client_ids"]
        lost[party.name] = sorted(expected - set(party.shown))
        doubled[party.name] = party.shown_twice()
        delivered[party.name] = len(set(party.shown))
    return lost, doubled, delivered


# A server process killed mid-conversation --------------------------------------------------

VISITORS = 5
SENDS_EACH = 30
SEND_EVERY_SECONDS = 0.25  # four a second per socket, under the default rate of five
KILL_AT_SHARE = 0.4  # process A dies once this share of all messages has been sent
BURST = 5  # messages each socket sends just before the kill
# Long enough for A to commit some of the burst, far too short to answer all of it (each socket's
# frames are handled one after another).
KILL_AFTER_BURST_SECONDS = 0.05


async def _talk(party: ChatClient) -> None:
    for n in range(SENDS_EACH):
        if isinstance(party, AgentClient):
            for _ in range(100):  # the agent answers conversations it has heard of
                if party.conversations:
                    break
                await asyncio.sleep(0.05)
            conversation = party.conversations[n % len(party.conversations)]
            await party.submit(f"agent reply {n}", conversation=conversation)
        else:
            await party.submit(f"{party.name} asks {n}")
        await asyncio.sleep(SEND_EVERY_SECONDS)


async def _kill_midway(server: ServerProcess, parties: list[ChatClient], url: str) -> dict:
    total = len(parties) * SENDS_EACH
    for _ in range(1200):  # at most a minute
        if sum(len(party.sent) for party in parties) >= total * KILL_AT_SHARE:
            break
        await asyncio.sleep(0.05)
    # A burst from every socket, and the kill while the server is still working through it:
    # some messages are committed but not acked, some not even read.
    for party in parties:
        for n in range(BURST):
            agent = isinstance(party, AgentClient)
            fields = {"conversation": party.conversations[0]} if agent else {}
            await party.submit(f"{party.name} burst {n}", **fields)
    await asyncio.sleep(KILL_AFTER_BURST_SECONDS)
    os.kill(server.process.pid, signal.SIGKILL)
    await asyncio.to_thread(server.process.wait, 10)
    unacked = {cid for party in parties for cid in party.pending}
    state = await asyncio.to_thread(_database_state, url)
    return {
        "sent_before_kill": sum(len(party.sent) for party in parties),
        "unacked_at_kill": len(unacked),
        # Committed by A, whose ack never came: the resend to B must get the same ack.
        "stored_but_unacked_at_kill": len(unacked & state["client_ids"]),
        # Written by A and never relayed: B's retry job must send them.
        "outbox_pending_at_kill": state["outbox_pending"],
    }


async def _sigkill_conversations(a: ServerProcess, b: ServerProcess, site: str, cookie: str):
    bases = [a.base, b.base]
    visitors = [VisitorClient(f"visitor{i}", bases, site) for i in range(VISITORS)]
    agent = AgentClient("agent", bases, cookie)
    parties: list[ChatClient] = [*visitors, agent]
    stop = asyncio.Event()
    runners = [asyncio.create_task(party.run(stop)) for party in parties]
    try:
        for party in parties:
            await asyncio.wait_for(party.connected.wait(), 15)
        talkers = [asyncio.create_task(_talk(party)) for party in parties]
        at_kill = await _kill_midway(a, parties, a.database_url)
        await asyncio.gather(*talkers)

        async def settled() -> bool:
            if any(party.pending for party in parties):
                return False
            state = await asyncio.to_thread(_database_state, a.database_url)
            return state["outbox_pending"] == 0 and all(
                party.holds_all(
                    state["last_seq"]
                    if isinstance(party, AgentClient)
                    else {party.conversation: state["last_seq"].get(party.conversation, 0)}
                )
                for party in parties
            )

        # Bounded: B's retry job runs every 5 s and takes rows 5 s old; a row A had leased
        # waits out the 60 s lease.
        await _wait_for(settled, 120, every=0.5)
    finally:
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)
        for party in parties:
            await party.close()
    for runner in runners:
        runner.result()  # a client that gave up reconnecting fails the test here
    return parties, at_kill


@pytest.mark.timeout(300)
def test_server_killed_mid_conversation_clients_resume_on_another(tmp_path_factory, capsys):
    require_postgres(
        "DATABASE_URL is not set to PostgreSQL; two server processes need one shared database."
    )
    redis_url = require_redis()
    a = ServerProcess(tmp_path_factory.mktemp("server-a"), scheduler=True)
    b = ServerProcess(
        tmp_path_factory.mktemp("server-b"), scheduler=True, database_url=a.database_url
    )
    # One install of two processes: the same Redis and the same channel prefix.
    for server in (a, b):
        server.env.update(
            {"REDIS_URL": redis_url, "GOFLY_REDIS_PREFIX": a.env["GOFLY_REDIS_PREFIX"]}
        )
    try:
        a.start()
        b.start()
        site = demo_site_key(a.base)
        cookie = a.agent_cookie()
        parties, at_kill = asyncio.run(_sigkill_conversations(a, b, site, cookie))
        state = _database_state(a.database_url)
    finally:
        b.close()
        a.close()  # owns the database and drops it

    sent = {cid for party in parties for cid in party.sent}
    acked = set().union(*(party.acked() for party in parties))
    lost, doubled, delivered = _lost_and_doubled(parties, state)
    refused = [e for party in parties for e in party.errors if e["code"] not in RETRYABLE]
    counts = {
        "sent": len(sent),
        "acked": len(acked),
        "stored": state["rows"],
        "stored_twice": state["stored_twice"],
        "never_stored": sorted(sent - state["client_ids"]),
        "delivered": delivered,
        "lost": lost,
        "duplicates_shown": doubled,
        "repeats_dropped_by_seq": sum(party.repeats_dropped for party in parties),
        "resent": sum(party.resent for party in parties),
        "reconnects": sum(party.connects - 1 for party in parties),
        "refused": refused,
        "outbox_pending_at_end": state["outbox_pending"],
        **at_kill,
    }
    report_counts(capsys, "sigkill", counts)

    # Then: every message stored once and acked, each party shows each message exactly once,
    # and what A left in its outbox was relayed by B.
    assert counts["acked"] == counts["sent"] == len(parties) * (SENDS_EACH + BURST), counts
    assert counts["unacked_at_kill"] > 0, counts  # the kill caught messages in flight
    # Shortcoming: whether the kill lands between a commit and its ack or relay is up to timing
    # (1 to 5 of each in runs here), so stored_but_unacked_at_kill and outbox_pending_at_kill
    # are printed, not asserted; a zero means that run did not exercise B's resend or retry.
    assert counts["stored"] == counts["sent"] and counts["stored_twice"] == 0, counts
    assert counts["never_stored"] == [] and refused == [], counts
    assert all(not ids for ids in lost.values()), counts
    assert all(not ids for ids in doubled.values()), counts
    assert counts["outbox_pending_at_end"] == 0, counts


# The database unreachable for a moment ----------------------------------------------------

UNAVAILABLE = "The message could not be saved right now; it was not stored. Send it again."
CUT_SECONDS = 4.0  # long enough for the client's first timed resend (2 s) to fail as well
# Visitors writing at once, so that each of the server's pool threads holds a connection when
# the cut comes (the default executor has min(32, cores + 4) threads: 6 on a 2-core machine).
CROWD = 6
# Few messages during the cut: the pool threads they do not reach keep their broken connections
# unused until the database is back.
DURING = 2


async def _acked(party: ChatClient, client_ids: list[str], seconds: float) -> bool:
    async def check() -> bool:
        return set(client_ids) <= party.acked()

    return await _wait_for(check, seconds)


async def _crowd_writes(crowd: list[VisitorClient], label: str) -> None:
    """Every crowd visitor writes at once, so the server's pool threads each hold a connection."""
    sent = await asyncio.gather(*(party.submit(f"{party.name} {label}") for party in crowd))
    for party, client_id in zip(crowd, sent, strict=True):
        assert await _acked(party, [client_id], 30), (party.pending, party.errors)


async def _database_outage(server: ServerProcess, proxy: TcpProxy, site: str, cookie: str):
    visitor = VisitorClient("visitor", [server.base], site)
    crowd = [VisitorClient(f"crowd{i}", [server.base], site) for i in range(CROWD)]
    agent = AgentClient("agent", [server.base], cookie)
    parties: list[ChatClient] = [visitor, *crowd, agent]
    stop = asyncio.Event()
    runners = [asyncio.create_task(party.run(stop)) for party in parties]
    seen: dict = {}
    try:
        for party in parties:
            await asyncio.wait_for(party.connected.wait(), 15)
        before = [await visitor.submit(f"before the cut {n}") for n in range(3)]
        assert await _acked(visitor, before, 20), visitor.acks
        for _ in range(2):
            await _crowd_writes(crowd, "before the cut")

        # When: the database becomes unreachable while one visitor writes.
        proxy.cut()
        cut_at = time.monotonic()
        during = []
        for n in range(DURING):
            during.append(await visitor.submit(f"during the cut {n}"))
            await asyncio.sleep(0.2)

        async def all_refused() -> bool:
            return set(during) <= {error.get("client_id") for error in visitor.errors}

        assert await _wait_for(all_refused, 20), visitor.errors
        await asyncio.sleep(max(0.0, cut_at + CUT_SECONDS - time.monotonic()))
        seen["acked_during_cut"] = sorted(visitor.acked() & set(during))
        refused_before = {party.name: len(party.errors) for party in parties}
        proxy.restore()
        restored_at = time.monotonic()

        # Then: the visitor's own timer sends them again, with the same client_ids.
        assert await _acked(visitor, during, 60), (visitor.pending, visitor.errors)
        seen["seconds_to_ack_after_restore"] = round(time.monotonic() - restored_at, 2)
        # The crowd's pool threads kept their connections through the cut without using them;
        # a server that served from such a broken connection would refuse again now.
        await _crowd_writes(crowd, "after the cut")
        seen["refused_after_restore"] = [
            error for party in parties for error in party.errors[refused_before[party.name] :]
        ]

        # A message acked before the cut, sent again: the same ack, nothing new stored.
        first = next(ack for ack in visitor.acks if ack["client_id"] == before[0])
        await visitor.send({"type": "message", "client_id": before[0], "body": "before the cut 0"})

        async def acked_twice() -> bool:
            return sum(ack["client_id"] == before[0] for ack in visitor.acks) == 2

        assert await _wait_for(acked_twice, 20), visitor.acks
        seen["repeat_ack"] = [ack for ack in visitor.acks if ack["client_id"] == before[0]][1]
        seen["first_ack"] = first

        after = [await visitor.submit(f"after the cut {n}") for n in range(2)]
        assert await _acked(visitor, after, 20), visitor.acks

        async def agent_has_all() -> bool:
            state = await asyncio.to_thread(_database_state, server.database_url)
            return agent.holds_all(state["last_seq"])

        await _wait_for(agent_has_all, 30, every=0.5)
    finally:
        stop.set()
        await asyncio.gather(*runners, return_exceptions=True)
        for party in parties:
            await party.close()
    for runner in runners:
        runner.result()
    return parties, during, seen


@pytest.mark.timeout(240)
def test_database_unreachable_messages_resent_and_stored_once(tmp_path_factory, capsys):
    require_postgres(
        "DATABASE_URL is not set to PostgreSQL; the outage needs a database server to cut "
        "off (the embedded SQLite is a local file)."
    )
    server = ServerProcess(tmp_path_factory.mktemp("outage"), scheduler=True)
    target = urlparse(server.database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    # The server alone goes through the relay; the test checks the database directly.
    server.env["DATABASE_URL"] = proxy.url_for(server.database_url)
    try:
        proxy.start()
        server.start()
        site = demo_site_key(server.base)
        cookie = server.agent_cookie()
        parties, during, seen = asyncio.run(_database_outage(server, proxy, site, cookie))
        state = _database_state(server.database_url)
    finally:
        server.close()
        proxy.close()

    visitor = parties[0]
    refusals = [error for error in visitor.errors if error["client_id"] in during]
    errors = [error for party in parties for error in party.errors]
    sent = [client_id for party in parties for client_id in party.sent]
    lost, doubled, delivered = _lost_and_doubled(parties, state)
    counts = {
        "sent": len(sent),
        "acked": len(set().union(*(party.acked() for party in parties))),
        "stored": state["rows"],
        "stored_twice": state["stored_twice"],
        "refused_unavailable": len(refusals),
        "other_errors": [error for error in errors if error not in refusals],
        "resent": sum(party.resent for party in parties),
        "delivered": delivered,
        "lost": lost,
        "duplicates_shown": doubled,
        "relay_connections": proxy.accepted,
        **seen,
    }
    report_counts(capsys, "database_unreachable", counts)

    # Every refusal during the cut is the exact unavailable error, and nothing was acked then.
    for client_id in during:
        first = next(error for error in refusals if error["client_id"] == client_id)
        assert first == {
            "type": "error",
            "code": "unavailable",
            "detail": UNAVAILABLE,
            "client_id": client_id,
        }
    assert seen["acked_during_cut"] == [], counts
    # Once the database is back nothing is refused, and only the cut's messages ever were.
    assert seen["refused_after_restore"] == [] and counts["other_errors"] == [], counts
    # The client resent on its own timer (more refusals than messages) and after the cut
    # every message was acked and stored exactly once.
    assert len(refusals) > len(during), counts
    assert counts["acked"] == counts["sent"] == counts["stored"] == 5 + DURING + 3 * CROWD, counts
    assert counts["stored_twice"] == 0 and state["client_ids"] == set(sent), counts
    # The repeat of an acked client_id got the very same ack.
    assert seen["repeat_ack"] == seen["first_ack"], counts
    assert all(not ids for ids in lost.values()), counts
    assert all(not ids for ids in doubled.values()), counts
