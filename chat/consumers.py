"""WebSocket consumers for visitors and agents.

Consumers parse frames, check who is asking, and hand the work to `chat.actions` (in a worker
thread, never on the event loop) and `chat.delivery`. A message is acknowledged only after the
transaction that stored it has committed.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import Error as DatabaseError
from django.utils.translation import gettext

from agents import presence
from agents import status as agent_status
from agents.models import Agent, Team
from chat import actions, assignment, blocking, delivery, errors, protocol, teamwork
from chat.errors import ErrorCode, GoflyError
from chat.models import Conversation, Site, Visitor
from chat.tokens import read_visitor_token

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


def db(func: Any) -> Any:
    """Run ORM code in the thread pool, closing stale connections around it.

    thread_sensitive=False lets several sockets' database work proceed in parallel instead of
    queueing behind one shared thread; the actions take their own row locks.
    """
    return database_sync_to_async(func, thread_sensitive=False)


class ChatConsumer(AsyncWebsocketConsumer):
    """What visitor and agent sockets share: frame parsing, errors, limits, groups."""

    frame_types: frozenset[str] = frozenset()

    async def dispatch(self, message: dict) -> None:
        """Call the handler for `message` without Channels' per-message thread hop.

        Channels 4.2+ awaits aclose_old_connections() through sync_to_async before every
        handler; our handlers do all ORM work inside `db()`, which closes old connections
        itself, so the extra hop only cost CPU (../shared/performance-notes.md, item 3).
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']!r}")
        await handler(message)

    async def websocket_connect(self, message: dict) -> None:
        self.joined: list[str] = []
        self.message_bucket = protocol.message_bucket()
        self.frame_bucket = protocol.frame_bucket()
        await self.connect()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "joined", []):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                logger.warning("consumer.group_discard_failed", extra={"group": group})

    async def join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.joined.append(group)

    async def refuse(self, code: int) -> None:
        # A close code is only seen by the client after the handshake completes.
        await self.accept()
        await self.close(code=code)

    async def send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=protocol.dumps(frame))

    async def send_error(self, exc: GoflyError, frame: dict | None) -> None:
        reply: dict[str, Any] = {"type": "error", **exc.as_dict()}
        client_id = frame.get("client_id") if isinstance(frame, dict) else None
        if isinstance(client_id, str) and 0 < len(client_id) <= protocol.CLIENT_ID_MAX:
            reply["client_id"] = client_id
        await self.send_frame(reply)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        frame: dict | None = None
        try:
            frame = protocol.parse_frame(text_data, bytes_data, self.frame_types)
            bucket = self.message_bucket if frame["type"] == "message" else self.frame_bucket
            if frame["type"] != "ping" and not bucket.allow():
                raise protocol.rate_limited()
            await getattr(self, "frame_" + frame["type"])(frame)
        except GoflyError as exc:
            logger.info("consumer.frame_refused", extra={"code": str(exc.code)})
            await self.send_error(exc, frame)
        except DatabaseError:
            logger.exception("consumer.database_error")
            await self.send_error(errors.database_unavailable(), frame)
        except Exception:
            # A bug or a socket closed under us must cost one frame, never the connection's
            # consumer or the process; the client resends unacknowledged messages.
            logger.exception("consumer.frame_failed")
            with contextlib.suppress(Exception):
                await self.send_error(errors.internal_error(), frame)

    async def publish(self, posted: actions.PostedMessage) -> None:
        """Fan a committed message out, then acknowledge it to its sender.

        Others are served first: if the sender's socket has closed meanwhile, the ack fails,
        and the message must still reach everyone else live.
        """
        if posted.recorded is not None:
            await delivery.relay(posted.recorded.outbox_id, posted.recorded.sends)
        frame = posted.frame
        await self.send_frame(
            {
                "type": "ack",
                "client_id": frame["client_id"],
                "conversation": frame["conversation"],
                "seq": frame["seq"],
                "id": frame["id"],
            }
        )
        if posted.bot_event is not None:
            delivery.run_bot_soon(posted.bot_event)

    async def frame_ping(self, frame: dict) -> None:
        await self.send_frame({"type": "pong"})

    async def send_history(self, conversation: Conversation, after_seq: int) -> None:
        page = int(settings.GOFLY["messages"]["history_page_size"])
        last = after_seq
        while True:
            frames = await db(actions.messages_after)(conversation, last, page)
            for item in frames:
                await self.send_frame(item)
            if frames:
                last = frames[-1]["seq"]
            if len(frames) < page:
                break
        await self.send_frame(
            {"type": "resumed", "conversation": conversation.pk, "last_seq": last}
        )


