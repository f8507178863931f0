"""Visitor and agent sockets, driven end to end through the ASGI app on both channel layers."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.db import OperationalError

from chat import actions
from chat.models import Conversation, Message
from gofly_project.asgi import application
from tests.conftest import new_visitor_session, session_cookie_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("channel_layer")]

ORIGIN = (b"origin", b"http://127.0.0.1")
TIMEOUT = 5


async def open_visitor(token: str) -> tuple[WebsocketCommunicator, dict]:
    socket = WebsocketCommunicator(application, f"/ws/visitor/?token={token}")
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    ready = await socket.receive_json_from(timeout=TIMEOUT)
    assert ready["type"] == "ready"
    return socket, ready


async def open_agent(user) -> tuple[WebsocketCommunicator, dict]:
    cookie = await database_sync_to_async(session_cookie_for)(user)
    socket = WebsocketCommunicator(application, "/ws/agent/", headers=[ORIGIN, (b"cookie", cookie)])
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    ready = await socket.receive_json_from(timeout=TIMEOUT)
    assert ready["type"] == "ready"
    return socket, ready


async def receive_until(socket: WebsocketCommunicator, kind: str, **fields) -> dict:
    """Skip other frames (echoes, conversation updates) until one of `kind` with `fields`."""
    for _ in range(50):
        frame = await socket.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == kind and all(frame.get(k) == v for k, v in fields.items()):
            return frame
    raise AssertionError(f"no {kind!r} frame with {fields} in 50 frames")


async def frame_types(socket: WebsocketCommunicator, seconds: float = 0.3) -> list[str]:
    """The types of the frames that arrive until none has for `seconds`.

    A timed-out receive cancels the communicator's application, so this asks first.
    """
    types = []
    for _ in range(50):
        if await socket.receive_nothing(timeout=seconds):
            break
        types.append((await socket.receive_json_from(timeout=TIMEOUT))["type"])
    return types


async def send_message(socket, client_id: str, body: str, **extra) -> dict:
    await socket.send_json_to({"type": "message", "client_id": client_id, "body": body, **extra})
    return await receive_until(socket, "ack")


@database_sync_to_async
def visitor_token(site, public_id=None) -> str:
    return new_visitor_session(site, public_id).token


@database_sync_to_async
def stored(conversation_id: int) -> list[tuple[int, str, str]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("seq")
        .values_list("seq", "client_id", "body")
    )


# ---------------------------------------------------------------------------------------------
# Credentials


async def test_visitor_socket_without_token_closes_4401(site):
    socket = WebsocketCommunicator(application, "/ws/visitor/")
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert connected
    assert await socket.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4401}


async def test_visitor_socket_with_tampered_token_closes_4401(site):
    token = await visitor_token(site)
    socket = WebsocketCommunicator(application, f"/ws/visitor/?token={token}x")
    await socket.connect(timeout=TIMEOUT)
    assert await socket.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4401}


async def test_agent_socket_without_session_closes_4401(site):
    socket = WebsocketCommunicator(application, "/ws/agent/", headers=[ORIGIN])
    await socket.connect(timeout=TIMEOUT)
    assert await socket.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4401}


async def test_agent_socket_for_user_without_sites_closes_4403(site):
    user = await database_sync_to_async(get_user_model().objects.create_user)("carol", password="x")
    cookie = await database_sync_to_async(session_cookie_for)(user)
    socket = WebsocketCommunicator(application, "/ws/agent/", headers=[ORIGIN, (b"cookie", cookie)])
    await socket.connect(timeout=TIMEOUT)
    assert await socket.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4403}


async def test_agent_socket_from_foreign_origin_is_refused(site, agent_alice):
    cookie = await database_sync_to_async(session_cookie_for)(agent_alice.user)
    socket = WebsocketCommunicator(
        application,
        "/ws/agent/",
        headers=[(b"origin", b"https://evil.example"), (b"cookie", cookie)],
    )
    connected, _ = await socket.connect(timeout=TIMEOUT)
    assert not connected


# ---------------------------------------------------------------------------------------------
# Messages


async def test_visitor_message_is_committed_before_its_ack(site, agent_alice):
    token = await visitor_token(site)
    visitor, ready = await open_visitor(token)
    assert ready["conversation"] is None

    ack = await send_message(visitor, "c-1", "Where is my order?")

    # Read from another thread and connection: visible there only if it was committed.
    assert await stored(ack["conversation"]) == [(1, "c-1", "Where is my order?")]
    assert ack == {
        "type": "ack",
        "client_id": "c-1",
        "conversation": ack["conversation"],
        "seq": 1,
        "id": ack["id"],
    }
    await visitor.disconnect()


async def test_visitor_message_reaches_agent_and_reply_reaches_visitor(site, agent_alice):
    agent, ready = await open_agent(agent_alice.user)
    assert ready["agent"] == {"id": agent_alice.user.pk, "name": "Alice"}
    visitor, _ = await open_visitor(await visitor_token(site))

    ack = await send_message(visitor, "v-1", "你好，我的订单在哪里？")
    seen = await receive_until(agent, "message")
    assert seen["body"] == "你好，我的订单在哪里？"
    assert seen["sender"]["kind"] == "visitor"
    assert (seen["conversation"], seen["seq"], seen["id"]) == (ack["conversation"], 1, ack["id"])

    reply_ack = await send_message(
        agent, "a-1", "It ships today.", conversation=ack["conversation"]
    )
    assert reply_ack["seq"] == 2
    reply = await receive_until(visitor, "message", seq=2)  # after the visitor's own echo
    assert reply["sender"] == {"kind": "agent", "name": "Alice"}
    assert reply["body"] == "It ships today."
    await visitor.disconnect()
    await agent.disconnect()


async def test_repeated_client_id_gets_the_same_ack_and_stores_once(site):
    token = await visitor_token(site)
    visitor, _ = await open_visitor(token)
    first = await send_message(visitor, "same-id", "hello")
    again = await send_message(visitor, "same-id", "hello")
    await visitor.disconnect()

    # After a reconnect (the ack was lost, the widget resends) it is still the same message.
    visitor, ready = await open_visitor(token)
    third = await send_message(visitor, "same-id", "hello")
    await visitor.disconnect()

    assert first == again == third
    assert ready["conversation"]["last_seq"] == 1
    assert await stored(first["conversation"]) == [(1, "same-id", "hello")]


async def test_seq_has_no_gaps_under_concurrent_senders(site, agent_alice, settings):
    settings.GOFLY["messages"] = {**settings.GOFLY["messages"], "rate_burst": 1000}
    token = await visitor_token(site)
    tabs = [await open_visitor(token) for _ in range(3)]
    first = await send_message(tabs[0][0], "tab0-start", "start")
    conversation_id = first["conversation"]
    agents = [await open_agent(agent_alice.user) for _ in range(2)]
    per_socket = 15

    async def burst(socket, prefix: str, extra: dict) -> list[int]:
        for n in range(per_socket):
            await socket.send_json_to(
                {"type": "message", "client_id": f"{prefix}-{n}", "body": f"{prefix} {n}", **extra}
            )
        acks = []
        while len(acks) < per_socket:
            frame = await socket.receive_json_from(timeout=TIMEOUT)
            if frame["type"] == "ack":
                acks.append(frame["seq"])
        return acks

    results = await asyncio.gather(
        *(burst(s, f"v{i}", {}) for i, (s, _) in enumerate(tabs)),
        *(burst(s, f"a{i}", {"conversation": conversation_id}) for i, (s, _) in enumerate(agents)),
    )

    total = 1 + per_socket * (len(tabs) + len(agents))
    rows = await stored(conversation_id)
    assert [seq for seq, _, _ in rows] == list(range(1, total + 1))
    assert sorted(seq for acks in results for seq in acks) == list(range(2, total + 1))
    for socket, _ in tabs + agents:
        await socket.disconnect()


async def test_resume_after_a_dropped_socket_sends_what_was_missed(site, agent_alice):
    token = await visitor_token(site)
    visitor, _ = await open_visitor(token)
    for n in range(3):
        ack = await send_message(visitor, f"v-{n}", f"visitor {n}")
    conversation_id = ack["conversation"]
    await visitor.disconnect()  # the connection drops

    agent, _ = await open_agent(agent_alice.user)
    for n in range(2):
        await send_message(agent, f"a-{n}", f"agent {n}", conversation=conversation_id)

    visitor, ready = await open_visitor(token)
    assert ready["conversation"]["id"] == conversation_id
    assert ready["conversation"]["last_seq"] == 5
    await visitor.send_json_to({"type": "resume", "conversation": conversation_id, "after_seq": 3})
    frames = [await visitor.receive_json_from(timeout=TIMEOUT) for _ in range(3)]
    assert [(f["type"], f.get("seq"), f.get("body")) for f in frames] == [
        ("message", 4, "agent 0"),
        ("message", 5, "agent 1"),
        ("resumed", None, None),
    ]
    assert frames[2] == {"type": "resumed", "conversation": conversation_id, "last_seq": 5}
    await visitor.disconnect()
    await agent.disconnect()


async def test_resume_pages_through_long_history(site, settings):
    settings.GOFLY["messages"] = {
        **settings.GOFLY["messages"],
        "history_page_size": 4,
        "rate_burst": 100,
    }
    token = await visitor_token(site)
    visitor, _ = await open_visitor(token)
    for n in range(10):
        ack = await send_message(visitor, f"v-{n}", f"m{n}")
    await visitor.send_json_to({"type": "resume", "after_seq": 0})
    seqs = []
    while True:
        frame = await visitor.receive_json_from(timeout=TIMEOUT)
        if frame["type"] == "resumed":
            break
        if frame["type"] == "message" and frame["seq"] not in seqs:
            seqs.append(frame["seq"])
    # Echoes of the sends may interleave before the resume; the history itself is complete.
    assert sorted(seqs) == list(range(1, 11))
    assert frame == {"type": "resumed", "conversation": ack["conversation"], "last_seq": 10}
    await visitor.disconnect()


# ---------------------------------------------------------------------------------------------
# Isolation


async def test_visitor_token_cannot_reach_another_visitors_conversation(site):
    mallory, _ = await open_visitor(await visitor_token(site))
    victim, _ = await open_visitor(await visitor_token(site))
    ack = await send_message(victim, "secret-1", "my address is 1 Main St")
    await mallory.receive_nothing(timeout=0.3)

    await mallory.send_json_to(
        {"type": "resume", "conversation": ack["conversation"], "after_seq": 0}
    )
    assert await mallory.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "not_found",
        "detail": "That conversation does not exist or you cannot see it.",
    }
    await mallory.send_json_to({"type": "read", "conversation": ack["conversation"], "seq": 1})
    assert (await mallory.receive_json_from(timeout=TIMEOUT))["code"] == "not_found"
    # Sending never lands in someone else's conversation either.
    own = await send_message(mallory, "m-1", "hi", conversation=ack["conversation"])
    assert own["conversation"] != ack["conversation"]
    assert await stored(ack["conversation"]) == [(1, "secret-1", "my address is 1 Main St")]
    await mallory.disconnect()
    await victim.disconnect()


async def test_agent_of_another_site_cannot_reach_the_conversation(site, other_site):
    from tests.conftest import make_agent

    outsider = await database_sync_to_async(make_agent)("olga", other_site)
    visitor, _ = await open_visitor(await visitor_token(site))
    ack = await send_message(visitor, "v-1", "hello")
    agent, _ = await open_agent(outsider.user)
    await agent.send_json_to(
        {"type": "message", "client_id": "o-1", "body": "hi", "conversation": ack["conversation"]}
    )
    assert await agent.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "not_found",
        "client_id": "o-1",
        "detail": "That conversation does not exist or you cannot see it.",
    }
    assert await stored(ack["conversation"]) == [(1, "v-1", "hello")]
    await visitor.disconnect()
    await agent.disconnect()


async def test_a_new_conversation_goes_to_one_agent_and_stays_hidden_from_the_other(
    site, agent_alice, agent_bob
):
    alice, _ = await open_agent(agent_alice.user)
    bob, _ = await open_agent(agent_bob.user)
    visitor, _ = await open_visitor(await visitor_token(site))
    ack = await send_message(visitor, "v-1", "hello")

    # Alice has been idle longest with as much room as Bob: routing picks her.
    first = await receive_until(alice, "message", seq=1)
    assert first["body"] == "hello"
    await send_message(visitor, "v-2", "thanks Alice")
    await receive_until(alice, "message", body="thanks Alice")
    assert "message" not in await frame_types(bob)
    assigned = await database_sync_to_async(
        lambda: Conversation.objects.get(pk=ack["conversation"]).assignee_id
    )()
    assert assigned == agent_alice.user.pk
    for socket in (alice, bob, visitor):
        await socket.disconnect()


async def test_a_reply_takes_a_waiting_conversation_and_hides_it_from_colleagues(
    site, agent_alice, agent_bob
):
    alice, _ = await open_agent(agent_alice.user)
    bob, _ = await open_agent(agent_bob.user)
    # Nobody free: the visitor waits, both agents see the line.
    for socket, agent in ((alice, agent_alice), (bob, agent_bob)):
        await socket.send_json_to({"type": "agent_status", "status": "busy"})
        me = {"id": agent.user_id, "name": agent.display_name}
        await receive_until(socket, "agent_status", status="busy", agent=me)
    visitor, _ = await open_visitor(await visitor_token(site))
    ack = await send_message(visitor, "v-1", "hello")
    assert (await receive_until(visitor, "queue"))["position"] == 1
    assert (await receive_until(bob, "message"))["seq"] == 1

    await send_message(alice, "a-1", "Alice here", conversation=ack["conversation"])
    assert await receive_until(bob, "conversation_removed") == {
        "type": "conversation_removed",
        "conversation": ack["conversation"],
    }
    assert await receive_until(visitor, "queue") == {
        "type": "queue",
        "conversation": ack["conversation"],
        "position": None,
    }
    await send_message(visitor, "v-2", "thanks Alice")
    await receive_until(alice, "message", body="thanks Alice")
    assert "message" not in await frame_types(bob)
    for socket in (alice, bob, visitor):
        await socket.disconnect()


# ---------------------------------------------------------------------------------------------
# Bad input: every error code, the socket stays open, nothing is stored


BAD_FRAMES = [
    ("not json", {"code": "malformed", "detail": "The frame is not valid JSON."}),
    ("[1, 2]", {"code": "malformed", "detail": "A frame must be a JSON object with a 'type'."}),
    (
        json.dumps({"type": "shout"}),
        {
            "code": "unknown_type",
            "detail": "Unknown frame type 'shout'; expected one of: message, ping, rating, read, "
            "resume, typing.",
        },
    ),
    (
        json.dumps({"type": "message", "body": "hi"}),
        {
            "code": "invalid",
            "detail": "The field 'client_id' must be a string of 1 to 64 characters.",
        },
    ),
    (
        json.dumps({"type": "message", "client_id": "x" * 65, "body": "hi"}),
        {
            "code": "invalid",
            "detail": "The field 'client_id' must be a string of 1 to 64 characters.",
        },
    ),
    (
        json.dumps({"type": "message", "client_id": "c", "body": 5}),
        {
            "code": "invalid",
            "client_id": "c",
            "detail": "The field 'body' must be a string.",
        },
    ),
    (
        json.dumps({"type": "message", "client_id": "c", "body": "   "}),
        {
            "code": "invalid",
            "client_id": "c",
            "detail": "The message is empty; write something or attach a file.",
        },
    ),
    (
        json.dumps({"type": "message", "client_id": "c", "body": "界" * 5462}),
        {
            "code": "too_large",
            "client_id": "c",
            "detail": "The message is longer than 16384 bytes; split it or send a file.",
        },
    ),
    (
        json.dumps({"type": "resume", "after_seq": -1}),
        {
            "code": "invalid",
            "detail": "The field 'after_seq' must be a sequence number (0 or more).",
        },
    ),
    (
        json.dumps({"type": "typing", "state": "dancing"}),
        {
            "code": "invalid",
            "detail": "The field 'state' must be 'start' or 'stop'.",
        },
    ),
]


@pytest.mark.parametrize("raw,expected", BAD_FRAMES)
async def test_bad_frame_gets_exact_error_and_socket_stays_open(site, raw, expected):
    visitor, _ = await open_visitor(await visitor_token(site))
    await visitor.send_to(text_data=raw)
    assert await visitor.receive_json_from(timeout=TIMEOUT) == {"type": "error", **expected}
    # Still open and working, and the refused frame left nothing behind.
    await visitor.send_json_to({"type": "ping"})
    assert await visitor.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    assert await database_sync_to_async(Message.objects.count)() == 0
    await visitor.disconnect()


async def test_binary_frame_is_refused(site):
    visitor, _ = await open_visitor(await visitor_token(site))
    await visitor.send_to(bytes_data=b"\x00\x01")
    assert await visitor.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "malformed",
        "detail": "Frames must be JSON text, not binary.",
    }
    await visitor.disconnect()


async def test_agent_message_without_conversation_is_invalid(site, agent_alice):
    agent, _ = await open_agent(agent_alice.user)
    await agent.send_json_to({"type": "message", "client_id": "a", "body": "hi"})
    assert await agent.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "invalid",
        "client_id": "a",
        "detail": "The field 'conversation' must be a conversation id (a number).",
    }
    await agent.disconnect()


async def test_sending_too_fast_is_rate_limited_and_not_stored(site, settings):
    settings.GOFLY["messages"] = {
        **settings.GOFLY["messages"],
        "rate_per_second": 0.001,
        "rate_burst": 3,
    }
    visitor, _ = await open_visitor(await visitor_token(site))
    for n in range(3):
        ack = await send_message(visitor, f"ok-{n}", "hi")
    await visitor.send_json_to({"type": "message", "client_id": "too-fast", "body": "hi"})
    assert await receive_until(visitor, "error") == {
        "type": "error",
        "code": "rate_limited",
        "client_id": "too-fast",
        "detail": "You are sending too fast; wait a moment and send again.",
    }
    assert [row[1] for row in await stored(ack["conversation"])] == ["ok-0", "ok-1", "ok-2"]
    await visitor.disconnect()


async def test_database_failure_gets_unavailable_and_no_ack(site, monkeypatch):
    visitor, _ = await open_visitor(await visitor_token(site))

    def broken(*args, **kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(actions, "_store_message", broken)
    await visitor.send_json_to({"type": "message", "client_id": "lost?", "body": "hi"})
    assert await visitor.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "unavailable",
        "client_id": "lost?",
        "detail": "The message could not be saved right now; it was not stored. Send it again.",
    }
    assert await visitor.receive_nothing(timeout=0.2)
    assert await database_sync_to_async(Message.objects.count)() == 0

    # The widget resends the same client_id later and it is stored once.
    monkeypatch.undo()
    ack = await send_message(visitor, "lost?", "hi")
    assert await stored(ack["conversation"]) == [(1, "lost?", "hi")]
    await visitor.disconnect()


# ---------------------------------------------------------------------------------------------
# Typing, read, status


async def test_typing_preview_reaches_agent_only_when_site_allows(site, agent_alice):
    agent, _ = await open_agent(agent_alice.user)
    visitor, _ = await open_visitor(await visitor_token(site))
    ack = await send_message(visitor, "v-1", "hello")
    await visitor.send_json_to({"type": "typing", "state": "start", "preview": "my order no"})
    assert await receive_until(agent, "typing") == {
        "type": "typing",
        "conversation": ack["conversation"],
        "sender": {"kind": "visitor"},
        "active": True,
        "preview": "my order no",
    }
    await visitor.disconnect()

    site.typing_preview = False
    await database_sync_to_async(site.save)()
    visitor, _ = await open_visitor(await visitor_token(site))
    await send_message(visitor, "v-2", "hello again")
    await visitor.send_json_to({"type": "typing", "state": "start", "preview": "secret draft"})
    assert (await receive_until(agent, "typing"))["preview"] == ""
    await visitor.disconnect()
    await agent.disconnect()


async def test_read_position_is_stored_and_shown_to_the_other_side(site, agent_alice):
    agent, _ = await open_agent(agent_alice.user)
    visitor, _ = await open_visitor(await visitor_token(site))
    ack = await send_message(visitor, "v-1", "hello")
    await agent.send_json_to({"type": "read", "conversation": ack["conversation"], "seq": 1})
    assert await receive_until(visitor, "read") == {
        "type": "read",
        "conversation": ack["conversation"],
        "seq": 1,
        "by": "agent",
    }
    read_seq = await database_sync_to_async(
        lambda: Conversation.objects.get(pk=ack["conversation"]).agent_read_seq
    )()
    assert read_seq == 1
    await visitor.disconnect()
    await agent.disconnect()


async def test_resolve_then_visitor_message_reopens(site, agent_alice):
    agent, _ = await open_agent(agent_alice.user)
    visitor, _ = await open_visitor(await visitor_token(site))
    ack = await send_message(visitor, "v-1", "hello")
    await agent.send_json_to(
        {"type": "status", "conversation": ack["conversation"], "status": "resolved"}
    )
    update = await receive_until(agent, "conversation")
    while update["conversation"]["status"] != "resolved":
        update = await receive_until(agent, "conversation")
    assert update["conversation"]["id"] == ack["conversation"]
    await receive_until(
        visitor, "conversation", conversation={"id": ack["conversation"], "status": "resolved"}
    )

    again = await send_message(visitor, "v-2", "one more thing")
    assert again["conversation"] == ack["conversation"] and again["seq"] == 2
    status = await database_sync_to_async(
        lambda: Conversation.objects.get(pk=ack["conversation"]).status
    )()
    assert status == "open"
    await visitor.disconnect()
    await agent.disconnect()


async def test_unexpected_failure_costs_one_frame_not_the_socket(site, monkeypatch):
    visitor, _ = await open_visitor(await visitor_token(site))

    def bug(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(actions, "post_visitor_message", bug)
    await visitor.send_json_to({"type": "message", "client_id": "c", "body": "hi"})
    assert await visitor.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "internal",
        "client_id": "c",
        "detail": "Something went wrong on our side; the frame was not processed. Try again.",
    }
    await visitor.send_json_to({"type": "ping"})
    assert await visitor.receive_json_from(timeout=TIMEOUT) == {"type": "pong"}
    await visitor.disconnect()


async def test_malformed_attachment_id_is_not_found(site):
    visitor, _ = await open_visitor(await visitor_token(site))
    await visitor.send_json_to(
        {"type": "message", "client_id": "f", "body": "", "attachment": "not-a-uuid"}
    )
    assert await visitor.receive_json_from(timeout=TIMEOUT) == {
        "type": "error",
        "code": "not_found",
        "client_id": "f",
        "detail": "That upload does not exist or is not yours.",
    }
    assert await database_sync_to_async(Message.objects.count)() == 0
    await visitor.disconnect()
