"""Writes to market data."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from marketdata.events import PriceUpdate
from marketdata.models import Instrument, PriceMark, Quote
from marketdata.references import Mark

log = logging.getLogger(__name__)


def quotes_store(updates: Iterable[PriceUpdate]) -> int:
    """Upsert the latest quote of each symbol in one statement; returns rows written.

    Symbols without an instrument are skipped (and logged); they cannot be held.
    """
    latest = {u.symbol: u for u in updates}
    ids = dict(Instrument.objects.filter(symbol__in=latest).values_list("symbol", "id"))
    unknown = sorted(set(latest) - set(ids))
    if unknown:
        log.warning("no instrument for %s; their quotes are not stored", ", ".join(unknown))
    rows = [
        Quote(
            instrument_id=ids[symbol],
            price=u.price,
            bid=u.bid,
            ask=u.ask,
            exchange_ts=u.ts,
            seq=u.seq,
            epoch=u.epoch,
            source=u.source,
            reference_price=u.reference,
        )
        for symbol, u in latest.items()
        if symbol in ids
    ]
    Quote.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["instrument"],
        update_fields=["price", "bid", "ask", "exchange_ts", "seq", "epoch", "source", "reference_price", "updated_at"],
    )
    return len(rows)


def price_marks_store(*, marks: Iterable[Mark]) -> int:
    """Upsert per-minute price marks in one statement; returns rows written.

    Symbols without an instrument are skipped silently: their quotes already warn.
    """
    latest = {(m.symbol, m.minute): m for m in marks}
    ids = dict(Instrument.objects.filter(symbol__in={symbol for symbol, _ in latest}).values_list("symbol", "id"))
    rows = [PriceMark(instrument_id=ids[m.symbol], minute=m.minute, price=m.price) for m in latest.values() if m.symbol in ids]
    PriceMark.objects.bulk_create(rows, update_conflicts=True, unique_fields=["instrument", "minute"], update_fields=["price"])
    return len(rows)


def price_marks_prune(*, before: datetime) -> int:
    """Delete marks of minutes before `before`; returns how many went."""
    deleted, _ = PriceMark.objects.filter(minute__lt=before).delete()
    return deleted
