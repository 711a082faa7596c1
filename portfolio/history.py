"""Intraday history: each portfolio's total value, once a minute, while prices flow.

The feed worker calls `portfolio_values_record` at the close of every minute
of market time with the latest prices it holds, so the history needs no
database read of prices; the books are read once per minute, not per tick.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def portfolio_values_store(*, minute: datetime, prices: Mapping[str, Price]) -> int:
    """Store the total value of every portfolio `prices` fully value, for `minute`; prunes past the retention."""
    market = Market(prices=dict(prices), pairs=fx_pairs(), asset_classes=dict(AssetClass.choices))
    rows = []
    for book in books_for_portfolios(Portfolio.objects.all()):
        view = View(book, market)
        # Only a complete value is history: a point missing a holding would draw a drop that never happened.
        if view.rows and all(row.market_value is not None for row in view.rows.values()):
            rows.append(PortfolioValue(portfolio_id=book.id, minute=minute, value=view.totals().total_value))
    with db_transaction.atomic():
        PortfolioValue.objects.bulk_create(
            rows, update_conflicts=True, unique_fields=["portfolio", "minute"], update_fields=["value"], batch_size=1000
        )
        PortfolioValue.objects.filter(minute__lt=minute - timedelta(days=settings.HISTORY_RETENTION_DAYS)).delete()
    return len(rows)


async def portfolio_values_record(minute: datetime, prices: Mapping[str, PriceUpdate]) -> None:
    """The worker's minute hook."""
    latest = {s: Price(u.price, u.ts, u.seq, u.epoch, u.reference) for s, u in prices.items()}
    await database_sync_to_async(portfolio_values_store)(minute=minute, prices=latest)
