from django.urls import path

from marketdata import views

app_name = "marketdata"
urlpatterns = [
    path("profile/", views.profile, name="profile"),
    path("profile/tokens/<int:token_id>/revoke/", views.revoke, name="token_revoke"),
    path("docs/websocket-api/", views.websocket_docs, name="websocket_docs"),
    # <path:...>: a symbol may hold a slash (EUR/USD). The dashboard links each holding here. The chart's history first:
    # the page's pattern would take "BTC-USD/candles" for a symbol.
    path("market/<path:symbol>/candles/", views.instrument_candles, name="instrument_candles"),
    path("market/<path:symbol>/", views.instrument, name="instrument"),
]
