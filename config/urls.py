from django.contrib import admin
from django.urls import include, path

from config.views import favicon

admin.site.site_header = "Livefolio administration"
admin.site.site_title = "Livefolio admin"
admin.site.index_title = "Instruments, portfolios and the ledger"

urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("marketdata.urls")),
    path("", include("portfolio.urls")),
]