def _visitor_state(visitor_id: int, ip: str | None) -> tuple[Visitor, dict | None] | None:
    """The visitor and its current conversation; raises `blocked` for a blocked visitor."""
    visitor = Visitor.objects.select_related("site").filter(pk=visitor_id).first()
    if visitor is None:
        return None
    blocking.check_not_blocked(visitor.site_id, visitor.pk, ip)
    conversation = actions.current_conversation(visitor_id)
    state = None
    if conversation is not None:
        state = {
            "id": conversation.pk,
            "assignee": conversation.assignee_id,
            "status": conversation.status,
            "last_seq": conversation.last_seq,
            "read_seq": conversation.visitor_read_seq,
            "agent_read_seq": conversation.agent_read_seq,
            "queue_position": assignment.queue_position(conversation),
        }
    return visitor, state


class VisitorConsumer(ChatConsumer):
    """`/ws/visitor/?token=…`: one visitor's own conversations, nothing else."""

    frame_types = frozenset({"message", "resume", "typing", "read", "rating", "ping"})

    async def connect(self) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        claim = read_visitor_token((query.get("token") or [None])[0])
        if claim is None:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        client = self.scope.get("client")
        try:
            found = await db(_visitor_state)(claim.visitor_id, client[0] if client else None)
        except GoflyError as exc:
            await self.refuse_with(exc)
            return
        if found is None or found[0].site_id != claim.site_id:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        visitor, state = found
        self.visitor_id = visitor.pk
        self.site_id = visitor.site_id
        self.typing_preview = visitor.site.typing_preview
        self.conversation_id = state["id"] if state else None
        self.assignee_id = state.pop("assignee") if state else None
        await self.join(delivery.visitor_group(self.visitor_id))
        await self.accept()
        self.accepted = True
        await self.send_frame({"type": "ready", "conversation": state})

    async def refuse_with(self, exc: GoflyError) -> None:
        """Tell the visitor why in an error frame, then close with 4403: do not come back."""
        if not getattr(self, "accepted", False):
            await self.accept()
        await self.send_error(exc, None)
        await self.close(code=CLOSE_FORBIDDEN)

    async def frame_message(self, frame: dict) -> None:
        client_id = protocol.client_id_of(frame)
        body = protocol.body_of(frame)
        posted = await db(actions.post_visitor_message)(
            self.visitor_id, client_id=client_id, body=body, upload_id=frame.get("attachment")
        )
        self.conversation_id = posted.conversation_id
        self.assignee_id = posted.assignee_id
        await self.publish(posted)

    async def frame_resume(self, frame: dict) -> None:
        after = protocol.after_seq_of(frame)
        conversation = await db(actions.check_visitor_conversation)(
            self.visitor_id, frame.get("conversation")
        )
        await self.send_history(conversation, after)

    async def frame_typing(self, frame: dict) -> None:
        active, preview = protocol.typing_of(frame, self.typing_preview)
        if self.conversation_id is None:
            return
        await delivery.deliver_typing(
            delivery.site_agents_group(self.site_id),
            {
                "type": "typing",
                "conversation": self.conversation_id,
                "sender": {"kind": "visitor"},
                "active": active,
                "preview": preview,
            },
            assignee=self.assignee_id,
        )

    async def frame_rating(self, frame: dict) -> None:
        recorded = await db(actions.rate_conversation)(
            self.visitor_id, frame.get("conversation"), frame.get("score"), frame.get("comment")
        )
        await delivery.relay(recorded.outbox_id, recorded.sends)
        await self.send_frame(
            {"type": "rated", "conversation": frame["conversation"], "score": frame["score"]}
        )

    async def frame_read(self, frame: dict) -> None:
        conversation = await db(actions.mark_read_by_visitor)(
            self.visitor_id, frame.get("conversation"), frame.get("seq")
        )
        await delivery.deliver_read(
            delivery.site_agents_group(self.site_id),
            {"type": "read", "conversation": conversation.pk, "seq": frame["seq"], "by": "visitor"},
            assignee=conversation.assignee_id,
        )

    # Channel-layer events ---------------------------------------------------------------------

    async def chat_message(self, event: dict) -> None:
        self.conversation_id = event["frame"]["conversation"]
        self.assignee_id = event["assignee"]
        await self.send_frame(event["frame"])

    async def chat_conversation(self, event: dict) -> None:
        self.assignee_id = event["assignee"]
        await self.send_frame({"type": "conversation", "conversation": event["summary"]})

    async def chat_typing(self, event: dict) -> None:
        await self.send_frame(event["frame"])

    async def chat_read(self, event: dict) -> None:
        await self.send_frame(event["frame"])

    async def chat_queue(self, event: dict) -> None:
        await self.send_frame(event["frame"])

    async def chat_blocked(self, event: dict) -> None:
        """A block caught this visitor while connected: refuse, as a new connection would be."""
        await self.refuse_with(blocking.blocked())


