from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from portfolio.selectors import portfolios_for_user


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    # The table is filled by the live stream's snapshot; the page itself stays cheap.
    return render(
        request,
        "portfolio/dashboard.html",
        {
            "has_portfolios": portfolios_for_user(user=request.user).exists(),
            "live_config": {"url": "/ws/portfolio/", "staleAfterMs": 10_000, "coalesceMs": settings.PORTFOLIO_COALESCE_MS},
        },
    )
