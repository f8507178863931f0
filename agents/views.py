"""The agent dashboard: one server-rendered page; live data arrives over /ws/agent/."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _


def dashboard_strings() -> dict[str, str]:
    """Sentences the dashboard's script shows, translated for the agent's language."""
    return {
        "connecting": _("Connecting…"),
        "reconnecting": _("Connection lost. Reconnecting…"),
        "visitor_typing": _("Visitor is typing…"),
        "new_conversation": _("New conversation"),
        "sending": _("Sending…"),
        "not_sent": _("Not sent yet; will retry."),
        "open": _("Open"),
        "pending": _("Pending"),
        "resolved": _("Resolved"),
        "snoozed": _("Snoozed"),
        "rating": _("Rating"),
        "name": _("Name"),
        "email": _("Email"),
        "ip": _("IP address"),
        "user_agent": _("Browser"),
        "page": _("Current page"),
        "referrer": _("Came from"),
        "first_seen": _("First seen"),
        "last_seen": _("Last seen"),
        "you": _("You"),
        "bot": _("Bot"),
        "uploading": _("Uploading…"),
        "upload_failed": _("The upload failed; check the connection and try again."),
        "status_online": _("Online"),
        "status_away": _("Away"),
        "status_busy": _("Busy"),
        "status_offline": _("Offline"),
        "team": _("Team"),
        "transfer_to": _("Transfer to…"),
        "canned_failed": _("The canned reply could not be inserted; try again."),
        "canned_saved": _("Saved. Type /%(shortcut)s in the reply box to use it."),
        "search_results": _("Messages containing “%(text)s”"),
        "search_filtered": _("Messages matching the filters"),
        "search_archived": _("Archived"),
        "search_archived_note": _(
            "This message is in the archive: the dashboard shows recent messages only. "
            "Admin shows the whole conversation."
        ),
        "search_failed": _("The search did not work; try again."),
        "block_confirm": _(
            "Block this visitor? They are disconnected and cannot start a chat again until an "
            "administrator deletes the block."
        ),
    }


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    return render(request, "agents/dashboard.html", {"strings": dashboard_strings()})


def home(request: HttpRequest) -> HttpResponse:
    return redirect("dashboard")
