"""The per-minute value history the feed worker records, and how the stream serves it."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from marketdata.events import PriceUpdate
from marketdata.management.base import minute_hooks
from portfolio import services
from portfolio.history import portfolio_values_record, portfolio_values_store
from portfolio.models import Portfolio, PortfolioValue
from portfolio.selectors import live_books_for_user
from portfolio.valuation import Price
from tests.conftest import T0, record

D = Decimal
MINUTE = T0 + timedelta(minutes=5)


def prices(**values: str) -> dict[str, Price]:
    return {symbol.replace("_", "-"): Price(D(value), MINUTE) for symbol, value in values.items()}


def stored() -> list[tuple[int, Any, Decimal]]:
    return list(PortfolioValue.objects.order_by("portfolio_id", "minute").values_list("portfolio_id", "minute", "value"))


def test_each_portfolio_is_stored_at_its_total_value(alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    # Alice: 10 AAPL × 210 + 0.5 BTC × 50000 + 3499 cash = 30599. Bob: 3 MSFT × 410 − 900 cash = 330.
    assert portfolio_values_store(minute=MINUTE, prices=prices(AAPL="210", BTC_USD="50000", MSFT="410")) == 2
    assert stored() == [(alice_portfolio.pk, MINUTE, D("30599")), (bob_portfolio.pk, MINUTE, D("330"))]


def test_the_same_minute_again_replaces_its_value(alice_portfolio: Portfolio) -> None:
    portfolio_values_store(minute=MINUTE, prices=prices(AAPL="210", BTC_USD="50000"))
    portfolio_values_store(minute=MINUTE, prices=prices(AAPL="220", BTC_USD="50000"))
    assert stored() == [(alice_portfolio.pk, MINUTE, D("30699"))]


def test_a_portfolio_with_an_unpriced_holding_is_not_recorded(alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    portfolio_values_store(minute=MINUTE, prices=prices(AAPL="210", BTC_USD="50000"))
    assert [row[0] for row in stored()] == [alice_portfolio.pk]  # bob's MSFT has no price in this worker
    portfolio_values_store(minute=MINUTE + timedelta(minutes=1), prices=prices(AAPL="210"))
    assert len(stored()) == 1  # alice without a BTC price: not a value, so not a point


def test_values_older_than_the_retention_are_pruned(alice_portfolio: Portfolio, settings: Any) -> None:
    settings.HISTORY_RETENTION_DAYS = 2
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=MINUTE - timedelta(days=2, minutes=1), value=1)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=MINUTE - timedelta(days=1), value=2)
    portfolio_values_store(minute=MINUTE, prices=prices(AAPL="210", BTC_USD="50000"))
    assert [row[2] for row in stored()] == [D(2), D("30599")]


def test_the_feed_worker_runs_the_history_hook() -> None:
    assert minute_hooks() == [portfolio_values_record]


def _hooked_portfolio(alice: Any, instruments: Any) -> Portfolio:
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Hooked")
    record(portfolio, "buy", "2", instruments["AAPL"], price="100")
    return portfolio


@pytest.mark.django_db(transaction=True)
async def test_the_minute_hook_stores_values_from_the_workers_prices(alice: Any, instruments: Any) -> None:
    hooked = await database_sync_to_async(_hooked_portfolio)(alice, instruments)
    update = PriceUpdate("AAPL", 7, "e", D("150"), None, None, MINUTE, "test", 1)
    await portfolio_values_record(MINUTE, {"AAPL": update})
    value = await database_sync_to_async(PortfolioValue.objects.get)(portfolio=hooked)
    assert (value.minute, value.value) == (MINUTE, D("100"))  # 2 × 150 − 200 cash paid


def test_the_stream_serves_the_last_24_hours_of_history(alice: Any, alice_portfolio: Portfolio) -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=now - timedelta(hours=25), value=1)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=now - timedelta(minutes=2), value=2)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=now - timedelta(minutes=1), value=3)
    [book], _ = live_books_for_user(user=alice)
    assert book.history == ((now - timedelta(minutes=2), D(2)), (now - timedelta(minutes=1), D(3)))
