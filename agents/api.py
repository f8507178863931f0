"""The agent API for canned replies (session cookie, CSRF on writes); logic in agents.canned."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import canned
from chat import actions, errors


def _conversation_param(request: Request, required: bool) -> int | None:
    raw = request.query_params.get("conversation")
    if raw is None and not required:
        return None
    if raw is None or not raw.isdigit():
        raise errors.invalid(
            _("The query parameter 'conversation' must be a conversation id (a number).")
        )
    return int(raw)


def _json_object(request: Request) -> dict[str, Any]:
    try:
        data = request.data
    except ParseError:
        data = None
    if not isinstance(data, dict):
        raise errors.malformed(_("The request body must be a JSON object."))
    return data


class CannedListView(APIView):
    """`GET /api/agent/v1/canned?q=&conversation=`, `POST /api/agent/v1/canned`.

    Replies created here apply to every site; limiting one to a site, and editing, happen in
    Django admin for now.
    """

    # TODO(gofly): PATCH for editing and a `site` field on create, once the dashboard has a
    # manager to offer them; until then admin covers both.

    def get(self, request: Request) -> Response:
        conversation_id = _conversation_param(request, required=False)
        site_id = None
        if conversation_id is not None:
            site_id = actions.check_agent_conversation(request.user, conversation_id).site_id
        replies = canned.search_replies(request.user, request.query_params.get("q", ""), site_id)
        return Response({"replies": [canned.reply_summary(reply) for reply in replies]})

    def post(self, request: Request) -> Response:
        data = _json_object(request)
        reply = canned.create_reply(
            request.user,
            data.get("shortcut"),
            data.get("title"),
            data.get("body"),
            shared=data.get("shared", False),
        )
        return Response(canned.reply_summary(reply), status=201)


class CannedDetailView(APIView):
    """`DELETE /api/agent/v1/canned/<id>`."""

    def delete(self, request: Request, reply_id: int) -> Response:
        canned.delete_reply(request.user, reply_id)
        return Response(status=204)


class CannedRenderView(APIView):
    """`GET /api/agent/v1/canned/<id>/render?conversation=<id>` → `{"text"}`."""

    def get(self, request: Request, reply_id: int) -> Response:
        conversation_id = _conversation_param(request, required=True)
        return Response({"text": canned.render_reply(request.user, reply_id, conversation_id)})
