"""Admin for the intent bot: intents with examples, the import upload, settings, versions."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from chat.models import Site
from nlp import importing, training
from nlp.models import BotSettings, BotState, Example, Intent, ModelVersion

# An upload is read into memory whole; bigger files belong to the management command.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class ExampleInline(admin.TabularInline):
    model = Example
    fields = ["text", "language", "source", "created_at"]
    readonly_fields = ["source", "created_at"]
    extra = 3


@admin.register(Intent)
class IntentAdmin(admin.ModelAdmin):
    list_display = ["name", "site", "example_count", "clarify", "active", "description"]
    list_filter = ["site", "active", "clarify"]
    search_fields = ["name", "description", "examples__text"]
    inlines = [ExampleInline]
    change_list_template = "admin/nlp/intent/change_list.html"

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(_examples=Count("examples"))

    @admin.display(description=_("examples"), ordering="_examples")
    def example_count(self, obj: Intent) -> int:
        return obj._examples

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="nlp_intent_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        report = None
        refused = None
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                report = importing.import_examples(
                    form.cleaned_data["site"],
                    upload.read(),
                    upload.name,
                    create_intents=form.cleaned_data["create_intents"],
                )
            except importing.ImportRefused as exc:
                refused = exc
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": _("Import example questions"),
            "form": form,
            "report": report,
            "refused": refused,
        }
        return TemplateResponse(request, "admin/nlp/intent/import.html", context)


class ImportForm(forms.Form):
    site = forms.ModelChoiceField(queryset=Site.objects.all(), label=_("Site"))
    file = forms.FileField(
        label=_("File"),
        help_text=_(
            "CSV with a header row (text, intent, optionally language), or JSON: a list of "
            "objects with the same keys."
        ),
    )
    create_intents = forms.BooleanField(
        required=False,
        label=_("Create missing intents"),
        help_text=_("Otherwise a row naming an intent the site does not have is refused."),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is larger than %(max)s MB; use manage.py gofly_bot import.")
                % {"max": MAX_UPLOAD_BYTES // (1024 * 1024)}
            )
        return upload


@admin.register(BotSettings)
class BotSettingsAdmin(admin.ModelAdmin):
    list_display = ["site", "enabled", "encoder", "threshold", "max_misunderstood", "serving"]
    list_filter = ["enabled", "encoder"]
    actions = ["train_now", "train_and_force"]

    @admin.display(description=_("serving version"))
    def serving(self, obj: BotSettings) -> str:
        active = ModelVersion.objects.filter(
            site_id=obj.site_id, state=ModelVersion.State.ACTIVE
        ).first()
        return f"v{active.number}" if active else "—"

    def _train(self, request, queryset, force: bool) -> None:
        numbers = []
        with transaction.atomic():
            for row in queryset:
                version = training.request_training(row.site_id, force=force)
                numbers.append(f"{row.site} v{version.number}")
        self.message_user(
            request,
            _("Training started: %(versions)s. The versions list shows the result.")
            % {"versions": ", ".join(numbers)},
        )

    @admin.action(description=_("Train a new version (activated if not worse)"))
    def train_now(self, request, queryset):
        self._train(request, queryset, force=False)

    @admin.action(description=_("Train a new version and activate it whatever its figures"))
    def train_and_force(self, request, queryset):
        self._train(request, queryset, force=True)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "state",
        "encoder",
        "accuracy",
        "macro_f1_shown",
        "examples",
        "intents",
        "train_seconds",
        "created_at",
        "activated_at",
    ]
    list_filter = ["site", "state", "encoder"]
    readonly_fields = [
        "site",
        "number",
        "encoder",
        "state",
        "examples",
        "intents",
        "train_seconds",
        "artifact_bytes",
        "forced",
        "note",
        "created_at",
        "activated_at",
        "figures",
    ]
    exclude = ["metrics"]
    actions = ["activate", "roll_back"]

    def has_add_permission(self, request):
        return False  # versions come from training (bot settings: train a new version)

    @admin.display(description=_("accuracy"))
    def accuracy(self, obj: ModelVersion) -> object:
        return (obj.metrics or {}).get("accuracy")

    @admin.display(description=_("macro-F1"))
    def macro_f1_shown(self, obj: ModelVersion) -> object:
        return obj.macro_f1

    @admin.display(description=_("held-out figures"))
    def figures(self, obj: ModelVersion) -> str:
        metrics = obj.metrics or {}
        pairs = format_html_join(
            "",
            "<li>{} → {} ({})</li>",
            ((p["intent"], p["taken_for"], p["count"]) for p in metrics.get("worst_pairs", [])),
        )
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (name, m["precision"], m["recall"], m["f1"], m["support"])
                for name, m in sorted(metrics.get("per_intent", {}).items())
            ),
        )
        return format_html(
            "<p>{}: {} · {}: {} · {}: {}</p><p>{}</p><ul>{}</ul>"
            "<table><tr><th>{}</th><th>{}</th><th>{}</th><th>F1</th><th>{}</th></tr>{}</table>",
            _("accuracy"),
            metrics.get("accuracy"),
            _("macro-F1"),
            metrics.get("macro_f1"),
            _("held-out questions"),
            metrics.get("test_examples"),
            _("Most confused:"),
            pairs,
            _("intent"),
            _("precision"),
            _("recall"),
            _("support"),
            rows,
        )

    @admin.action(description=_("Activate the selected version, even if it is worse"))
    def activate(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, _("Select exactly one version."), messages.ERROR)
            return
        version = queryset.get()
        try:
            training.activate_version(version.pk, forced=True, reason="activated in admin")
        except training.ActivationRefused as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        self.message_user(request, _("%(version)s is now serving.") % {"version": version})

    @admin.action(description=_("Roll back the sites of the selected versions"))
    def roll_back(self, request, queryset):
        for site_id in sorted(set(queryset.values_list("site_id", flat=True))):
            try:
                version = training.roll_back(site_id)
            except training.ActivationRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(
                request, _("Rolled back: %(version)s is serving again.") % {"version": version}
            )


@admin.register(BotState)
class BotStateAdmin(admin.ModelAdmin):
    list_display = ["conversation", "turns", "language", "misunderstood", "handoff_reason"]
    list_filter = ["handoff_reason"]
    readonly_fields = [
        "conversation",
        "intents",
        "slots",
        "misunderstood",
        "language",
        "turns",
        "handoff_reason",
        "handoff_guesses",
        "updated_at",
    ]

    def has_add_permission(self, request):
        return False
