import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async as db
from django.conf import settings

from marketdata import services
from marketdata.api.channels import BOOK_DEPTHS
from marketdata.delivery import streams
from marketdata.delivery.fanout import Update
from marketdata.delivery.history import market_store
from marketdata.events import BookDelta, BookSnapshot, Candle, MarketEvent, PriceUpdate, Trade
from marketdata.events import Quote as BidAsk
from marketdata.feeds import Feed
from marketdata.feeds.files import Problems
from marketdata.feeds.registry import file_sources
from marketdata.models import AssetClass, Instrument, Quote
from marketdata.models import Candle as CandleRow
from marketdata.symbols import SymbolMap
from marketdata.worker import loop
from marketdata.worker.loop import ClosedMinutes, Worker
from marketdata.worker.references import Mark, MarketHours, References
from marketdata.worker.replay import Replay
from tests.conftest import AGGTRADES, alisten, listen, needs_aggtrades, until

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class ListFeed:
    """Yields bursts of events; between bursts waits `pause` seconds (longer than a window)."""

    name = "list"

    def __init__(self, bursts: Iterable[list[MarketEvent]], pause: float = 0.0) -> None:
        self.bursts = list(bursts)
        self.pause = pause

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        for burst in self.bursts:
            for event in burst:
                yield event
            await asyncio.sleep(self.pause)


def ticks(symbol: str, prices: list[str], start_ms: int = 0) -> list[MarketEvent]:
    return [Trade(symbol, T0 + timedelta(milliseconds=start_ms + i), D(p), D(1), "test") for i, p in enumerate(prices)]


async def no_store(updates: Iterable[PriceUpdate]) -> int:
    return 0


async def no_candles(candles: Sequence[Candle]) -> int:
    return 0


