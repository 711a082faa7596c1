"""Feeds configured in the admin: their options checked, synthetic ones built, several run merged."""

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest

from marketdata import selectors
from marketdata.events import MarketEvent, Trade
from marketdata.feeds.configured import Merged, feed_build
from marketdata.feeds.options import options_check
from marketdata.feeds.synthetic import SyntheticFeed
from marketdata.models import Feed as FeedRow
from marketdata.models import FeedKind, Instrument

D = Decimal
T0 = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)


# -- options_check -------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "options", "symbols"),
    [
        ("synthetic", {}, []),
        ("synthetic", {"ticks_per_second": 20, "volatility": 0.001, "seed": 1}, ["AAPL"]),
        ("synthetic", {"ticks_per_second": 0.5}, []),
        ("binance", {"depth_limit": 100, "streams": "trade depth", "stale_after": 30}, ["BTCUSDT"]),
        ("binance", {"streams": ["trade", "bookTicker"]}, ["BTCUSDT", "ETHUSDT"]),
        ("coinbase", {"channels": ["market_trades", "level2"]}, ["BTC-USD"]),
        ("replay", {"paths": ["a.jsonl"], "speed": "max", "loop": True, "rebase_time": False}, []),
        ("replay", {"paths": "a.csv b.csv", "format": "generic_csv", "speed": 2.5, "options": {"delimiter": ";"}}, []),
        ("replay", {"paths": ["a.csv"], "speed": 10}, []),
    ],
)
def test_good_options_pass(kind: str, options: dict[str, Any], symbols: list[str]) -> None:
    options_check(kind=kind, options=options, symbols=symbols)


@pytest.mark.parametrize(
    ("kind", "options", "symbols", "message"),
    [
        ("websocket", {}, [], "unknown kind 'websocket'"),
        ("synthetic", ["seed", 1], [], 'options must be a JSON object, e.g. {"speed": 10}'),
        (
            "synthetic",
            {"tick_rate": 5},
            [],
            "'tick_rate' is not an option of a synthetic feed; its options are ticks_per_second, volatility, seed",
        ),
        ("binance", {"speed": 2}, ["BTCUSDT"], "'speed' is not an option of a binance feed"),
        ("synthetic", {"seed": "1"}, [], "'seed' must be int, not '1'"),
        ("synthetic", {"seed": 1.5}, [], "'seed' must be int, not 1.5"),
        ("synthetic", {"seed": True}, [], "'seed' must be int, not True"),  # a JSON true is no number
        ("synthetic", {"ticks_per_second": True}, [], "'ticks_per_second' must be int or float, not True"),
        ("binance", {"depth_limit": False}, ["BTCUSDT"], "'depth_limit' must be int, not False"),
        ("replay", {"paths": ["a.csv"], "loop": 1}, [], "'loop' must be bool, not 1"),
        ("replay", {"paths": 3}, [], "'paths' must be list or str, not 3"),
        ("replay", {"paths": ["a.csv"], "options": "x=1"}, [], "'options' must be dict, not 'x=1'"),
        ("replay", {}, [], "a replay feed needs 'paths'"),
        ("replay", {"speed": 2}, [], "a replay feed needs 'paths'"),
        ("binance", {}, [], "a binance feed needs symbols, as the exchange spells them"),
        ("coinbase", {"channels": ["level2"]}, [], "a coinbase feed needs symbols, as the exchange spells them"),
        ("replay", {"paths": ["a.csv"], "speed": "fast"}, [], "speed must be a number above 0 or \"max\", not 'fast'"),
        ("replay", {"paths": ["a.csv"], "speed": 0}, [], 'speed must be a number above 0 or "max", not 0'),
        ("replay", {"paths": ["a.csv"], "speed": -2.5}, [], 'speed must be a number above 0 or "max", not -2.5'),
        ("replay", {"paths": ["a.csv"], "speed": True}, [], "'speed' must be int or float or str, not True"),
    ],
)
def test_bad_options_are_refused_saying_what_is_wrong(kind: str, options: Any, symbols: list[str], message: str) -> None:
    with pytest.raises(ValueError) as error:
        options_check(kind=kind, options=options, symbols=symbols)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("options", [{"ticks_per_second": 0}, {"ticks_per_second": -2}, {"volatility": -0.1}])
def test_synthetic_rates_the_feed_cannot_run_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        options_check(kind=FeedKind.SYNTHETIC, options=options, symbols=[])


@pytest.mark.parametrize("paths", [[], "", " , "])
def test_a_replay_feed_without_any_path_is_refused(paths: Any) -> None:
    with pytest.raises(ValueError, match="paths"):
        options_check(kind=FeedKind.REPLAY, options={"paths": paths}, symbols=[])


# -- feed_build ----------------------------------------------------------------


def synthetic(symbols: str = "", **options: Any) -> FeedRow:
    return FeedRow(name="walk", kind=FeedKind.SYNTHETIC, options={"seed": 1, "ticks_per_second": 20, **options}, symbols=symbols)


def build(row: FeedRow) -> SyntheticFeed:
    feed = feed_build(row, symbols=selectors.symbol_map_load(), instruments=selectors.instruments_active())
    assert isinstance(feed, SyntheticFeed)
    return feed


