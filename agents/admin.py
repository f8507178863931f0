from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _

from agents.models import (
    Agent,
    AgentStatus,
    AgentStatusEvent,
    CannedReply,
    StatusTrigger,
    Team,
)
from agents.status import change_and_route
from chat import assignment
from chat.errors import GoflyError


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = [
        "display_name",
        "user",
        "status",
        "status_changed_at",
        "max_concurrent_chats",
        "last_activity_at",
    ]
    list_filter = ["status", "sites"]
    search_fields = ["display_name", "user__username", "user__email"]
    filter_horizontal = ["sites", "teams"]
    readonly_fields = ["status", "status_trigger", "status_changed_at", "last_activity_at"]
    actions = ["set_offline"]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        # Sites or capacity may have changed: routing's seats follow, and the line may move.
        # The notices go out with the outbox retry job, within seconds.
        assignment.refresh_agent(form.instance.pk)

    @admin.action(description=_("Set the selected agents offline"))
    def set_offline(self, request, queryset):
        # Through the state machine, so the change is recorded and every dashboard sees it;
        # the retry job relays the broadcast within seconds.
        changed = 0
        for agent in queryset:
            try:
                recorded = change_and_route(
                    agent.pk,
                    AgentStatus.OFFLINE,
                    StatusTrigger.ADMIN,
                    actor=request.user,
                    reason="admin action",
                )
            except GoflyError as exc:
                self.message_user(request, f"{agent}: {exc.detail}", messages.WARNING)
                continue
            changed += bool(recorded)
        self.message_user(request, _("%(count)d agents set offline.") % {"count": changed})


@admin.register(AgentStatusEvent)
class AgentStatusEventAdmin(admin.ModelAdmin):
    list_display = ["agent", "from_status", "to_status", "trigger", "actor", "reason", "created_at"]
    list_filter = ["trigger", "to_status", "agent"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]


@admin.register(CannedReply)
class CannedReplyAdmin(admin.ModelAdmin):
    list_display = ["shortcut", "title", "owner", "site", "updated_at"]
    # An empty owner means shared: the empty-field filter answers "shared or personal?".
    list_filter = [("owner", admin.EmptyFieldListFilter), "owner", "site"]
    search_fields = ["shortcut", "title", "body"]
    list_select_related = ["owner", "site"]
    autocomplete_fields = ["owner"]