@pytest.fixture(autouse=True)
def worker_logs_no_error(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The worker logs and carries on where it must; a test not expecting that fails on it."""
    yield
    if "expect_worker_errors" not in request.fixturenames:
        assert [
            r.getMessage() for r in caplog.get_records("call") if r.name == "marketdata.worker.loop" and r.levelno >= logging.ERROR
        ] == []


@pytest.fixture
def expect_worker_errors() -> None:
    pass


async def test_a_burst_of_ticks_in_one_window_is_one_broadcast_with_the_last_price() -> None:
    tap = await alisten("AAPL")
    prices = [str(100 + i) for i in range(40)]
    worker = Worker(
        feed=ListFeed([ticks("AAPL", prices)]), conflation=0.5, quote_flush=60, epoch="e1", store_quotes=no_store, store_candles=no_candles
    )

    stats = await worker.run(asyncio.Event())

    # The in-process hub hands messages out as they are published: all of them are in by now.
    [message] = tap.take()
    assert message["data"]["last"] == "139" and message["seq"] == 1 and message["epoch"] == "e1"
    assert (stats.events, stats.broadcasts) == (40, 1)


async def test_each_window_advances_the_sequence_by_one_per_symbol() -> None:
    tap = await alisten("EUR/USD")
    bursts = [ticks("EUR/USD", ["1.10", "1.11"], i * 10) + ticks("AAPL", ["1"], i * 10) for i in range(3)]
    worker = Worker(
        feed=ListFeed(bursts, pause=0.08), conflation=0.02, quote_flush=60, epoch="e2", store_quotes=no_store, store_candles=no_candles
    )

    await worker.run(asyncio.Event())

    messages = tap.take()
    assert [m["seq"] for m in messages] == [1, 2, 3]
    assert {m["ch"] for m in messages} == {"ticker:EUR/USD"}


async def test_quotes_are_stored_in_batches_never_per_tick() -> None:
    batches: list[list[PriceUpdate]] = []

    async def store(updates: Iterable[PriceUpdate]) -> int:
        batches.append(list(updates))
        return len(batches[-1])

    bursts = [ticks("AAPL", ["100", "101"], i * 10) + ticks("MSFT", ["200"], i * 10) for i in range(8)]
    worker = Worker(
        feed=ListFeed(bursts, pause=0.05), conflation=0.01, quote_flush=0.2, epoch="e3", store_quotes=store, store_candles=no_candles
    )

    stats = await worker.run(asyncio.Event())

    assert stats.events == 24 and stats.broadcasts >= 8
    # ~0.4 s of feed with a 0.2 s flush interval: a few batches, each holding only the latest per symbol.
    assert 1 <= len(batches) <= 4
    for batch in batches:
        assert len({u.symbol for u in batch}) == len(batch)
    assert {u.symbol: u.price for u in batches[-1]} == {"AAPL": D("101"), "MSFT": D("200")}


async def test_a_failed_batch_is_kept_for_the_next_one(expect_worker_errors: None) -> None:
    calls: list[list[str]] = []

    async def flaky(updates: Iterable[PriceUpdate]) -> int:
        calls.append([u.symbol for u in updates])
        if len(calls) == 1:
            raise OSError("database unavailable")
        return len(calls[-1])

    worker = Worker(
        feed=ListFeed([ticks("AAPL", ["1"])]), conflation=0.01, quote_flush=0, epoch="e4", store_quotes=flaky, store_candles=no_candles
    )
    await worker.flush_window()  # nothing yet
    await worker._ingest()
    await worker.flush_window()  # fails
    await worker.flush_quotes()  # retried
    assert calls == [["AAPL"], ["AAPL"]]
    assert worker.stats.quote_rows == 1


async def test_stop_ends_the_run_and_flushes_what_it_holds() -> None:
    class Endless:
        name = "endless"

        async def __aiter__(self) -> AsyncIterator[MarketEvent]:
            i = 0
            while True:
                i += 1
                yield Trade("AAPL", T0 + timedelta(milliseconds=i), D(i), D(1), "test")
                await asyncio.sleep(0.001)

    stored: list[PriceUpdate] = []

    async def store(updates: Iterable[PriceUpdate]) -> int:
        stored.extend(updates)
        return 0

    stop = asyncio.Event()
    worker = Worker(feed=Endless(), conflation=0.05, quote_flush=60, epoch="e5", store_quotes=store, store_candles=no_candles)
    asyncio.get_running_loop().call_later(0.3, stop.set)
    stats = await asyncio.wait_for(worker.run(stop), timeout=5)
    assert stats.events > 10
    assert stored and stored[-1].price == D(stats.events)


@pytest.mark.django_db(transaction=True)
async def test_the_default_store_upserts_the_latest_quote_per_instrument() -> None:
    inst = await db(Instrument.objects.create)(symbol="AAPL", name="Apple", asset_class="equity", quote_currency="USD")
    bursts = [ticks("AAPL", ["100.5", "101.25"]), ticks("UNKNOWN", ["5"]), ticks("AAPL", ["102.75"], 5)]
    worker = Worker(feed=ListFeed(bursts, pause=0.05), conflation=0.01, quote_flush=0.02, epoch="e6")

    stats = await worker.run(asyncio.Event())

    quote = await db(Quote.objects.get)(instrument=inst)
    assert (quote.price, quote.seq, quote.epoch, quote.source) == (D("102.75"), 2, "e6", "test")
    assert quote.exchange_ts == T0 + timedelta(milliseconds=5)
    assert await db(Quote.objects.count)() == 1  # the unknown symbol is broadcast but not stored
    assert stats.quote_rows == 2


def at(symbol: str, seconds: float, price: str, size: str = "1") -> Trade:
    return Trade(symbol, T0 + timedelta(seconds=seconds), D(price), D(size), "test")


def bid_ask(symbol: str, seconds: float, bid: str, ask: str) -> BidAsk:
    return BidAsk(symbol, T0 + timedelta(seconds=seconds), D(bid), D(ask), "test")


def flat(symbol: str, start: datetime, price: str, volume: str = "1", trades: int = 1) -> Candle:
    """A candle of one price (every tick at it)."""
    return Candle(symbol, start, D(price), D(price), D(price), D(price), D(volume), trades)


class Recorder:
    """Stands in for the database and the minute hooks, keeping what the worker hands over."""

    def __init__(self) -> None:
        self.candles: list[list[Candle]] = []
        self.pruned: list[datetime] = []
        self.calls: list[tuple[datetime, dict[str, PriceUpdate]]] = []  # every minute the hook got, in order
        self.hook_batches: list[list[datetime]] = []  # the minutes of each hook call

    async def store_candles(self, candles: Sequence[Candle]) -> int:
        self.candles.append(list(candles))
        return len(candles)

    async def prune_candles(self, before: datetime) -> int:
        self.pruned.append(before)
        return 0

    async def hook(self, minutes: ClosedMinutes) -> None:
        self.calls.extend((minute, dict(prices)) for minute, prices in minutes)
        self.hook_batches.append([minute for minute, _ in minutes])

    def worker(self, feed: Feed, **options: Any) -> Worker:
        return Worker(
            feed=feed,
            conflation=0.01,
            quote_flush=60,
            epoch="m",
            store_quotes=options.pop("store_quotes", no_store),
            store_candles=self.store_candles,
            prune_candles=self.prune_candles,
            minute_hooks=options.pop("minute_hooks", [self.hook]),
            **options,
        )


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


async def test_each_closed_minute_stores_its_candles_and_runs_the_hooks_once() -> None:
    rec = Recorder()
    # Minute 0: AAPL twice, BTC once. Minute 1: only AAPL. Minute 2 is skipped. Minute 3 is open at the end.
    events = [at("AAPL", 5, "100"), at("BTC-USD", 20, "60000"), at("AAPL", 59.999, "101"), at("AAPL", 60, "102"), at("AAPL", 185, "103")]

    # Live-like: each minute closes while the database is idle, so each is recorded alone.
    stats = await rec.worker(ListFeed([events[:3], events[3:4], events[4:]], pause=0.05)).run(asyncio.Event())

    assert rec.candles == [
        [Candle("AAPL", minute(0), D("100"), D("101"), D("100"), D("101"), D("2"), 2), flat("BTC-USD", minute(0), "60000")],
        [flat("AAPL", minute(1), "102")],
        [flat("AAPL", minute(3), "103")],  # the open minute, stored at shutdown
    ]
    assert rec.hook_batches == [[minute(0)], [minute(1)]]  # the open minute is not closed: no hook
    for closed, _ in rec.calls:
        assert closed.tzinfo is not None and closed.utcoffset() == timedelta(0)
    first, second = (prices for _, prices in rec.calls)
    assert {s: u.price for s, u in first.items()} == {"AAPL": D("101"), "BTC-USD": D("60000")}
    # Every symbol seen so far, at its latest update, not only those that moved in the minute.
    assert {s: u.price for s, u in second.items()} == {"AAPL": D("102"), "BTC-USD": D("60000")}
    assert second["BTC-USD"] is first["BTC-USD"]
    assert (stats.minutes, stats.candle_rows) == (2, 4)


async def test_minutes_closing_faster_than_the_database_writes_are_recorded_in_batches() -> None:
    rec = Recorder()
    store, hook = rec.store_candles, rec.hook

    async def slow_store(candles: Sequence[Candle]) -> int:
        await asyncio.sleep(0.02)  # a database slower than the replay
        return await store(candles)

    async def slow_hook(minutes: ClosedMinutes) -> None:
        await asyncio.sleep(0.02)
        await hook(minutes)

    rec.store_candles = slow_store  # type: ignore[method-assign]
    # Three hours of a sparse session, one tick every 20 s, replayed at once.
    events = [at("EUR/USD", 20 * i, f"1.{1000 + i % 300}") for i in range(3 * 180)]

    stats = await rec.worker(ListFeed([events]), minute_hooks=[slow_hook], event_time=True).run(asyncio.Event())

    # Every minute's candle stored once, in order, the open one last; every closed minute handed to the hook once.
    assert [c.start for batch in rec.candles for c in batch] == [minute(n) for n in range(180)]
    assert [m for m, _ in rec.calls] == [minute(n) for n in range(179)]
    assert stats.minutes == 179
    # ... in a handful of calls, not one per minute.
    assert len(rec.candles) <= 10 and len(rec.hook_batches) <= 10
    assert all(len(batch) <= loop.MINUTE_BATCH for batch in rec.hook_batches)
    # Each minute still gets the prices as of its own end.
    assert [u["EUR/USD"].price for _, u in rec.calls[:3]] == [D("1.1002"), D("1.1005"), D("1.1008")]


async def test_a_replay_waits_for_the_database_rather_than_piling_up_closed_minutes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop, "MINUTE_BACKLOG", 5)
    monkeypatch.setattr(loop, "MINUTE_BATCH", 5)
    rec = Recorder()
    ahead: list[int] = []
    worker: Worker

    async def slow_hook(minutes: ClosedMinutes) -> None:
        ahead.append(worker._closed.qsize())  # closed minutes waiting while this batch is written
        await asyncio.sleep(0.01)
        await rec.hook(minutes)

    events = [at("EUR/USD", 60 * i, "1.1") for i in range(60)]
    worker = rec.worker(ListFeed([events]), minute_hooks=[slow_hook], event_time=True)

    await worker.run(asyncio.Event())

    assert [m for m, _ in rec.calls] == [minute(n) for n in range(59)]
    assert max(ahead) <= 5
    assert all(len(batch) <= 5 for batch in rec.hook_batches)


async def test_candles_are_stored_per_closed_minute_with_their_ohlcv() -> None:
    rec = Recorder()
    events: list[MarketEvent] = [
        at("BTC-USD", 1, "60000", "0.5"),
        bid_ask("EUR/USD", 2, "1.1000", "1.1002"),  # mid 1.1001
        at("BTC-USD", 10, "60500", "0.25"),  # new high
        bid_ask("EUR/USD", 15, "1.1004", "1.1006"),  # mid 1.1005, high
        at("BTC-USD", 20, "59800", "1"),  # new low
        bid_ask("EUR/USD", 30, "1.0996", "1.0998"),  # mid 1.0997, low
        at("BTC-USD", 59, "60100", "0.25"),  # close
        bid_ask("EUR/USD", 59.5, "1.0999", "1.1001"),  # mid 1.1000, close
        at("BTC-USD", 61, "60200", "2"),  # the next minute
    ]

    stats = await rec.worker(ListFeed([events])).run(asyncio.Event())

    assert rec.candles == [
        [
            Candle("BTC-USD", minute(0), D("60000"), D("60500"), D("59800"), D("60100"), D("2.00"), 4),
            Candle("EUR/USD", minute(0), D("1.1001"), D("1.1005"), D("1.0997"), D("1.1000"), D(0), 0),
        ],
        [Candle("BTC-USD", minute(1), D("60200"), D("60200"), D("60200"), D("60200"), D("2"), 1)],
    ]
    assert stats.candle_rows == 3


async def test_minutes_follow_event_time_even_when_many_pass_within_one_window() -> None:
    rec = Recorder()
    # A replay-like burst: twenty minutes of ticks arrive faster than one conflation window.
    events = [at("EUR/USD", 30 * i, f"1.{1000 + i}") for i in range(40)]

    await rec.worker(ListFeed([events]), minute_hooks=[]).run(asyncio.Event())

    candles = [c for batch in rec.candles for c in batch]
    assert [c.start for c in candles] == [minute(n) for n in range(20)]
    assert [(c.open, c.low) for c in candles] == [(D(f"1.{1000 + 2 * n}"),) * 2 for n in range(20)]
    assert [(c.close, c.high) for c in candles] == [(D(f"1.{1000 + 2 * n + 1}"),) * 2 for n in range(20)]
    assert {(c.volume, c.trades) for c in candles} == {(D(2), 2)}


async def test_the_minute_closes_feed_the_references_broadcast_a_day_later() -> None:
    rec = Recorder()
    tap = await alisten("BTC-USD")
    refs = References({"BTC-USD": MarketHours(always_open=True)})
    day = 24 * 3600
    # Minute 0 opens at 59000 and closes at 60000: the reference is the close.
    events = [
        at("BTC-USD", 5, "59000"),
        at("BTC-USD", 10, "60000"),
        at("BTC-USD", 70, "61000"),
        at("BTC-USD", day + 30, "65000"),
        at("BTC-USD", day + 90, "66000"),
    ]

    await rec.worker(ListFeed([events[:3], events[3:4], events[4:]], pause=0.05), references=refs).run(asyncio.Event())

    messages = tap.take()
    # A day later, the reference is the close of the minute 24 hours earlier.
    assert [m["data"]["ref"] for m in messages] == [None, None, "60000", "61000"]
    assert rec.calls[-1][1]["BTC-USD"].reference == D("60000")


async def test_a_failing_hook_is_logged_and_the_worker_and_other_hooks_carry_on(
    caplog: pytest.LogCaptureFixture, expect_worker_errors: None
) -> None:
    rec = Recorder()

    async def broken(minutes: ClosedMinutes) -> None:
        raise RuntimeError("hook exploded")

    events = [[at("AAPL", 60 * n, str(100 + n))] for n in range(4)]  # a minute at a time, as live

    stats = await rec.worker(ListFeed(events, pause=0.02), minute_hooks=[broken, rec.hook]).run(asyncio.Event())

    assert [m for m, _ in rec.calls] == [minute(0), minute(1), minute(2)]
    failures = [r for r in caplog.records if r.name == "marketdata.worker.loop" and r.levelno == logging.ERROR]
    assert len(failures) == 3
    assert all("broken" in r.getMessage() and r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    assert stats.events == 4 and stats.broadcasts >= 1


async def test_candles_that_fail_to_store_go_with_the_next_minute(expect_worker_errors: None) -> None:
    batches: list[list[Candle]] = []

    async def flaky(candles: Sequence[Candle]) -> int:
        batches.append(list(candles))
        if len(batches) == 1:
            raise OSError("database unavailable")
        return len(candles)

    events = [[at("AAPL", 60 * n, str(100 + n))] for n in range(3)]  # a minute at a time, as live
    worker = Worker(feed=ListFeed(events, pause=0.02), conflation=0.01, quote_flush=60, store_quotes=no_store, store_candles=flaky)

    stats = await worker.run(asyncio.Event())

    assert [[c.start for c in batch] for batch in batches] == [[minute(0)], [minute(0), minute(1)], [minute(2)]]
    assert batches[1][0] == flat("AAPL", minute(0), "100")  # kept whole
    assert stats.candle_rows == 3


async def test_old_candles_are_pruned_by_the_retention_at_most_once_an_hour_of_event_time() -> None:
    rec = Recorder()
    events = [[at("AAPL", 60 * n, "100")] for n in range(151)]  # a minute at a time, as live

    await rec.worker(ListFeed(events, pause=0.002), retention=timedelta(days=2)).run(asyncio.Event())

    assert rec.pruned == [minute(0) - timedelta(days=2), minute(60) - timedelta(days=2), minute(120) - timedelta(days=2)]


async def test_a_batch_of_minutes_prunes_once_as_of_its_newest_minute() -> None:
    rec = Recorder()
    events = [at("AAPL", 60 * n, "100") for n in range(151)]  # all closed before the database gets a turn

    await rec.worker(ListFeed([events]), retention=timedelta(days=2)).run(asyncio.Event())

    assert rec.pruned == [minute(149) - timedelta(days=2)]


async def test_without_a_retention_nothing_is_pruned() -> None:
    rec = Recorder()
    await rec.worker(ListFeed([[at("AAPL", 60 * n, "100") for n in range(3)]])).run(asyncio.Event())
    assert rec.pruned == []


async def test_a_replay_worker_marks_its_broadcasts_as_replayed() -> None:
    tap = await alisten("AAPL")
    for replay in (False, True):
        worker = Worker(
            feed=ListFeed([ticks("AAPL", ["100"])]),
            conflation=0.01,
            quote_flush=60,
            store_quotes=no_store,
            store_candles=no_candles,
            replay=replay,
            tape=False,
        )
        await worker.run(asyncio.Event())
    assert [m["data"]["replay"] for m in tap.take()] == [False, True]


@pytest.mark.django_db(transaction=True)
async def test_the_default_stores_write_candles_and_prune_the_expired() -> None:
    inst = await db(Instrument.objects.create)(symbol="BTC-USD", name="Bitcoin", asset_class="crypto", quote_currency="USD")
    await db(CandleRow.objects.create)(instrument=inst, start=minute(0) - timedelta(days=3), open=D(1), high=D(1), low=D(1), close=D("1"))
    kept = await db(CandleRow.objects.create)(
        instrument=inst, start=minute(0) - timedelta(days=1), open=D(58000), high=D(59500), low=D(57000), close=D("59000")
    )
    events = [at("BTC-USD", 10, "60000", "0.5"), at("UNKNOWN", 20, "5"), at("BTC-USD", 30, "60250", "0.25"), at("BTC-USD", 70, "61000")]
    worker = Worker(
        feed=ListFeed([events]),
        conflation=0.01,
        quote_flush=60,
        references=References({"BTC-USD": MarketHours(always_open=True)}, [Mark("BTC-USD", kept.start, kept.close)]),
        retention=timedelta(days=2),
    )

    stats = await worker.run(asyncio.Event())

    stored = await db(
        lambda: list(CandleRow.objects.filter(instrument=inst).values_list("start", "open", "high", "low", "close", "volume", "trades"))
    )()
    assert stored == [
        (kept.start, D(58000), D(59500), D(57000), D("59000"), D(0), 0),
        (minute(0), D("60000"), D("60250"), D("60000"), D("60250"), D("0.75"), 2),
        (minute(1), D("61000"), D("61000"), D("61000"), D("61000"), D("1"), 1),
    ]
    assert stats.candle_rows == 2  # the unknown symbol's candle is skipped
    quote = await db(Quote.objects.get)(instrument=inst)
    assert quote.reference_price == D("59000")


class Resolving:
    """A feed that spells symbols its own way, resolving them through a `SymbolMap` as real sources do."""

    name = "resolving"

    def __init__(self, symbols: SymbolMap, events: list[tuple[str, float, str]], *, source: str = "binance") -> None:
        self.symbols = symbols
        self.events = events
        self.source = source

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        for raw, seconds, price in self.events:
            symbol = self.symbols.resolve(raw, source=self.source)
            if symbol is not None:
                yield Trade(symbol, T0 + timedelta(seconds=seconds), D(price), D(1), self.source)
        await asyncio.sleep(0)


@pytest.mark.django_db(transaction=True)
async def test_instruments_created_for_new_symbols_are_stored_before_their_quotes_and_candles(caplog: pytest.LogCaptureFixture) -> None:
    btc = await db(Instrument.objects.create)(symbol="BTC-USD", name="Bitcoin", asset_class="crypto", quote_currency="USD")
    symbols = SymbolMap(instruments=["BTC-USD"], aliases={("binance", "BTCUSDT"): "BTC-USD"}, create=True)
    feed = Resolving(symbols, [("BTCUSDT", 1, "60000"), ("DOGEUSDT", 2, "0.25"), ("DOGEUSDT", 30, "0.26"), ("DOGEUSDT", 61, "0.27")])
    worker = Worker(feed=feed, conflation=0.01, quote_flush=0, epoch="c", symbols=symbols)

    with caplog.at_level(logging.INFO):
        stats = await worker.run(asyncio.Event())

    doge = await db(Instrument.objects.get)(symbol="DOGEUSDT")
    assert (doge.asset_class, doge.quote_currency) == (AssetClass.CRYPTO, "USD")
    # Stored, so the instrument was there first: both stores skip symbols without one.
    quotes = await db(lambda: dict(Quote.objects.values_list("instrument__symbol", "price")))()
    assert quotes == {"BTC-USD": D("60000"), "DOGEUSDT": D("0.27")}
    candles = await db(lambda: list(CandleRow.objects.filter(instrument=doge).values_list("start", "open", "high", "close", "trades")))()
    assert candles == [(minute(0), D("0.25"), D("0.26"), D("0.26"), 2), (minute(1), D("0.27"), D("0.27"), D("0.27"), 1)]
    assert await db(lambda: CandleRow.objects.filter(instrument=btc).count())() == 1
    assert stats.candle_rows == 3
    assert symbols.new == {}  # taken and stored
    assert not [r for r in caplog.records if r.name == "marketdata.services" and "no instrument" in r.getMessage()]


# The stub touches no database, but database_sync_to_async checks the executor thread's connection before and after
# the call: after a transactional test (pytest-django runs those first when they are collected) that thread has one.
@pytest.mark.django_db
async def test_instruments_that_fail_to_be_created_are_retried_before_the_next_store(
    monkeypatch: pytest.MonkeyPatch, expect_worker_errors: None
) -> None:
    created: list[dict[str, str]] = []

    def instruments_create(*, symbols: Mapping[str, str]) -> list[Instrument]:
        created.append(dict(symbols))
        if len(created) == 1:
            raise OSError("database unavailable")
        return []

    monkeypatch.setattr(services, "instruments_create", instruments_create)
    stored: list[list[str]] = []

    async def store(updates: Iterable[PriceUpdate]) -> int:
        stored.append([u.symbol for u in updates])
        return len(stored[-1])

    symbols = SymbolMap(instruments=[], create=True)
    worker = Worker(
        feed=Resolving(symbols, [("DOGEUSDT", 1, "0.25")]),
        conflation=0.01,
        quote_flush=0,
        store_quotes=store,
        store_candles=no_candles,
        symbols=symbols,
    )
    await worker._ingest()
    await worker.flush_window()  # the instrument cannot be created: the quote waits
    assert (created, stored, symbols.new) == ([{"DOGEUSDT": "binance"}], [], {"DOGEUSDT": "binance"})
    await worker.flush_quotes()
    assert (created, stored, symbols.new) == ([{"DOGEUSDT": "binance"}] * 2, [["DOGEUSDT"]], {})


# -- market channels ---------------------------------------------------------------------------


class Heard:
    """A sink of the market hub, as a connection is: every live message of the channels it holds, and its frame."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.frames: list[str] = []

    def deliver(self, update: Update) -> None:
        self.messages.append(update.message)
        self.frames.append(update.frame)

    def missed(self, channels: Sequence[str]) -> None:
        raise AssertionError(f"the in-process hub never loses messages ({channels})")


def market_channels(symbol: str) -> list[str]:
    return [f"ticker:{symbol}", f"trades:{symbol}", f"candles:{symbol}@1m", *(f"book:{symbol}@depth={d}" for d in BOOK_DEPTHS)]


def hear(symbol: str) -> Heard:
    """Subscribe a sink to every market channel of `symbol`, through the seam consumers use."""
    heard = Heard()
    async_to_sync(streams.subscribe_market)(heard, market_channels(symbol))
    return heard


def _by_channel(messages: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for message in messages:
        out.setdefault(message["ch"], []).append(message)
    return out


def _book(symbol: str, seconds: float, bids: list[tuple[str, str]], asks: list[tuple[str, str]], *, snapshot: bool = False) -> MarketEvent:
    kind = BookSnapshot if snapshot else BookDelta
    bid_levels = tuple((D(p), D(q)) for p, q in bids)
    ask_levels = tuple((D(p), D(q)) for p, q in asks)
    return kind(symbol, T0 + timedelta(seconds=seconds), bid_levels, ask_levels, "coinbase")


def test_window_by_window_the_history_holds_exactly_what_the_market_hub_hears() -> None:
    live = hear("BTC-USD")
    portfolio_side = listen("BTC-USD")
    events = [
        _book("BTC-USD", 1, [("100", "1"), ("99", "2")], [("101", "1"), ("102", "3")], snapshot=True),
        at("BTC-USD", 2, "100.5", "0.5"),
        _book("BTC-USD", 3, [("100", "0"), ("100.25", "4")], []),
        at("BTC-USD", 30, "101"),
        at("BTC-USD", 61, "102"),  # closes minute 0
        _book("BTC-USD", 62, [], [("101", "0")]),
        at("BTC-USD", 125, "103", "2"),  # closes minute 1
    ]
    worker = Worker(
        feed=ListFeed([[event] for event in events], pause=0.03),  # a window apart
        conflation=0.01,
        quote_flush=60,
        epoch="r1",
        store_quotes=no_store,
        store_candles=no_candles,
        tape=False,
    )

    stats = async_to_sync(worker.run)(asyncio.Event())

    # Each message once, with its update frame encoded once for every local socket.
    assert [json.loads(frame) for frame in live.frames] == [{"type": "update", **m} for m in live.messages]
    published = _by_channel(live.messages)
    assert stats.market_messages == sum(map(len, published.values()))
    store = market_store()
    assert set(published) == {
        "ticker:BTC-USD",
        "trades:BTC-USD",
        "candles:BTC-USD@1m",
        "book:BTC-USD@depth=1",
        "book:BTC-USD@depth=10",
        "book:BTC-USD@depth=50",
    }
    for channel, messages in published.items():
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), channel
        assert {m["epoch"] for m in messages} == {"r1"}
        # The history holds exactly what was published, in order.
        assert async_to_sync(store.since)(channel, epoch="r1", seq=0) == messages
        assert async_to_sync(store.head)(channel) == ("r1", len(messages))
    candles = [m["data"]["candle"] for m in published["candles:BTC-USD@1m"]]
    assert [(c["start"], c["close"], c["closed"]) for c in candles if c["closed"]] == [
        (int(minute(0).timestamp() * 1000), "101", True),
        (int(minute(1).timestamp() * 1000), "102", True),
    ]
    assert candles[-1] == {
        "start": int(minute(2).timestamp() * 1000),
        "open": "103",
        "high": "103",
        "low": "103",
        "close": "103",
        "volume": "2",
        "trades": 1,
        "closed": False,
    }
    assert [t["price"] for m in published["trades:BTC-USD"] for t in m["data"]["trades"]] == ["100.5", "101", "102", "103"]
    book = async_to_sync(store.snapshot)("book:BTC-USD@depth=10")
    assert book["data"]["bids"] == [["100.25", "4"], ["99", "2"]] and book["data"]["asks"] == [["102", "3"]]
    # Portfolio connections hold the tickers only: they are handed no other market channel.
    assert {m["ch"] for m in portfolio_side.take()} == {"ticker:BTC-USD"}


@needs_aggtrades
def test_the_real_aggtrades_sample_replayed_at_full_speed_leaves_whole_histories() -> None:
    live = hear("BTC-USD")
    symbols = SymbolMap(instruments=["BTC-USD"], aliases={("binance", "BTCUSDT"): "BTC-USD"})
    sources = file_sources(paths=[AGGTRADES], format_name=None, symbols=symbols, options={}, problems=Problems(strict=True))
    worker = Worker(
        feed=Replay(sources=sources, speed=None),
        conflation=0.01,
        quote_flush=60,
        epoch="r2",
        store_quotes=no_store,
        store_candles=no_candles,
        tape=False,
    )

    stats = async_to_sync(worker.run)(asyncio.Event())

    published = _by_channel(live.messages)
    trades = [t for m in published["trades:BTC-USD"] for t in m["data"]["trades"]]
    assert stats.events == 5000 and len(trades) + worker.hub.trades_dropped == 5000
    assert [t["ts"] for t in trades] == sorted(t["ts"] for t in trades)
    store = market_store()
    for channel, messages in published.items():
        assert len(messages) < settings.MARKET_HISTORY_LENGTH  # all of them still in the history
        assert async_to_sync(store.since)(channel, epoch="r2", seq=0) == messages
        assert async_to_sync(store.head)(channel) == ("r2", len(messages))
    closed = [m["data"]["candle"] for m in published["candles:BTC-USD@1m"] if m["data"]["candle"]["closed"]]
    assert len(closed) >= 10 and [c["start"] for c in closed] == sorted({c["start"] for c in closed})


async def test_a_failed_history_write_is_logged_and_the_messages_still_go_out(
    caplog: pytest.LogCaptureFixture, expect_worker_errors: None
) -> None:
    class Broken:
        async def append(self, messages: Sequence[dict[str, Any]]) -> None:
            raise OSError("Redis went away")

    heard = Heard()
    await streams.subscribe_market(heard, market_channels("AAPL"))
    worker = Worker(
        feed=ListFeed([ticks("AAPL", ["100"])]),
        conflation=0.01,
        quote_flush=60,
        store_quotes=no_store,
        store_candles=no_candles,
        tape=False,
        market_history=Broken(),  # type: ignore[arg-type]
    )

    stats = await worker.run(asyncio.Event())

    assert {m["ch"] for m in heard.messages} == {"ticker:AAPL", "trades:AAPL", "candles:AAPL@1m"}
    assert stats.market_store_errors == 1
    assert any("could not write" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


# -- windows on event time -------------------------------------------------------------------------


async def test_on_event_time_a_paced_replay_publishes_a_window_once_the_next_event_is_due_later() -> None:
    """Between sparse events a paced replay waits: the window before is published then, not when the next tick comes."""
    tap = await alisten("EUR/USD")
    events = [at("EUR/USD", 0, "1.1000"), at("EUR/USD", 0.001, "1.1001"), at("EUR/USD", 30, "1.1002")]
    replay = Replay(sources=[events], speed=1)
    worker = Worker(
        feed=replay, conflation=0.01, quote_flush=60, epoch="ev", store_quotes=no_store, store_candles=no_candles, event_time=True
    )
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: replay.waiting_until is not None and len(tap.messages) == 1, timeout=2, what="the first window")
        [message] = tap.take()
        assert (message["seq"], message["data"]["last"]) == (1, "1.1001")  # both ticks of its 10 ms window
    finally:
        stop.set()
        await run


async def test_on_event_time_every_window_of_a_burst_is_published_in_order_with_consecutive_seqs() -> None:
    tap = await alisten("EUR/USD")
    # 3 s of exchange time, a tick every 50 ms, delivered at once: 100 ms windows hold two ticks each.
    events = [at("EUR/USD", 0.05 * i, f"1.{1000 + i}") for i in range(60)]
    worker = Worker(
        feed=ListFeed([events]), conflation=0.1, quote_flush=60, store_quotes=no_store, store_candles=no_candles, event_time=True
    )

    await worker.run(asyncio.Event())

    messages = tap.take()
    assert [m["seq"] for m in messages] == list(range(1, 31))
    assert [m["data"]["last"] for m in messages] == [f"1.{1001 + 2 * i}" for i in range(30)]