def test_a_synthetic_feed_walks_only_its_symbols_from_their_stored_prices(instruments: dict[str, Instrument]) -> None:
    feed = build(synthetic("BTC-USD, EUR/USD  AAPL"))

    walked = {i.symbol: (i.start_price, i.quote_only) for i in feed.instruments}
    assert walked == {"AAPL": (D("200"), False), "BTC-USD": (D("60000"), False), "EUR/USD": (D("1.10"), True)}
    assert feed.interval == pytest.approx(1 / 20)
    assert {e.symbol for e in feed.step()} == set(walked)


def test_a_synthetic_feed_without_symbols_walks_every_active_instrument(instruments: dict[str, Instrument], settings: Any) -> None:
    Instrument.objects.filter(symbol="SAP").update(is_active=False)
    settings.SYNTHETIC_TICKS_PER_SECOND = D("4")
    feed = build(FeedRow(name="walk", kind=FeedKind.SYNTHETIC, options={}))

    assert sorted(i.symbol for i in feed.instruments) == ["AAPL", "BTC-USD", "EUR/USD", "MSFT"]
    assert feed.interval == pytest.approx(1 / 4)  # the settings' rate when the feed names none


def test_the_seed_makes_a_synthetic_feed_repeatable(instruments: dict[str, Instrument]) -> None:
    now = datetime.now(UTC)
    first, second, other = build(synthetic(seed=7)), build(synthetic(seed=7)), build(synthetic(seed=8))
    for feed in (first, second, other):
        feed.now = lambda: now
    walks = [[list(feed.step()) for _ in range(5)] for feed in (first, second, other)]
    assert walks[0] == walks[1] != walks[2]


def test_building_a_feed_checks_its_options(instruments: dict[str, Instrument]) -> None:
    with pytest.raises(ValueError, match="'tick_rate' is not an option of a synthetic feed"):
        build(synthetic(tick_rate=5))


# -- Merged --------------------------------------------------------------------


def trade(symbol: str, n: int) -> Trade:
    return Trade(symbol, T0 + timedelta(seconds=n), D(n), D(1), "test")


class Scripted:
    """A finite feed running a script: each step yields an event, awaits a condition or raises.

    `finished` is set when it ends, however it ends (before its exception leaves it).
    """

    name = "scripted"

    def __init__(self, *steps: Trade | asyncio.Event | Exception) -> None:
        self.steps = steps
        self.finished = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        try:
            for step in self.steps:
                if isinstance(step, asyncio.Event):
                    await step.wait()
                elif isinstance(step, Exception):
                    raise step
                else:
                    yield step
        finally:
            self.finished.set()


async def drain(merged: Merged, on_event: dict[str, asyncio.Event] | None = None) -> list[str]:
    """Every event the merged feed passes, as `symbol:n`, setting `on_event[that]` as each arrives."""
    seen = []
    async with asyncio.timeout(5):
        async for event in merged:
            assert isinstance(event, Trade)
            key = f"{event.symbol}:{event.price}"
            seen.append(key)
            if on_event and key in on_event:
                on_event[key].set()
    return seen


async def test_merged_passes_every_event_of_two_finite_feeds_as_each_arrives() -> None:
    a1_seen, b1_seen = asyncio.Event(), asyncio.Event()
    # Each feed waits for the other's event to have been passed on: only a merge that
    # forwards events as they come (not one feed after the other) gets through.
    a = Scripted(trade("A", 1), b1_seen, trade("A", 2), trade("A", 3))
    b = Scripted(a1_seen, trade("B", 1), trade("B", 2))

    seen = await drain(Merged([a, b], names=["a", "b"]), {"A:1": a1_seen, "B:1": b1_seen})

    assert seen[:2] == ["A:1", "B:1"]
    assert sorted(seen) == ["A:1", "A:2", "A:3", "B:1", "B:2"]
    assert [s for s in seen if s.startswith("A")] == ["A:1", "A:2", "A:3"]  # each feed's own order is kept
    assert a.finished.is_set() and b.finished.is_set()


async def test_merged_goes_on_when_one_feed_fails_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    broken = Scripted(trade("A", 1), RuntimeError("connection lost"))
    # The healthy feed sends only once the other has failed.
    healthy = Scripted(broken.finished, trade("B", 1), trade("B", 2))

    with caplog.at_level(logging.INFO, logger="marketdata.feeds.configured"):
        seen = await drain(Merged([broken, healthy], names=["broken", "healthy"]))

    assert seen == ["A:1", "B:1", "B:2"]
    [failure] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failure.getMessage() == "feed broken failed; the other feeds go on"
    assert failure.exc_info and isinstance(failure.exc_info[1], RuntimeError)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == ["feed healthy ended"]


async def test_leaving_a_merged_feed_early_stops_its_feeds() -> None:
    class Endless:
        name = "endless"

        def __init__(self, symbol: str) -> None:
            self.symbol = symbol
            self.stopped = asyncio.Event()

        async def __aiter__(self) -> AsyncIterator[MarketEvent]:
            n = 0
            try:
                while True:
                    n += 1
                    yield trade(self.symbol, n)
                    await asyncio.sleep(0)
            finally:
                self.stopped.set()

    feeds = [Endless("A"), Endless("B")]
    taken = []
    async with asyncio.timeout(5):
        async with aclosing(cast(AsyncGenerator[MarketEvent, None], Merged(feeds, names=["a", "b"]).__aiter__())) as events:
            async for event in events:
                taken.append(event)
                if len(taken) == 10:
                    break
        for feed in feeds:
            await feed.stopped.wait()
    assert len(taken) == 10
