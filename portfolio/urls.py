from django.urls import path

from portfolio import import_views, performance_views, views, watch_views

app_name = "portfolio"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("portfolios/", views.portfolio_list, name="portfolios"),
    path("portfolios/new/", views.portfolio_create, name="portfolio_create"),
    path("portfolios/<int:portfolio_id>/edit/", views.portfolio_edit, name="portfolio_edit"),
    path("portfolios/<int:portfolio_id>/archive/", views.portfolio_archive, name="portfolio_archive"),
    path("portfolios/<int:portfolio_id>/unarchive/", views.portfolio_unarchive, name="portfolio_unarchive"),
    path("portfolios/<int:portfolio_id>/delete/", views.portfolio_delete, name="portfolio_delete"),
    path("portfolios/<int:portfolio_id>/transactions/", views.transaction_list, name="transactions"),
    path("portfolios/<int:portfolio_id>/transactions/new/", views.transaction_create, name="transaction_create"),
    path("portfolios/<int:portfolio_id>/transactions/<int:transaction_id>/edit/", views.transaction_edit, name="transaction_edit"),
    path("portfolios/<int:portfolio_id>/transactions/<int:transaction_id>/delete/", views.transaction_delete, name="transaction_delete"),
    path("portfolios/<int:portfolio_id>/performance/", performance_views.performance, name="performance"),
    # The dashboard's watchlist, alerts and notifications (portfolio/watch_views.py)
    path("watchlist/add/", watch_views.watchlist_add, name="watchlist_add"),
    path("watchlist/<int:instrument_id>/remove/", watch_views.watchlist_remove, name="watchlist_remove"),
    path("alerts/new/", watch_views.alert_create, name="alert_create"),
    path("alerts/<int:alert_id>/pause/", watch_views.alert_pause, name="alert_pause"),
    path("alerts/<int:alert_id>/resume/", watch_views.alert_resume, name="alert_resume"),
    path("alerts/<int:alert_id>/delete/", watch_views.alert_delete, name="alert_delete"),
    path("notifications/read/", watch_views.notifications_read, name="notifications_read"),
    # The import wizard (portfolio/import_views.py)
    path("portfolios/<int:portfolio_id>/import/", import_views.import_upload, name="import_upload"),
    path("portfolios/<int:portfolio_id>/import/<int:upload_id>/format/", import_views.import_format, name="import_format"),
    path("portfolios/<int:portfolio_id>/import/<int:upload_id>/", import_views.import_preview, name="import_preview"),
    path("portfolios/<int:portfolio_id>/import/<int:upload_id>/fix/", import_views.import_fix, name="import_fix"),
    path("portfolios/<int:portfolio_id>/import/<int:upload_id>/run/", import_views.import_run, name="import_run"),
    path("portfolios/<int:portfolio_id>/import/<int:upload_id>/cancel/", import_views.import_cancel, name="import_cancel"),
]
