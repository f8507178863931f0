"""Routing from several processes at once against the real PostgreSQL and Redis.

Four worker processes (tests/routing_storm.py) open conversations, resolve them and flip agents
between busy and online, all at the same time, relaying every notice through the Redis channel
layer, while this process listens to the agents' group. Afterwards: no conversation was ever
announced with two different assignees, no agent holds more than its maximum, every agent's
counter matches its conversations, every seat matches its agent, and the line is consistent.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from tests.conftest import require_redis
from tests.processes import drop_database, fresh_database_url

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
VISITORS_EACH = 75
AGENTS = 12
MAX_CHATS = 4

SETUP = f"""
from django.contrib.auth import get_user_model
from agents.models import Agent
from agents.status import change_status
from chat.models import Site
site = Site.objects.create(name="Storm")
for n in range({AGENTS}):
    user = get_user_model().objects.create_user(f"agent{{n}}", password="x")
    agent = Agent.objects.create(user=user, display_name=f"Agent {{n}}",
                                 max_concurrent_chats={MAX_CHATS})
    agent.sites.add(site)
    change_status(agent.pk, "online", "connected")
print(site.pk)
"""

CHECK = """
import json
from django.db.models import Count, Q
from agents.models import Agent, AgentSeat
from chat.models import Conversation
from chat import assignment
site = Conversation.objects.values_list("site_id", flat=True).first()
holding = Q(status__in=["open", "pending"])
counts = dict(
    Conversation.objects.filter(holding, assignee__isnull=False)
    .values_list("assignee_id").annotate(n=Count("id"))
)
agents = list(Agent.objects.values("user_id", "active_chats", "max_concurrent_chats", "status"))
seats = list(AgentSeat.objects.values("agent__user_id", "free", "available"))
waiting = list(assignment.waiting(f"site:{site}").values_list("pk", flat=True))
print(json.dumps({
    "conversations": Conversation.objects.count(),
    "assigned_open": Conversation.objects.filter(holding, assignee__isnull=False).count(),
    "resolved": Conversation.objects.filter(status="resolved").count(),
    "waiting": len(waiting),
    "waiting_but_assigned": Conversation.objects.filter(
        waiting_since__isnull=False, assignee__isnull=False).count(),
    "open_unassigned_not_waiting": Conversation.objects.filter(
        holding, assignee__isnull=True, waiting_since__isnull=True).count(),
    "counts": {str(k): v for k, v in counts.items()},
    "agents": agents,
    "seats": seats,
}))
"""


def _manage(env: dict, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


async def _listen(redis_url: str, prefix: str, site_id: int, stop: asyncio.Event) -> list:
    from channels_redis.pubsub import RedisPubSubChannelLayer

    layer = RedisPubSubChannelLayer(hosts=[redis_url], prefix=prefix)
    channel = await layer.new_channel()
    await layer.group_add(f"site.{site_id}.agents", channel)
    events = []
    while not stop.is_set():
        try:
            events.append(await asyncio.wait_for(layer.receive(channel), 0.5))
        except TimeoutError:
            continue
    # Drain what is still on its way after the workers finished.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            events.append(await asyncio.wait_for(layer.receive(channel), 0.5))
        except TimeoutError:
            break
    await layer.flush()
    return events


async def _storm(env: dict, redis_url: str, prefix: str, site_id: int) -> tuple[list, list]:
    stop = asyncio.Event()
    listener = asyncio.create_task(_listen(redis_url, prefix, site_id, stop))
    await asyncio.sleep(1)  # subscribed before the first notice
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.routing_storm",
            "--worker",
            str(n),
            "--visitors",
            str(VISITORS_EACH),
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(WORKERS)
    ]
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(w.communicate() for w in workers)), timeout=400
        )
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
        stop.set()
    events = await listener
    for worker, (_out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()[-3000:]
    return [json.loads(out.decode().strip().splitlines()[-1]) for out, _ in outputs], events


@pytest.mark.timeout(600)
def test_routing_from_several_processes_never_doubles_or_overfills(tmp_path):
    if not os.environ.get("DATABASE_URL"):
        pytest.skip("DATABASE_URL is not set; the cross-process routing test needs PostgreSQL.")
    redis_url = require_redis()
    url, name = fresh_database_url(tmp_path)
    prefix = f"gofly-storm-{os.getpid()}"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": redis_url,
        "GOFLY_REDIS_PREFIX": prefix,
        "GOFLY_DATA_DIR": str(tmp_path),
    }
    try:
        _manage(env, "migrate", "-v0")
        site_id = int(_manage(env, "shell", "--no-imports", "-c", SETUP).strip())
        started = time.monotonic()
        workers, events = asyncio.run(_storm(env, redis_url, prefix, site_id))
        elapsed = time.monotonic() - started
        state = json.loads(_manage(env, "shell", "--no-imports", "-c", CHECK))
    finally:
        drop_database(name)

    announced = defaultdict(set)
    for event in events:
        if event["type"] == "chat.conversation" and event["summary"]["assignee"]:
            announced[event["summary"]["id"]].add(event["summary"]["assignee"]["id"])
    doubled = {conv: users for conv, users in announced.items() if len(users) > 1}
    over = [a for a in state["agents"] if a["active_chats"] > a["max_concurrent_chats"]]
    miscounted = [
        a for a in state["agents"] if a["active_chats"] != state["counts"].get(str(a["user_id"]), 0)
    ]
    by_user = {a["user_id"]: a for a in state["agents"]}
    bad_seats = [
        s
        for s in state["seats"]
        if s["free"]
        != by_user[s["agent__user_id"]]["max_concurrent_chats"]
        - by_user[s["agent__user_id"]]["active_chats"]
    ]
    summary = {
        "test": "routing_storm",
        "processes": WORKERS,
        "visitors": WORKERS * VISITORS_EACH,
        "agents": AGENTS,
        "max_chats": MAX_CHATS,
        "seconds": round(elapsed, 1),
        "posted": sum(w["posted"] for w in workers),
        "resolved": sum(w["resolved"] for w in workers),
        "status_flips": sum(w["flips"] for w in workers),
        "dequeued": sum(w["filled"] for w in workers),
        "notices_heard": len(events),
        "conversations_announced_assigned": len(announced),
        "assigned_twice": len(doubled),
        "agents_over_capacity": len(over),
        "counters_off": len(miscounted),
        "seats_off": len(bad_seats),
        "assigned_open": state["assigned_open"],
        "waiting": state["waiting"],
        "resolved_in_db": state["resolved"],
    }
    print("\nROUTING-COUNTS " + json.dumps(summary))
    assert summary["posted"] == state["conversations"] == WORKERS * VISITORS_EACH
    assert doubled == {} and over == [] and miscounted == [] and bad_seats == [], summary
    assert state["waiting_but_assigned"] == 0 and state["open_unassigned_not_waiting"] == 0
    # Everyone is online at the end with room left only if the line is empty.
    room = sum(a["max_concurrent_chats"] - a["active_chats"] for a in state["agents"])
    assert state["waiting"] == 0 or room == 0, summary
    assert state["assigned_open"] + state["waiting"] + state["resolved"] == state["conversations"]