def _agent_identity(user: Any) -> tuple[list[int], dict[str, Any], int | None] | None:
    """The sites whose groups the agent joins, how it is named and its Agent id (None for a
    superuser without an agent profile), or None without rights."""
    site_ids = actions.agent_site_ids(user)
    if site_ids is None:
        site_ids = list(Site.objects.values_list("id", flat=True))
    elif not site_ids:
        return None
    agent = Agent.objects.filter(user=user).first()
    name = agent.display_name if agent and agent.display_name else user.get_username()
    return site_ids, {"id": user.pk, "name": name}, agent.pk if agent else None


def _team(site_ids: list[int], agent_id: int | None) -> dict[str, Any]:
    """The agent's own status and its colleagues' on the same sites, for the ready frame."""
    agents = Agent.objects.filter(sites__in=site_ids).distinct().select_related("user")
    mine = next((a.status for a in agents if a.pk == agent_id), None)
    return {
        "status": mine,
        "teams": [{"id": t.pk, "name": t.name} for t in Team.objects.order_by("name")],
        "agents": [
            {"id": a.user_id, "name": str(a), "status": a.status}
            for a in sorted(agents, key=lambda a: str(a).lower())
        ],
    }


# An agent's activity is written at most this often per socket; the away timer is minutes.
ACTIVITY_WRITE_SECONDS = 30.0


