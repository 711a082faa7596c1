"""The per-minute value history the feed worker records, and how the stream serves it."""

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from marketdata.events import MarketEvent, PriceUpdate, Quote, Trade
from marketdata.management.base import minute_hooks
from marketdata.models import Candle
from marketdata.worker.loop import ClosedMinutes, Worker
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


def store_one(minute: Any, prices: dict[str, Price]) -> int:
    return portfolio_values_store(minutes=[(minute, prices)])


def test_each_portfolio_is_stored_at_its_total_value(alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    # Alice: 10 AAPL × 210 + 0.5 BTC × 50000 + 3499 cash = 30599. Bob: 3 MSFT × 410 − 900 cash = 330.
    assert store_one(MINUTE, prices(AAPL="210", BTC_USD="50000", MSFT="410")) == 2
    assert stored() == [(alice_portfolio.pk, MINUTE, D("30599")), (bob_portfolio.pk, MINUTE, D("330"))]


def test_the_same_minute_again_replaces_its_value(alice_portfolio: Portfolio) -> None:
    store_one(MINUTE, prices(AAPL="210", BTC_USD="50000"))
    store_one(MINUTE, prices(AAPL="220", BTC_USD="50000"))
    assert stored() == [(alice_portfolio.pk, MINUTE, D("30699"))]


def test_a_portfolio_with_an_unpriced_holding_is_not_recorded(alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    store_one(MINUTE, prices(AAPL="210", BTC_USD="50000"))
    assert [row[0] for row in stored()] == [alice_portfolio.pk]  # bob's MSFT has no price in this worker
    store_one(MINUTE + timedelta(minutes=1), prices(AAPL="210"))
    assert len(stored()) == 1  # alice without a BTC price: not a value, so not a point


def test_values_older_than_the_retention_are_pruned(alice_portfolio: Portfolio, settings: Any) -> None:
    settings.HISTORY_RETENTION_DAYS = 2
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=MINUTE - timedelta(days=2, minutes=1), value=1)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=MINUTE - timedelta(days=1), value=2)
    store_one(MINUTE, prices(AAPL="210", BTC_USD="50000"))
    assert [row[2] for row in stored()] == [D(2), D("30599")]


def test_a_batch_of_minutes_stores_what_one_call_per_minute_stores(alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    batch = [
        (MINUTE, prices(AAPL="210", BTC_USD="50000")),  # bob's MSFT not priced yet: only alice
        (MINUTE + timedelta(minutes=1), prices(AAPL="211", BTC_USD="50000", MSFT="410")),
        (MINUTE + timedelta(minutes=3), prices(AAPL="212", BTC_USD="50100", MSFT="409")),
    ]
    for minute, minute_prices in batch:
        store_one(minute, minute_prices)
    one_by_one = stored()
    PortfolioValue.objects.all().delete()

    assert portfolio_values_store(minutes=batch) == 5
    assert stored() == one_by_one


def test_a_batch_reads_the_books_once_and_writes_in_one_transaction(
    alice_portfolio: Portfolio, bob_portfolio: Portfolio, django_assert_max_num_queries: Any
) -> None:
    batch = [(MINUTE + timedelta(minutes=n), prices(AAPL="210", BTC_USD="50000", MSFT="410")) for n in range(200)]
    # Portfolios, holdings, cash, FX pairs; savepoint, insert, prune, release: the same for 1 minute or 200.
    with django_assert_max_num_queries(10):
        assert portfolio_values_store(minutes=batch) == 400


def test_a_batch_prunes_as_of_its_newest_minute(alice_portfolio: Portfolio, settings: Any) -> None:
    settings.HISTORY_RETENTION_DAYS = 2
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=MINUTE - timedelta(days=2), value=1)
    batch = [(MINUTE + timedelta(minutes=n), prices(AAPL="210", BTC_USD="50000")) for n in (-1, 0, 1)]
    portfolio_values_store(minutes=batch)
    assert [row[1] for row in stored()] == [MINUTE - timedelta(minutes=1), MINUTE, MINUTE + timedelta(minutes=1)]


def test_the_feed_worker_runs_the_history_hook() -> None:
    assert portfolio_values_record in minute_hooks()


def _hooked_portfolio(alice: Any, instruments: Any) -> Portfolio:
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Hooked")
    record(portfolio, "buy", "2", instruments["AAPL"], price="100")
    return portfolio


