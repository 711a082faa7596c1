"""Intraday history: each portfolio's total value, once a minute, while prices flow.

The feed worker calls `portfolio_values_record` with the minutes of market time
that closed since its last call (one live, many in a fast replay) and the latest
prices it held at the end of each, so the history needs no database read of
prices. The books are read once per call, not per minute or tick, and all the
minutes' values are written in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction as db_transaction

from marketdata.events import PriceUpdate
from marketdata.models import AssetClass
from portfolio.live import View
from portfolio.models import Portfolio, PortfolioValue
from portfolio.selectors import Market, books_for_portfolios, fx_pairs
from portfolio.valuation import Price


def portfolio_values_store(*, minutes: Sequence[tuple[datetime, Mapping[str, Price]]]) -> int:
    """Store, for each (minute, prices), the total value of every portfolio those prices fully value.

    The books are read once for all the minutes; the rows go out in one transaction, which also
    prunes values past the retention as of the newest minute. Returns the rows written."""
    if not minutes:
        return 0
    books = books_for_portfolios(Portfolio.objects.all())
    pairs, asset_classes = fx_pairs(), dict(AssetClass.choices)
    rows = []
    for minute, prices in minutes:
        market = Market(prices=dict(prices), pairs=pairs, asset_classes=asset_classes)
        for book in books:
            view = View(book, market)
            # Only a complete value is history: a point missing a holding would draw a drop that never happened.
            if view.rows and all(row.market_value is not None for row in view.rows.values()):
                rows.append(PortfolioValue(portfolio_id=book.id, minute=minute, value=view.totals().total_value))
    newest = max(minute for minute, _ in minutes)
    with db_transaction.atomic():
        PortfolioValue.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["portfolio", "minute"], update_fields=["value"], batch_size=1000
        )
        PortfolioValue.objects.filter(minute__lt=newest - timedelta(days=settings.HISTORY_RETENTION_DAYS)).delete()
    return len(rows)


async def portfolio_values_record(minutes: Sequence[tuple[datetime, Mapping[str, PriceUpdate]]]) -> None:
    """The worker's minute hook (`marketdata.worker.loop.MinuteHook`): one call per batch of closed minutes."""
    batch = [(minute, {s: Price(u.price, u.ts, u.seq, u.epoch, u.reference) for s, u in prices.items()}) for minute, prices in minutes]
    await database_sync_to_async(portfolio_values_store)(minutes=batch)
