"""The agent dashboard: one server-rendered page; live data arrives over /ws/agent/."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "agents/dashboard.html")


def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard")
