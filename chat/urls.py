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
    path("demo/", views.demo, name="demo"),
]
