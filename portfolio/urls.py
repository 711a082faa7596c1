from django.urls import path

from portfolio import performance_views, views

app_name = "portfolio"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("portfolio/<int:portfolio_id>/performance/", performance_views.performance, name="performance"),
]
