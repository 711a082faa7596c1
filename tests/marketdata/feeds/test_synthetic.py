from datetime import UTC, datetime
from decimal import Decimal

import pytest

from marketdata.events import Quote, Trade
from marketdata.feeds.synthetic import SyntheticFeed, SyntheticInstrument

T0 = datetime(2026, 1, 1, tzinfo=UTC)
INSTRUMENTS = [SyntheticInstrument("AAPL", Decimal("200")), SyntheticInstrument("EUR/USD", Decimal("1.1"), quote_only=True, places=5)]


def walk(seed: int, steps: int) -> list[object]:
    feed = SyntheticFeed(instruments=INSTRUMENTS, ticks_per_second=10, volatility=0.01, seed=seed, now=lambda: T0)
    return [event for _ in range(steps) for event in feed.step()]


def test_the_same_seed_gives_the_same_walk() -> None:
    assert walk(7, 50) == walk(7, 50)
    assert walk(7, 50) != walk(8, 50)


def test_prices_are_positive_decimals_at_the_instruments_precision() -> None:
    for event in walk(1, 200):
        assert isinstance(event, Trade | Quote)
        assert event.ts.tzinfo is not None
        if isinstance(event, Quote):
            assert Decimal(0) < event.bid < event.ask
            places = 5 if event.symbol == "EUR/USD" else 2
            assert event.bid.as_tuple().exponent == -places


def test_fx_gets_quotes_only() -> None:
    assert not [e for e in walk(3, 20) if isinstance(e, Trade) and e.symbol == "EUR/USD"]


@pytest.mark.parametrize(("rate", "volatility"), [(0, 0.01), (1, -0.1)])
def test_nonsense_options_are_refused(rate: float, volatility: float) -> None:
    with pytest.raises(ValueError):
        SyntheticFeed(instruments=INSTRUMENTS, ticks_per_second=rate, volatility=volatility)


async def test_the_live_feed_keeps_its_tick_rate() -> None:
    import asyncio

    feed = SyntheticFeed(instruments=INSTRUMENTS[:1], ticks_per_second=50, volatility=0.01, seed=1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    trades = 0
    async for event in feed:
        trades += isinstance(event, Trade)
        if trades == 25:
            break
    # 25 ticks at 50/s take about half a second: the feed paces itself, it does not spin.
    assert loop.time() - started >= 0.45
