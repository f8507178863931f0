"""Server-rendered pages of the chat app: the demo shop that embeds the widget."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from chat.models import Site


def demo(request: HttpRequest) -> HttpResponse:
    """A pretend shop embedding the widget: `?site=KEY`, else the oldest site."""
    key = request.GET.get("site")
    site = Site.objects.filter(key=key).first() if key else Site.objects.order_by("id").first()
    if site is None:
        raise Http404("No site exists yet; run `python manage.py gofly_demo` first.")
    return render(request, "chat/demo.html", {"site": site})
