from django.urls import path

from agents import api, views

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("api/agent/v1/canned", api.CannedListView.as_view(), name="agent-canned"),
    path(
        "api/agent/v1/canned/<int:reply_id>",
        api.CannedDetailView.as_view(),
        name="agent-canned-reply",
    ),
    path(
        "api/agent/v1/canned/<int:reply_id>/render",
        api.CannedRenderView.as_view(),
        name="agent-canned-render",
    ),
]
