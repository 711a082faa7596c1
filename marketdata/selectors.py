"""Reads of market data."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.db.models import OuterRef, QuerySet, Subquery

from marketdata.models import ALWAYS_OPEN, Instrument, PriceMark, Quote
from marketdata.references import LOOKBACK, MARGIN, Mark, MarketHours, References


def instruments_active(*, symbols: Iterable[str] | None = None) -> QuerySet[Instrument]:
    qs = Instrument.objects.filter(is_active=True).select_related("quote")
    if symbols is not None:
        qs = qs.filter(symbol__in=list(symbols))
    return qs


def quotes_for_instruments(*, instrument_ids: Iterable[int]) -> dict[int, Quote]:
    return {q.instrument_id: q for q in Quote.objects.filter(instrument_id__in=list(instrument_ids))}


def _plain(price: Decimal) -> Decimal:
    """A stored price without the zeros its ten fixed places add (200.0000000000 → 200)."""
    return price.quantize(Decimal(1)) if price == price.to_integral_value() else price.normalize()


def references_load(*, now: datetime) -> References:
    """Day-change references as of `now`, from the stored marks, in two queries.

    Always-open markets need the last 24 hours; a session market may need a
    close from days back (a weekend, a holiday), so each instrument's last
    mark before that window comes along too.
    """
    since = now - LOOKBACK - MARGIN
    before = PriceMark.objects.filter(instrument=OuterRef("pk"), minute__lt=since).order_by("-minute")
    instruments = Instrument.objects.annotate(
        prev_minute=Subquery(before.values("minute")[:1]), prev_price=Subquery(before.values("price")[:1])
    ).values_list("symbol", "asset_class", "exchange_timezone", "prev_minute", "prev_price")
    markets: dict[str, MarketHours] = {}
    marks: list[Mark] = []
    for symbol, asset_class, timezone, prev_minute, prev_price in instruments:
        markets[symbol] = MarketHours(always_open=asset_class in ALWAYS_OPEN, timezone=timezone)
        if prev_minute is not None:
            marks.append(Mark(symbol, prev_minute, _plain(prev_price)))
    recent = PriceMark.objects.filter(minute__gte=since).order_by("minute").values_list("instrument__symbol", "minute", "price")
    marks.extend(Mark(symbol, minute, _plain(price)) for symbol, minute, price in recent)
    return References(markets, marks)
