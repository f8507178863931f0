"""A visitor consumer and an agent consumer, as a first Channels tutorial would write them."""

from __future__ import annotations

import json

from channels.generic.websocket import AsyncWebsocketConsumer

AGENTS = "agents"


class VisitorConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()
        await self.send(text_data=json.dumps({"type": "ready", "conversation": None}))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        frame = json.loads(text_data or "{}")
        if frame.get("type") == "ping":
            await self.send(text_data='{"type": "pong"}')
            return
        if frame.get("type") != "message":
            return
        forwarded = {
            "type": "message",
            "client_id": frame.get("client_id"),
            "body": frame.get("body", ""),
            "sender": {"kind": "visitor"},
        }
        await self.channel_layer.group_send(AGENTS, {"type": "chat.message", "frame": forwarded})
        await self.send(text_data=json.dumps({"type": "ack", "client_id": frame.get("client_id")}))


class AgentConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(AGENTS, self.channel_name)
        await self.accept()
        await self.send(text_data=json.dumps({"type": "ready"}))

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(AGENTS, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None):
        if text_data and json.loads(text_data).get("type") == "ping":
            await self.send(text_data='{"type": "pong"}')

    async def chat_message(self, event: dict) -> None:
        await self.send(text_data=json.dumps(event["frame"]))
