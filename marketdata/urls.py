from django.urls import path

from marketdata import views

app_name = "marketdata"
urlpatterns = [
    path("profile/", views.profile, name="profile"),
    path("profile/tokens/<int:token_id>/revoke/", views.revoke, name="token_revoke"),
    path("docs/websocket-api/", views.websocket_docs, name="websocket_docs"),
]
