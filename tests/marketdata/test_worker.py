import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.layers import get_channel_layer

from marketdata import groups
from marketdata.events import MarketEvent, PriceUpdate, Trade
from marketdata.models import Instrument, PriceMark, Quote
from marketdata.references import Mark, MarketHours, References
from marketdata.worker import Worker

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


async def collect(channel: str, *, until: int) -> list[dict[str, object]]:
    layer = get_channel_layer()
    out = []
    async with asyncio.timeout(5):
        while len(out) < until:
            out.append(await layer.receive(channel))
    return out


async def no_store(updates: Iterable[PriceUpdate]) -> int:
    return 0


async def no_marks(marks: Sequence[Mark]) -> int:
    return 0


@pytest.fixture(autouse=True)
def worker_logs_no_error(request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The worker logs and carries on where it must; a test not expecting that fails on it."""
    yield
    if "expect_worker_errors" not in request.fixturenames:
        assert [r.getMessage() for r in caplog.get_records("call") if r.name == "marketdata.worker" and r.levelno >= logging.ERROR] == []


@pytest.fixture
def expect_worker_errors() -> None:
    pass


async def test_a_burst_of_ticks_in_one_window_is_one_broadcast_with_the_last_price() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(groups.symbol_group("AAPL"), channel)
    prices = [str(100 + i) for i in range(40)]
    worker = Worker(
        feed=ListFeed([ticks("AAPL", prices)]), conflation=0.5, quote_flush=60, epoch="e1", store_quotes=no_store, store_marks=no_marks
    )

    stats = await worker.run(asyncio.Event())

    [message] = await collect(channel, until=1)
    assert message["price"] == "139" and message["seq"] == 1 and message["epoch"] == "e1"
    assert (stats.events, stats.broadcasts) == (40, 1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(layer.receive(channel), timeout=0.2)


async def test_each_window_advances_the_sequence_by_one_per_symbol() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(groups.symbol_group("EUR/USD"), channel)
    bursts = [ticks("EUR/USD", ["1.10", "1.11"], i * 10) + ticks("AAPL", ["1"], i * 10) for i in range(3)]
    worker = Worker(
        feed=ListFeed(bursts, pause=0.08), conflation=0.02, quote_flush=60, epoch="e2", store_quotes=no_store, store_marks=no_marks
    )

    await worker.run(asyncio.Event())

    messages = await collect(channel, until=3)
    assert [m["seq"] for m in messages] == [1, 2, 3]
    assert {m["symbol"] for m in messages} == {"EUR/USD"}


async def test_quotes_are_stored_in_batches_never_per_tick() -> None:
    batches: list[list[PriceUpdate]] = []

    async def store(updates: Iterable[PriceUpdate]) -> int:
        batches.append(list(updates))
        return len(batches[-1])

    bursts = [ticks("AAPL", ["100", "101"], i * 10) + ticks("MSFT", ["200"], i * 10) for i in range(8)]
    worker = Worker(
        feed=ListFeed(bursts, pause=0.05), conflation=0.01, quote_flush=0.2, epoch="e3", store_quotes=store, store_marks=no_marks
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
        feed=ListFeed([ticks("AAPL", ["1"])]), conflation=0.01, quote_flush=0, epoch="e4", store_quotes=flaky, store_marks=no_marks
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
    worker = Worker(feed=Endless(), conflation=0.05, quote_flush=60, epoch="e5", store_quotes=store, store_marks=no_marks)
    asyncio.get_running_loop().call_later(0.3, stop.set)
    stats = await asyncio.wait_for(worker.run(stop), timeout=5)
    assert stats.events > 10
    assert stored and stored[-1].price == D(stats.events)


@pytest.mark.django_db(transaction=True)
async def test_the_default_store_upserts_the_latest_quote_per_instrument() -> None:
    inst = await Instrument.objects.acreate(symbol="AAPL", name="Apple", asset_class="equity", quote_currency="USD")
    bursts = [ticks("AAPL", ["100.5", "101.25"]), ticks("UNKNOWN", ["5"]), ticks("AAPL", ["102.75"], 5)]
    worker = Worker(feed=ListFeed(bursts, pause=0.05), conflation=0.01, quote_flush=0.02, epoch="e6")

    stats = await worker.run(asyncio.Event())

    quote = await Quote.objects.aget(instrument=inst)
    assert (quote.price, quote.seq, quote.epoch, quote.source) == (D("102.75"), 2, "e6", "test")
    assert quote.exchange_ts == T0 + timedelta(milliseconds=5)
    assert await Quote.objects.acount() == 1  # the unknown symbol is broadcast but not stored
    assert stats.quote_rows == 2


def at(symbol: str, seconds: float, price: str) -> Trade:
    return Trade(symbol, T0 + timedelta(seconds=seconds), D(price), D(1), "test")


class Recorder:
    """Stands in for the database and the minute hooks, keeping what the worker hands over."""

    def __init__(self) -> None:
        self.marks: list[list[Mark]] = []
        self.pruned: list[datetime] = []
        self.calls: list[tuple[datetime, dict[str, PriceUpdate]]] = []

    async def store_marks(self, marks: Sequence[Mark]) -> int:
        self.marks.append(list(marks))
        return len(marks)

    async def prune_marks(self, before: datetime) -> int:
        self.pruned.append(before)
        return 0

    async def hook(self, minute: datetime, prices: Mapping[str, PriceUpdate]) -> None:
        self.calls.append((minute, dict(prices)))

    def worker(self, feed: ListFeed, **options: Any) -> Worker:
        return Worker(
            feed=feed,
            conflation=0.01,
            quote_flush=60,
            epoch="m",
            store_quotes=no_store,
            store_marks=self.store_marks,
            prune_marks=self.prune_marks,
            minute_hooks=options.pop("minute_hooks", [self.hook]),
            **options,
        )


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


async def test_each_closed_minute_stores_its_last_prices_and_runs_the_hooks_once() -> None:
    rec = Recorder()
    # Minute 0: AAPL twice, BTC once. Minute 1: only AAPL. Minute 2 is skipped. Minute 3 is open at the end.
    events = [at("AAPL", 5, "100"), at("BTC-USD", 20, "60000"), at("AAPL", 59.999, "101"), at("AAPL", 60, "102"), at("AAPL", 185, "103")]

    stats = await rec.worker(ListFeed([events])).run(asyncio.Event())

    assert rec.marks == [
        [Mark("AAPL", minute(0), D("101")), Mark("BTC-USD", minute(0), D("60000"))],
        [Mark("AAPL", minute(1), D("102"))],
        [Mark("AAPL", minute(3), D("103"))],  # the open minute, stored at shutdown
    ]
    assert [m for m, _ in rec.calls] == [minute(0), minute(1)]  # the open minute is not closed: no hook
    for closed, _ in rec.calls:
        assert closed.tzinfo is not None and closed.utcoffset() == timedelta(0)
    first, second = (prices for _, prices in rec.calls)
    assert {s: u.price for s, u in first.items()} == {"AAPL": D("101"), "BTC-USD": D("60000")}
    # Every symbol seen so far, at its latest update, not only those that moved in the minute.
    assert {s: u.price for s, u in second.items()} == {"AAPL": D("102"), "BTC-USD": D("60000")}
    assert second["BTC-USD"] is first["BTC-USD"]
    assert (stats.minutes, stats.mark_rows) == (2, 4)


async def test_minutes_follow_event_time_even_when_many_pass_within_one_window() -> None:
    rec = Recorder()
    # A replay-like burst: twenty minutes of ticks arrive faster than one conflation window.
    events = [at("EUR/USD", 30 * i, f"1.{1000 + i}") for i in range(40)]

    await rec.worker(ListFeed([events]), minute_hooks=[]).run(asyncio.Event())

    marks = [m for batch in rec.marks for m in batch]
    assert [m.minute for m in marks] == [minute(n) for n in range(20)]
    assert [m.price for m in marks] == [D(f"1.{1000 + 2 * n + 1}") for n in range(20)]


async def test_the_minute_marks_feed_the_references_broadcast_a_day_later() -> None:
    rec = Recorder()
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(groups.symbol_group("BTC-USD"), channel)
    refs = References({"BTC-USD": MarketHours(always_open=True)})
    day = 24 * 3600
    events = [at("BTC-USD", 10, "60000"), at("BTC-USD", 70, "61000"), at("BTC-USD", day + 30, "65000"), at("BTC-USD", day + 90, "66000")]

    await rec.worker(ListFeed([events[:2], events[2:3], events[3:]], pause=0.05), references=refs).run(asyncio.Event())

    messages = await collect(channel, until=4)
    # A day later, the reference is the last price of the minute 24 hours earlier.
    assert [m["ref"] for m in messages] == [None, None, "60000", "61000"]
    assert rec.calls[-1][1]["BTC-USD"].reference == D("60000")


async def test_a_failing_hook_is_logged_and_the_worker_and_other_hooks_carry_on(
    caplog: pytest.LogCaptureFixture, expect_worker_errors: None
) -> None:
    rec = Recorder()

    async def broken(minute: datetime, prices: Mapping[str, PriceUpdate]) -> None:
        raise RuntimeError("hook exploded")

    events = [at("AAPL", 60 * n, str(100 + n)) for n in range(4)]

    stats = await rec.worker(ListFeed([events]), minute_hooks=[broken, rec.hook]).run(asyncio.Event())

    assert [m for m, _ in rec.calls] == [minute(0), minute(1), minute(2)]
    failures = [r for r in caplog.records if r.name == "marketdata.worker" and r.levelno == logging.ERROR]
    assert len(failures) == 3
    assert all("broken" in r.getMessage() and r.exc_info and isinstance(r.exc_info[1], RuntimeError) for r in failures)
    assert stats.events == 4 and stats.broadcasts >= 1


async def test_marks_that_fail_to_store_go_with_the_next_minute(expect_worker_errors: None) -> None:
    batches: list[list[Mark]] = []

    async def flaky(marks: Sequence[Mark]) -> int:
        batches.append(list(marks))
        if len(batches) == 1:
            raise OSError("database unavailable")
        return len(marks)

    events = [at("AAPL", 60 * n, str(100 + n)) for n in range(3)]
    worker = Worker(feed=ListFeed([events]), conflation=0.01, quote_flush=60, store_quotes=no_store, store_marks=flaky)

    stats = await worker.run(asyncio.Event())

    assert [[m.minute for m in batch] for batch in batches] == [[minute(0)], [minute(0), minute(1)], [minute(2)]]
    assert stats.mark_rows == 3


async def test_old_marks_are_pruned_by_the_retention_at_most_once_an_hour_of_event_time() -> None:
    rec = Recorder()
    events = [at("AAPL", 60 * n, "100") for n in range(151)]

    await rec.worker(ListFeed([events]), retention=timedelta(days=2)).run(asyncio.Event())

    assert rec.pruned == [minute(0) - timedelta(days=2), minute(60) - timedelta(days=2), minute(120) - timedelta(days=2)]


async def test_without_a_retention_nothing_is_pruned() -> None:
    rec = Recorder()
    await rec.worker(ListFeed([[at("AAPL", 60 * n, "100") for n in range(3)]])).run(asyncio.Event())
    assert rec.pruned == []


@pytest.mark.django_db(transaction=True)
async def test_the_default_stores_write_marks_and_prune_the_expired(caplog: pytest.LogCaptureFixture) -> None:
    inst = await Instrument.objects.acreate(symbol="BTC-USD", name="Bitcoin", asset_class="crypto", quote_currency="USD")
    await PriceMark.objects.acreate(instrument=inst, minute=minute(0) - timedelta(days=3), price=D("1"))
    kept = await PriceMark.objects.acreate(instrument=inst, minute=minute(0) - timedelta(days=1), price=D("59000"))
    events = [at("BTC-USD", 10, "60000"), at("UNKNOWN", 20, "5"), at("BTC-USD", 70, "61000")]
    worker = Worker(
        feed=ListFeed([events]),
        conflation=0.01,
        quote_flush=60,
        references=References({"BTC-USD": MarketHours(always_open=True)}, [Mark("BTC-USD", kept.minute, kept.price)]),
        retention=timedelta(days=2),
    )

    stats = await worker.run(asyncio.Event())

    stored = [(m.minute, m.price) async for m in PriceMark.objects.filter(instrument=inst)]
    assert stored == [(kept.minute, D("59000")), (minute(0), D("60000")), (minute(1), D("61000"))]
    assert stats.mark_rows == 2  # the unknown symbol's mark is skipped
    quote = await Quote.objects.aget(instrument=inst)
    assert quote.reference_price == D("59000")
