from django.urls import path

from chat import api, views

urlpatterns = [
    path("api/widget/v1/sessions", api.WidgetSessionView.as_view(), name="widget-session"),
    path(
        "api/agent/v1/conversations", api.ConversationListView.as_view(), name="agent-conversations"
    ),
    path(
        "api/agent/v1/conversations/<int:conversation_id>",
        api.ConversationDetailView.as_view(),
        name="agent-conversation",
    ),
    path("api/agent/v1/search", api.SearchView.as_view(), name="agent-search"),
    path("api/widget/v1/uploads", api.WidgetUploadView.as_view(), name="widget-upload"),
    path("api/widget/v1/messages", api.WidgetLeftMessageView.as_view(), name="widget-left-message"),
    path("api/agent/v1/uploads", api.AgentUploadView.as_view(), name="agent-upload"),
    path("api/uploads/<uuid:upload_id>", api.upload_file, name="upload-file"),
    path("demo/", views.demo, name="demo"),
]
