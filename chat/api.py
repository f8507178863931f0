"""HTTP API: widget sessions and uploads (public, CORS), the agent API, file downloads."""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework.exceptions import ParseError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from chat import actions, blocking, delivery, errors, hours, search, teamwork, uploads
from chat.errors import ErrorCode, GoflyError
from chat.models import Conversation
from chat.tokens import VisitorClaim, read_visitor_token

logger = logging.getLogger(__name__)


def _cors(response: HttpResponse, request: HttpRequest) -> HttpResponse:
    origin = request.headers.get("Origin")
    if origin:
        # The site's allowed origins are checked on the POST itself; the browser only needs
        # to be told it may read the answer.
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
        response["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response["Access-Control-Allow-Headers"] = "Content-Type, Authorization"
        response["Access-Control-Max-Age"] = "600"
    return response


def _client_ip(request: HttpRequest) -> str | None:
    # TODO(gofly): trust X-Forwarded-For only from configured proxies once deployment docs
    # name them; until then the socket peer address is the only honest answer. IP blocks
    # (chat.blocking) match this address and the visitor socket's scope["client"]; gofly_serve
    # runs daphne with --proxy-headers, so a client that forges the header slips an IP block
    # (a visitor block still holds) until only the proxy's header is believed.
    return request.META.get("REMOTE_ADDR") or None


def _ws_url(request: HttpRequest, token: str) -> str:
    public = settings.GOFLY["server"]["public_url"].rstrip("/")
    if public:
        base = public.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    else:
        scheme = "wss" if request.is_secure() else "ws"
        base = f"{scheme}://{request.get_host()}"
    return f"{base}/ws/visitor/?token={token}"


class PublicWidgetView(APIView):
    """An endpoint the widget calls from customers' pages: no session, CORS preflight allowed."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    def options(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponse:
        return _cors(HttpResponse(status=204), request)


class WidgetSessionView(PublicWidgetView):
    """`POST /api/widget/v1/sessions`: start or continue a visitor, answer a socket token."""

    def post(self, request: Request) -> Response:
        try:
            try:
                data = request.data
            except ParseError:
                data = None
            if not isinstance(data, dict):
                raise errors.malformed(_("The request body must be a JSON object."))
            site = actions.check_site_for_widget(data.get("site"), request.headers.get("Origin"))
            session = actions.start_visitor_session(
                site,
                data.get("visitor_id"),
                ip=_client_ip(request),
                user_agent=request.headers.get("User-Agent", ""),
                referrer=str(data.get("referrer") or "")[:2000],
                page_url=str(data.get("page_url") or request.headers.get("Referer", "")),
            )
        except GoflyError as exc:
            logger.info("widget.session_refused", extra={"code": str(exc.code)})
            return _cors(Response(exc.as_dict(), status=exc.status), request)
        available = hours.availability(site, timezone.now(), session.visitor.pk)
        body = {
            "visitor_id": session.visitor.public_id,
            "token": session.token,
            "ws_url": _ws_url(request, session.token),
            "site": {
                "name": site.name,
                "title": site.widget_title,
                "color": site.widget_color,
                "welcome": site.welcome_message,
                "language": site.default_language,
            },
            # False: the widget offers the leave-a-message form instead of live chat.
            "available": available.available,
            "unavailable_reason": available.reason,
        }
        return _cors(Response(body, status=201), request)


class ConversationListView(APIView):
    """`GET /api/agent/v1/conversations?view=waiting|mine|open|resolved`."""

    def get(self, request: Request) -> Response:
        view = request.query_params.get("view", "open")
        return Response({"conversations": actions.conversation_list(request.user, view)})


class ConversationDetailView(APIView):
    """`GET /api/agent/v1/conversations/<id>`: the conversation, its visitor, its private notes."""

    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = actions.check_agent_conversation(request.user, conversation_id)
        conversation = Conversation.objects.select_related("visitor", "assignee__agent").get(
            pk=conversation.pk
        )
        detail = actions.conversation_detail(conversation)
        detail["notes"] = teamwork.notes_of(conversation)
        return Response(detail)


class SearchView(APIView):
    """`GET /api/agent/v1/search?q=&visitor=&agent=&from=&to=&status=&cursor=&limit=`."""

    def get(self, request: Request) -> Response:
        criteria, cursor, limit = search.check_search(request.query_params.dict())
        page = search.search_messages(request.user, criteria, cursor, limit)
        return Response({"results": page.results, "next_cursor": page.next_cursor})


def _bearer_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header[len("Bearer ") :].strip()
    return request.GET.get("token")


def _visitor_claim(request: HttpRequest) -> VisitorClaim:
    claim = read_visitor_token(_bearer_token(request))
    if claim is None:
        raise GoflyError(
            ErrorCode.UNAUTHENTICATED,
            _("The visitor token is missing or expired; start a new session."),
            status=401,
        )
    return claim


class WidgetUploadView(PublicWidgetView):
    """`POST /api/widget/v1/uploads` (multipart, field `file`) with the visitor's token."""

    def post(self, request: Request) -> Response:
        try:
            claim = _visitor_claim(request)
            upload = uploads.store_upload(
                request.FILES.get("file"), site_id=claim.site_id, visitor_id=claim.visitor_id
            )
        except GoflyError as exc:
            logger.info("widget.upload_refused", extra={"code": str(exc.code)})
            return _cors(Response(exc.as_dict(), status=exc.status), request)
        return _cors(Response(actions.upload_frame(upload), status=201), request)


class WidgetLeftMessageView(PublicWidgetView):
    """`POST /api/widget/v1/messages` with the visitor's token: the leave-a-message form."""

    def post(self, request: Request) -> Response:
        try:
            claim = _visitor_claim(request)
            blocking.check_not_blocked(claim.site_id, claim.visitor_id, _client_ip(request))
            try:
                data = request.data
            except ParseError:
                data = None
            left = actions.check_left_message(data)
            posted = actions.leave_message(claim.visitor_id, left)
        except GoflyError as exc:
            logger.info("widget.message_refused", extra={"code": str(exc.code)})
            return _cors(Response(exc.as_dict(), status=exc.status), request)
        if posted.recorded is not None:
            # Committed: the visitor's open tabs and any agent dashboard see it now; the outbox
            # retry job covers a relay that fails here.
            async_to_sync(delivery.relay)(posted.recorded.outbox_id, posted.recorded.sends)
        frame = posted.frame
        body = {"conversation": frame["conversation"], "seq": frame["seq"], "id": frame["id"]}
        return _cors(Response(body, status=201), request)


class AgentUploadView(APIView):
    """`POST /api/agent/v1/uploads` (multipart: `file`, `conversation`), session + CSRF."""

    def post(self, request: Request) -> Response:
        conversation = uploads.agent_upload_conversation(
            request.user, request.data.get("conversation")
        )
        upload = uploads.store_upload(
            request.FILES.get("file"),
            site_id=conversation.site_id,
            agent_user_id=request.user.pk,
            conversation_id=conversation.pk,
        )
        return Response(actions.upload_frame(upload), status=201)


def upload_file(request: HttpRequest, upload_id: str) -> HttpResponse:
    """`GET /api/uploads/<id>`: the file, to the visitor (token) or agents who may see it."""
    if request.user.is_authenticated:
        upload = uploads.upload_for_agent(upload_id, request.user)
    else:
        claim = read_visitor_token(_bearer_token(request))
        upload = uploads.upload_for_visitor(upload_id, claim.visitor_id) if claim else None
    if upload is None:
        error = GoflyError(
            ErrorCode.NOT_FOUND, _("That file does not exist or you cannot see it."), status=404
        )
        return JsonResponse(error.as_dict(), status=404)
    inline = upload.content_type.startswith("image/")
    response = FileResponse(
        upload.file.open("rb"),
        content_type=upload.content_type,
        as_attachment=not inline,
        filename=upload.original_name,
    )
    # Served from our own origin: never let the browser run or re-interpret it.
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response