@pytest.mark.django_db(transaction=True)
async def test_the_minute_hook_stores_values_from_the_workers_prices(alice: Any, instruments: Any) -> None:
    hooked = await database_sync_to_async(_hooked_portfolio)(alice, instruments)
    update = PriceUpdate("AAPL", 7, "e", D("150"), None, None, MINUTE, "test", 1)
    await portfolio_values_record([(MINUTE, {"AAPL": update})])
    value = await database_sync_to_async(PortfolioValue.objects.get)(portfolio=hooked)
    assert (value.minute, value.value) == (MINUTE, D("100"))  # 2 × 150 − 200 cash paid


def test_the_stream_serves_the_last_24_hours_of_history(alice: Any, alice_portfolio: Portfolio) -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=now - timedelta(hours=25), value=1)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=now - timedelta(minutes=2), value=2)
    PortfolioValue.objects.create(portfolio=alice_portfolio, minute=now - timedelta(minutes=1), value=3)
    [book], _ = live_books_for_user(user=alice)
    assert book.history == ((now - timedelta(minutes=2), D(2)), (now - timedelta(minutes=1), D(3)))


class Bursts:
    """A feed: bursts of events, `pause` seconds apart (a minute per burst and a pause: minutes close as live)."""

    name = "bursts"

    def __init__(self, bursts: list[list[MarketEvent]], pause: float) -> None:
        self.bursts, self.pause = bursts, pause

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        for burst in self.bursts:
            for event in burst:
                yield event
            await asyncio.sleep(self.pause)


def _session(minutes: int) -> list[list[MarketEvent]]:
    """A minute's ticks per burst: AAPL and BTC every minute, MSFT from minute 5 (bob is unpriced before), SAP and EUR/USD."""
    out: list[list[MarketEvent]] = []
    for n in range(minutes):
        at = T0 + timedelta(minutes=n)
        burst: list[MarketEvent] = [
            Trade("AAPL", at + timedelta(seconds=1), D(200 + n % 7), D(1), "test"),
            Trade("BTC-USD", at + timedelta(seconds=2), D(60000 + 10 * n), D(1), "test"),
            Quote("EUR/USD", at + timedelta(seconds=3), D("1.1000") + D(n) / 10000, D("1.1002") + D(n) / 10000, "test"),
            Trade("SAP", at + timedelta(seconds=4), D(230 - n % 3), D(1), "test"),
        ]
        if n >= 5:
            burst.append(Trade("MSFT", at + timedelta(seconds=30), D(400 + n), D(1), "test"))
        out.append(burst)
    return out


def _euro_portfolio(alice: Any, instruments: Any) -> None:
    euro = services.portfolio_create(owner_id=alice.pk, name="Euro", base_currency="EUR")
    record(euro, "deposit", "10000", executed_at=T0 - timedelta(days=1))
    record(euro, "buy", "10", instruments["SAP"], price="220")


def _rows() -> tuple[list[Any], list[Any]]:
    values = stored()
    candles = list(Candle.objects.order_by("instrument__symbol", "start").values_list("instrument__symbol", "start", "close", "volume"))
    PortfolioValue.objects.all().delete()
    Candle.objects.all().delete()
    return values, candles


@pytest.mark.django_db(transaction=True)
async def test_a_fast_replay_records_the_same_history_as_a_minute_at_a_time_in_a_few_hook_calls(
    alice_portfolio: Portfolio, bob_portfolio: Portfolio, alice: Any, instruments: Any
) -> None:
    await database_sync_to_async(_euro_portfolio)(alice, instruments)
    session = _session(40)
    calls: list[int] = []

    async def hook(minutes: ClosedMinutes) -> None:
        calls.append(len(minutes))
        await portfolio_values_record(minutes)

    async def replay(bursts: list[list[MarketEvent]], pause: float) -> tuple[list[Any], list[Any]]:
        worker = Worker(feed=Bursts(bursts, pause), conflation=0.01, quote_flush=60, minute_hooks=[hook], event_time=True, epoch="h")
        await worker.run(asyncio.Event())
        return await database_sync_to_async(_rows)()

    live_values, live_candles = await replay(session, pause=0.05)
    assert calls == [1] * 39  # as live: one minute a call
    calls.clear()
    fast_values, fast_candles = await replay([[e for burst in session for e in burst]], pause=0)

    assert fast_values == live_values and fast_candles == live_candles
    assert len(live_values) == 39 * 3 - 5  # alice's two portfolios every minute, bob's from minute 5
    assert sum(calls) == 39 and len(calls) <= 3