class AgentConsumer(ChatConsumer):
    """`/ws/agent/`: an agent's live view of its sites, authenticated by the session cookie."""

    frame_types = frozenset(
        {
            "message",
            "resume",
            "typing",
            "read",
            "status",
            "agent_status",
            "transfer",
            "note",
            "labels",
            "take",
            "block",
            "ping",
        }
    )

    async def connect(self) -> None:
        self.agent_id: int | None = None
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED)
            return
        found = await db(_agent_identity)(user)
        if found is None:
            await self.refuse(CLOSE_FORBIDDEN)
            return
        site_ids, identity, agent_id = found
        self.user = user
        self.site_ids = set(site_ids)
        if agent_id is not None:
            self.agent_id = agent_id
            self.activity_written = time.monotonic()
            # Announced to the others before this socket joins: it learns its own status from
            # the ready frame, read after joining, so no change in between is missed.
            await self.relay_all(await db(presence.socket_opened)(agent_id, self.channel_name))
        for site_id in site_ids:
            await self.join(delivery.site_agents_group(site_id))
        await self.accept()
        team = await db(_team)(site_ids, agent_id)
        await self.send_frame(
            {"type": "ready", "agent": identity, "sites": sorted(site_ids), **team}
        )

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if getattr(self, "agent_id", None) is not None:
            try:
                await db(presence.socket_closed)(self.channel_name)
            except Exception:
                # The sweep still takes the agent offline once pings stop: nothing is lost.
                logger.exception("consumer.presence_close_failed")

    async def relay_all(self, recorded: list[Any]) -> None:
        for item in recorded:
            await delivery.relay(item.outbox_id, item.sends)

    async def note_activity(self) -> None:
        if self.agent_id is None or time.monotonic() - self.activity_written < (
            ACTIVITY_WRITE_SECONDS
        ):
            return
        self.activity_written = time.monotonic()
        await self.relay_all(await db(presence.note_activity)(self.agent_id))

    async def frame_ping(self, frame: dict) -> None:
        if self.agent_id is not None:
            active = frame.get("active") is True
            if active:
                self.activity_written = time.monotonic()
            await self.relay_all(
                await db(presence.socket_seen)(self.agent_id, self.channel_name, active)
            )
        await super().frame_ping(frame)

    async def frame_transfer(self, frame: dict) -> None:
        await self.note_activity()
        recorded = await db(teamwork.transfer)(
            self.user,
            frame.get("conversation"),
            to_agent=frame.get("agent"),
            to_team=frame.get("team"),
            note=frame.get("note"),
        )
        await self.relay_all([recorded])

    async def frame_take(self, frame: dict) -> None:
        await self.note_activity()
        await self.relay_all([await db(teamwork.take)(self.user, frame.get("conversation"))])

    async def frame_labels(self, frame: dict) -> None:
        await self.note_activity()
        recorded = await db(teamwork.set_labels)(
            self.user, frame.get("conversation"), frame.get("labels")
        )
        await self.relay_all([recorded])

    async def frame_note(self, frame: dict) -> None:
        await self.note_activity()
        client_id = frame.get("client_id")
        recorded = await db(teamwork.add_note)(
            self.user,
            frame.get("conversation"),
            frame.get("body"),
            client_id if isinstance(client_id, str) and len(client_id) <= 64 else None,
        )
        await self.relay_all([recorded])

    async def frame_block(self, frame: dict) -> None:
        await self.note_activity()
        recorded = await db(blocking.block_visitor)(
            self.user, frame.get("conversation"), frame.get("reason")
        )
        await self.relay_all([recorded])
        await self.send_frame({"type": "blocked", "conversation": frame["conversation"]})

    async def frame_agent_status(self, frame: dict) -> None:
        if self.agent_id is None:
            raise GoflyError(
                ErrorCode.FORBIDDEN, gettext("Only agents have a status; this account has none.")
            )
        await self.relay_all(
            await db(agent_status.choose)(self.agent_id, frame.get("status"), self.user)
        )

    def sees(self, assignee: int | None) -> bool:
        return assignee is None or assignee == self.user.pk or self.user.is_superuser

    async def frame_message(self, frame: dict) -> None:
        await self.note_activity()
        client_id = protocol.client_id_of(frame)
        body = protocol.body_of(frame)
        posted = await db(actions.post_agent_message)(
            self.user,
            frame.get("conversation"),
            client_id=client_id,
            body=body,
            upload_id=frame.get("attachment"),
        )
        await self.publish(posted)

    async def frame_resume(self, frame: dict) -> None:
        after = protocol.after_seq_of(frame)
        conversation = await db(actions.check_agent_conversation)(
            self.user, frame.get("conversation")
        )
        await self.send_history(conversation, after)

    async def frame_typing(self, frame: dict) -> None:
        await self.note_activity()
        active, _preview = protocol.typing_of(frame, allow_preview=False)
        conversation = await db(actions.check_agent_conversation)(
            self.user, frame.get("conversation")
        )
        await delivery.deliver_typing(
            delivery.visitor_group(conversation.visitor_id),
            {
                "type": "typing",
                "conversation": conversation.pk,
                "sender": {"kind": "agent"},
                "active": active,
            },
            assignee=conversation.assignee_id,
        )

    async def frame_read(self, frame: dict) -> None:
        await self.note_activity()
        conversation = await db(actions.mark_read_by_agent)(
            self.user, frame.get("conversation"), frame.get("seq")
        )
        read = {"type": "read", "conversation": conversation.pk, "seq": frame["seq"], "by": "agent"}
        await delivery.deliver_read(
            delivery.visitor_group(conversation.visitor_id), read, conversation.assignee_id
        )
        # The agent's other tabs update their unread counts from the same frame.
        await delivery.deliver_read(
            delivery.site_agents_group(conversation.site_id), read, conversation.assignee_id
        )

    async def frame_status(self, frame: dict) -> None:
        await self.note_activity()
        changed = await db(actions.set_conversation_status)(
            self.user, frame.get("conversation"), frame.get("status"), frame.get("until")
        )
        await delivery.relay(changed.recorded.outbox_id, changed.recorded.sends)
        if changed.freed_pool is not None:
            await self.relay_all(await db(assignment.fill_from_queue)(changed.freed_pool))

    # Channel-layer events ---------------------------------------------------------------------

    async def chat_message(self, event: dict) -> None:
        if self.sees(event["assignee"]):
            await self.send_frame(event["frame"])

    async def chat_conversation(self, event: dict) -> None:
        summary = event["summary"]
        if self.sees(event["assignee"]):
            await self.send_frame({"type": "conversation", "conversation": summary})
        else:
            # Taken by a colleague: drop it from this agent's lists without showing its content.
            await self.send_frame({"type": "conversation_removed", "conversation": summary["id"]})

    async def chat_typing(self, event: dict) -> None:
        if self.sees(event["assignee"]):
            await self.send_frame(event["frame"])

    async def chat_read(self, event: dict) -> None:
        if self.sees(event["assignee"]):
            await self.send_frame(event["frame"])

    async def chat_agent_status(self, event: dict) -> None:
        await self.send_frame(event["frame"])

    async def chat_note(self, event: dict) -> None:
        if self.sees(event["assignee"]):
            await self.send_frame(event["frame"])
