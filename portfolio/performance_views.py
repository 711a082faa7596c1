"""GET /portfolios/<id>/performance/: a range's performance as JSON, for the value chart (docs/accounting.md, "Performance")."""

from __future__ import annotations

from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from portfolio.performance import RANGES, UnknownBenchmark, UnknownRange, performance_for
from portfolio.selectors import portfolios_for_user


@require_GET
def performance(request: HttpRequest, portfolio_id: int) -> JsonResponse:
    """`?range=1D|1W|1M|YTD|1Y|MAX` (default 1M) `&benchmark=SYMBOL` (optional). Only the owner sees it; anyone else,
    signed in or not, gets 404, as for a portfolio that does not exist."""
    portfolio = portfolios_for_user(user=request.user).filter(pk=portfolio_id).first()
    if portfolio is None:
        raise Http404("No such portfolio.")
    range_name = request.GET.get("range", "1M").upper()
    if range_name not in RANGES:
        return JsonResponse({"error": f"Unknown range {range_name!r}: use one of {', '.join(RANGES)}."}, status=400)
    try:
        body = performance_for(portfolio=portfolio, range_name=range_name, benchmark=request.GET.get("benchmark", "").strip())
    except (UnknownRange, UnknownBenchmark) as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse(body)
