from django.contrib import admin
from django.db import models
from django.utils.translation import gettext_lazy as _

from chat import outbox
from chat.models import Conversation, Message, OutboxEvent, Site, Upload, Visitor


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    list_display = ["name", "key", "widget_title", "default_language", "created_at"]
    list_filter = ["default_language"]
    search_fields = ["name", "key", "allowed_origins", "webhook_url"]
    readonly_fields = ["created_at"]
    # A URL typed without a scheme is taken as https://, as Django 6 will do by default.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "key",
                    "allowed_origins",
                    "widget_title",
                    "widget_color",
                    "welcome_message",
                    "default_language",
                    "typing_preview",
                    "created_at",
                ]
            },
        ),
        (_("Webhook"), {"fields": ["webhook_url", "webhook_secret"]}),
    ]


@admin.register(Visitor)
class VisitorAdmin(admin.ModelAdmin):
    list_display = ["__str__", "site", "email", "ip", "page_url", "first_seen", "last_seen"]
    list_filter = ["site"]
    search_fields = ["public_id", "name", "email", "ip"]
    date_hierarchy = "last_seen"


class MessageInline(admin.TabularInline):
    model = Message
    fields = ["seq", "sender_kind", "sender_user", "body", "content_type", "created_at"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["seq"]

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "site",
        "visitor",
        "channel",
        "status",
        "assignee",
        "last_seq",
        "last_message_at",
        "created_at",
    ]
    list_filter = ["status", "channel", "site", "assignee"]
    search_fields = [
        "id",
        "visitor__public_id",
        "visitor__name",
        "visitor__email",
        "last_message_preview",
    ]
    raw_id_fields = ["visitor", "assignee"]
    date_hierarchy = "created_at"
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "conversation",
        "seq",
        "sender_kind",
        "body",
        "content_type",
        "created_at",
    ]
    list_filter = ["sender_kind", "content_type", "conversation__site"]
    search_fields = ["body", "client_id"]
    raw_id_fields = ["conversation", "sender_user", "attachment"]
    date_hierarchy = "created_at"


@admin.register(Upload)
class UploadAdmin(admin.ModelAdmin):
    list_display = ["original_name", "content_type", "size", "site", "conversation", "created_at"]
    list_filter = ["content_type", "site"]
    search_fields = ["original_name"]
    raw_id_fields = ["conversation", "visitor", "agent_user"]


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "status",
        "site",
        "attempts",
        "created_at",
        "next_attempt_at",
        "done_at",
        "last_error",
    ]
    list_filter = ["status", "kind"]
    search_fields = ["last_error", "delivery_id"]
    readonly_fields = [
        "created_at",
        "kind",
        "site",
        "delivery_id",
        "sends",
        "payload",
        "attempts",
        "last_error",
        "done_at",
    ]
    date_hierarchy = "created_at"
    actions = ["retry_now"]

    @admin.action(description=_("Retry the selected deliveries now"))
    def retry_now(self, request, queryset):
        count = outbox.retry_now(list(queryset.values_list("pk", flat=True)))
        self.message_user(request, _("%(count)d deliveries will be retried.") % {"count": count})
