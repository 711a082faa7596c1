"""Writes to market data."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from marketdata.events import PriceUpdate
from marketdata.models import Instrument, Quote

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
        )
        for symbol, u in latest.items()
        if symbol in ids
    ]
    Quote.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["instrument"],
        update_fields=["price", "bid", "ask", "exchange_ts", "seq", "epoch", "source", "updated_at"],
    )
    return len(rows)
