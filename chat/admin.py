from pathlib import Path

from asgiref.sync import async_to_sync
from django import forms
from django.contrib import admin
from django.db import models, transaction
from django.http import FileResponse, Http404, HttpResponse
from django.urls import path
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from chat import blocking, delivery, exports, outbox
from chat.models import (
    ArchivedMessage,
    ArchivedMonth,
    Block,
    Conversation,
    Message,
    OutboxEvent,
    Site,
    Upload,
    Visitor,
)


class SiteForm(forms.ModelForm):
    def clean_business_hours(self) -> object:
        # An emptied box means no hours at all, i.e. always open, never a null.
        value = self.cleaned_data.get("business_hours")
        return {} if value is None else value


@admin.register(Site)
class SiteAdmin(admin.ModelAdmin):
    form = SiteForm
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
        (_("Business hours"), {"fields": ["timezone", "business_hours"]}),
        (_("Webhook"), {"fields": ["webhook_url", "webhook_secret"]}),
    ]


@admin.register(Block)
class BlockAdmin(admin.ModelAdmin):
    """Blocks by visitor or address; unblocking is deleting the block."""

    list_display = ["__str__", "site", "visitor", "ip_network", "reason", "created_by"]
    list_display += ["created_at", "expires_at"]
    list_filter = ["site", "created_at", "expires_at"]
    search_fields = ["ip_network", "reason", "visitor__public_id", "visitor__name", "visitor__ip"]
    raw_id_fields = ["visitor"]
    readonly_fields = ["created_by", "created_at"]
    date_hierarchy = "created_at"

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            recorded = blocking.notify_blocked(obj)
        # Visitors it catches who are connected now are disconnected at once; the outbox
        # retry job covers a relay that fails here.
        async_to_sync(delivery.relay)(recorded.outbox_id, recorded.sends)


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


class ArchivedMessageInline(MessageInline):
    model = ArchivedMessage
    verbose_name_plural = _("Archived messages")


def _download(content: str, content_type: str, extension: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="conversations-{stamp}.{extension}"'
    return response


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
    inlines = [MessageInline, ArchivedMessageInline]
    actions = ["export_json", "export_csv"]

    @admin.action(description=_("Export the selected conversations as JSON"))
    def export_json(self, request, queryset):
        conversations = queryset.select_related("site", "visitor").order_by("pk")
        return _download(exports.as_json(conversations), "application/json", "json")

    @admin.action(description=_("Export the selected conversations as CSV"))
    def export_csv(self, request, queryset):
        conversations = queryset.select_related("site", "visitor").order_by("pk")
        return _download(exports.as_csv(conversations), "text/csv; charset=utf-8", "csv")


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


class ReadOnlyAdmin(admin.ModelAdmin):
    """The archive is written only by the archive job."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ArchivedMessage)
class ArchivedMessageAdmin(ReadOnlyAdmin):
    list_display = ["id", "conversation", "seq", "sender_kind", "body", "created_at"]
    list_filter = ["sender_kind", "content_type"]
    search_fields = ["body", "client_id"]
    raw_id_fields = ["conversation", "sender_user", "attachment"]
    date_hierarchy = "created_at"


@admin.register(ArchivedMonth)
class ArchivedMonthAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "mode", "rows", "location", "download", "archived_at"]
    list_filter = ["mode"]

    @admin.display(description=_("File"))
    def download(self, obj: ArchivedMonth) -> str:
        if obj.mode != ArchivedMonth.Mode.EXPORT:
            return "-"
        return format_html('<a href="{}/download/">{}</a>', obj.pk, _("Download"))

    def get_urls(self):
        view = self.admin_site.admin_view(self.download_view)
        return [
            path("<int:pk>/download/", view, name="chat_archivedmonth_download"),
            *super().get_urls(),
        ]

    def download_view(self, request, pk: int):
        if not self.has_view_permission(request):
            raise Http404
        month = ArchivedMonth.objects.filter(pk=pk, mode=ArchivedMonth.Mode.EXPORT).first()
        if month is None or not Path(month.location).is_file():
            raise Http404(_("That archive file does not exist."))
        return FileResponse(
            open(month.location, "rb"), as_attachment=True, filename=Path(month.location).name
        )
