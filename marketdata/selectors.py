"""Reads of market data."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from marketdata.models import Instrument, Quote


def instruments_active(*, symbols: Iterable[str] | None = None) -> QuerySet[Instrument]:
    qs = Instrument.objects.filter(is_active=True).select_related("quote")
    if symbols is not None:
        qs = qs.filter(symbol__in=list(symbols))
    return qs


def quotes_for_instruments(*, instrument_ids: Iterable[int]) -> dict[int, Quote]:
    return {q.instrument_id: q for q in Quote.objects.filter(instrument_id__in=list(instrument_ids))}
