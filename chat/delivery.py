"""Fan-out of committed changes to the sockets that may see them, through the channel layer.

Only this module sends to groups. It is called after the database transaction has committed,
so no socket ever sees a message that was rolled back. The channel layer is best effort: a
socket that misses an event catches up with `resume`, which reads from the database.
TODO(gofly): issue 3 replaces these direct sends with outbox rows relayed and retried, so an
event lost while Redis is down is delivered once it returns without waiting for a resume.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.layers import get_channel_layer

from chat.actions import PostedMessage

logger = logging.getLogger(__name__)


def visitor_group(visitor_id: int) -> str:
    return f"visitor.{visitor_id}"


def site_agents_group(site_id: int) -> str:
    return f"site.{site_id}.agents"


async def _send(group: str, event: dict[str, Any]) -> bool:
    layer = get_channel_layer()
    try:
        await layer.group_send(group, event)
    except Exception:
        # The message is already committed and acked; a failed fan-out only delays it until
        # the receiver resumes, so it must not turn into an error for the sender.
        logger.exception("delivery.group_send_failed", extra={"group": group})
        return False
    return True


async def deliver_message(posted: PostedMessage) -> None:
    """Send a newly stored message to its visitor's sockets and its site's agents."""
    if not posted.created:
        return
    event = {"type": "chat.message", "frame": posted.frame, "assignee": posted.assignee_id}
    await _send(visitor_group(posted.visitor_id), event)
    await _send(site_agents_group(posted.site_id), event)


async def deliver_conversation(site_id: int, visitor_id: int, summary: dict[str, Any]) -> None:
    """Tell agents (and the visitor, in short) that a conversation's state changed."""
    assignee = summary["assignee"]["id"] if summary["assignee"] else None
    await _send(
        site_agents_group(site_id),
        {"type": "chat.conversation", "summary": summary, "assignee": assignee},
    )
    await _send(
        visitor_group(visitor_id),
        {
            "type": "chat.conversation",
            "summary": {"id": summary["id"], "status": summary["status"]},
            "assignee": assignee,
        },
    )


async def deliver_typing(group: str, frame: dict[str, Any], assignee: int | None) -> None:
    await _send(group, {"type": "chat.typing", "frame": frame, "assignee": assignee})


async def deliver_read(group: str, frame: dict[str, Any], assignee: int | None) -> None:
    await _send(group, {"type": "chat.read", "frame": frame, "assignee": assignee})
