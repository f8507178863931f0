"""URLs of the plain Channels baseline: only the session endpoint the load generator asks."""

import uuid

from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


@csrf_exempt
def session(request: HttpRequest) -> JsonResponse:
    token = uuid.uuid4().hex
    scheme = "wss" if request.is_secure() else "ws"
    body = {"token": token, "ws_url": f"{scheme}://{request.get_host()}/ws/visitor/?token={token}"}
    return JsonResponse(body, status=201)


urlpatterns = [path("api/widget/v1/sessions", session)]
