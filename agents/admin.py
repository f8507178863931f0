from django.contrib import admin

from agents.models import Agent


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["display_name", "user", "max_concurrent_chats"]
    list_filter = ["sites"]
    search_fields = ["display_name", "user__username", "user__email"]
    filter_horizontal = ["sites"]
