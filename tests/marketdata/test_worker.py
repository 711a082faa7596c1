import asyncio
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from channels.layers import get_channel_layer

from marketdata import groups
from marketdata.events import MarketEvent, PriceUpdate, Trade
from marketdata.models import Instrument, Quote
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


async def test_a_burst_of_ticks_in_one_window_is_one_broadcast_with_the_last_price() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(groups.symbol_group("AAPL"), channel)
    prices = [str(100 + i) for i in range(40)]
    worker = Worker(feed=ListFeed([ticks("AAPL", prices)]), conflation=0.5, quote_flush=60, epoch="e1", store_quotes=no_store)

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
    worker = Worker(feed=ListFeed(bursts, pause=0.08), conflation=0.02, quote_flush=60, epoch="e2", store_quotes=no_store)

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
    worker = Worker(feed=ListFeed(bursts, pause=0.05), conflation=0.01, quote_flush=0.2, epoch="e3", store_quotes=store)

    stats = await worker.run(asyncio.Event())

    assert stats.events == 24 and stats.broadcasts >= 8
    # ~0.4 s of feed with a 0.2 s flush interval: a few batches, each holding only the latest per symbol.
    assert 1 <= len(batches) <= 4
    for batch in batches:
        assert len({u.symbol for u in batch}) == len(batch)
    assert {u.symbol: u.price for u in batches[-1]} == {"AAPL": D("101"), "MSFT": D("200")}


async def test_a_failed_batch_is_kept_for_the_next_one() -> None:
    calls: list[list[str]] = []

    async def flaky(updates: Iterable[PriceUpdate]) -> int:
        calls.append([u.symbol for u in updates])
        if len(calls) == 1:
            raise OSError("database unavailable")
        return len(calls[-1])

    worker = Worker(feed=ListFeed([ticks("AAPL", ["1"])]), conflation=0.01, quote_flush=0, epoch="e4", store_quotes=flaky)
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
    worker = Worker(feed=Endless(), conflation=0.05, quote_flush=60, epoch="e5", store_quotes=store)
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
