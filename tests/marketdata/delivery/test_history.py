"""The market channels' history and snapshots, against the in-process store and real Redis alike."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis.exceptions
from channels.db import database_sync_to_async as db
from channels.layers import channel_layers, get_channel_layer

from marketdata.delivery.history import (
    SNAPSHOT_CANDLES,
    MarketStore,
    MemoryMarketStore,
    RedisMarketStore,
    market_store,
)
from marketdata.events import BookDelta, BookSnapshot, Level, Trade
from marketdata.models import Candle, Instrument
from marketdata.worker.hub import Hub
from marketdata.worker.market import MarketBuilder, Message, checksum

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
MINUTE = 60_000


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MarketStore]:
    if request.param == "redis":
        request.getfixturevalue("redis_layer")
    chosen = market_store()
    assert isinstance(chosen, RedisMarketStore if request.param == "redis" else MemoryMarketStore)
    yield chosen
    if isinstance(chosen, RedisMarketStore):
        await chosen.client.aclose()


def msg(channel: str, seq: int, data: dict[str, Any] | None = None, *, epoch: str = "e1", ts: int | None = None) -> Message:
    return {
        "ch": channel,
        "epoch": epoch,
        "seq": seq,
        "ts": T0_MS + seq if ts is None else ts,
        "data": data if data is not None else {"n": seq},
    }


def tickers(first: int, last: int, *, epoch: str = "e1", channel: str = "ticker:AAPL") -> list[Message]:
    return [msg(channel, seq, {"last": str(seq)}, epoch=epoch) for seq in range(first, last + 1)]


# -- head and since ----------------------------------------------------------------------------


async def test_head_is_empty_until_a_message_then_the_latest(store: MarketStore) -> None:
    assert await store.head("ticker:AAPL") == ("", 0)
    await store.append(tickers(1, 3))
    assert await store.head("ticker:AAPL") == ("e1", 3)
    assert await store.head("ticker:MSFT") == ("", 0)


async def test_since_gives_every_message_after_seq_in_order_and_as_appended(store: MarketStore) -> None:
    sent = tickers(1, 5)
    await store.append(sent[:2])
    await store.append(sent[2:])
    assert await store.since("ticker:AAPL", epoch="e1", seq=2) == sent[2:]
    assert await store.since("ticker:AAPL", epoch="e1", seq=0) == sent


async def test_since_the_head_is_empty_and_past_it_not_recoverable(store: MarketStore) -> None:
    assert await store.since("ticker:AAPL", epoch="", seq=0) == []  # nothing ever, and the client has nothing
    await store.append(tickers(1, 3))
    assert await store.since("ticker:AAPL", epoch="e1", seq=3) == []
    assert await store.since("ticker:AAPL", epoch="e1", seq=4) is None  # a seq this epoch never had


async def test_since_another_epoch_is_not_recoverable(store: MarketStore) -> None:
    await store.append(tickers(1, 3, epoch="e2"))
    assert await store.since("ticker:AAPL", epoch="e1", seq=1) is None
    assert await store.since("ticker:AAPL", epoch="", seq=0) is None
    assert await store.since("ticker:MSFT", epoch="e1", seq=1) is None  # a channel with nothing at all


async def test_since_past_the_trimmed_history_is_not_recoverable(store: MarketStore, settings: Any) -> None:
    settings.MARKET_HISTORY_LENGTH = 10
    for first in range(1, 401, 40):
        await store.append(tickers(first, first + 39))
    # Redis trims approximately (whole nodes of ~100 entries): at least 10 are kept, seq 2 is long gone.
    assert await store.since("ticker:AAPL", epoch="e1", seq=1) is None
    assert [m["seq"] for m in await store.since("ticker:AAPL", epoch="e1", seq=390) or []] == list(range(391, 401))
    if isinstance(store, MemoryMarketStore):
        assert await store.since("ticker:AAPL", epoch="e1", seq=389) is None  # exactly 10 kept: 391..400


async def test_a_hole_in_the_history_is_not_recoverable_across_it(store: MarketStore) -> None:
    # 3 was published live but never stored (the write failed).
    await store.append(tickers(1, 2))
    await store.append(tickers(4, 5))
    assert await store.since("ticker:AAPL", epoch="e1", seq=1) is None
    assert await store.since("ticker:AAPL", epoch="e1", seq=2) is None
    assert await store.since("ticker:AAPL", epoch="e1", seq=4) == tickers(5, 5)


async def test_a_message_of_a_new_epoch_discards_the_channels_older_history(store: MarketStore) -> None:
    await store.append(tickers(1, 5) + tickers(1, 2, channel="ticker:MSFT"))
    await store.append(tickers(1, 1, epoch="e2"))
    assert await store.head("ticker:AAPL") == ("e2", 1)
    assert await store.since("ticker:AAPL", epoch="e1", seq=3) is None
    assert await store.since("ticker:AAPL", epoch="e2", seq=0) == tickers(1, 1, epoch="e2")
    assert (await store.snapshot("ticker:AAPL"))["data"] == {"last": "1"}
    assert await store.since("ticker:MSFT", epoch="e1", seq=1) == tickers(2, 2, channel="ticker:MSFT")  # other channels keep theirs


# -- snapshots ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_channel_without_data_has_an_empty_snapshot_of_epoch_blank_and_seq_0(store: MarketStore) -> None:
    empty = {"epoch": "", "seq": 0, "ts": 0}
    assert await store.snapshot("ticker:AAPL") == {"ch": "ticker:AAPL", **empty, "data": {}}
    assert await store.snapshot("trades:AAPL") == {"ch": "trades:AAPL", **empty, "data": {"trades": []}}
    assert await store.snapshot("candles:AAPL@1m") == {"ch": "candles:AAPL@1m", **empty, "data": {"candles": []}}
    assert await store.snapshot("book:AAPL@depth=10") == {
        "ch": "book:AAPL@depth=10",
        **empty,
        "data": {"bids": [], "asks": [], "checksum": 0, "state": "none", "update_id": None},  # crc32("")
    }


async def test_a_snapshot_names_a_market_channel(store: MarketStore) -> None:
    with pytest.raises(ValueError, match="not a market channel"):
        await store.snapshot("portfolio:1")
    with pytest.raises(ValueError, match="not a channel"):
        await store.snapshot("tickr:AAPL")


async def test_the_ticker_snapshot_is_the_latest_ticker(store: MarketStore) -> None:
    await store.append(tickers(1, 4))
    assert await store.snapshot("ticker:AAPL") == msg("ticker:AAPL", 4, {"last": "4"})


async def test_the_trades_snapshot_is_the_last_50_trades_oldest_first(store: MarketStore) -> None:
    def trades(seq: int, count: int) -> Message:
        return msg("trades:BTC-USD", seq, {"trades": [{"price": f"{seq}.{i}", "size": "1", "side": None, "ts": seq} for i in range(count)]})

    await store.append([trades(1, 30), trades(2, 30), trades(3, 7)])
    snapshot = await store.snapshot("trades:BTC-USD")
    assert (snapshot["seq"], snapshot["ts"]) == (3, T0_MS + 3)
    prices = [t["price"] for t in snapshot["data"]["trades"]]
    assert prices == [f"1.{i}" for i in range(17, 30)] + [f"2.{i}" for i in range(30)] + [f"3.{i}" for i in range(7)]


def candle(start: int, close: str, *, closed: bool) -> dict[str, Any]:
    return {"start": start, "open": "1", "high": close, "low": "1", "close": close, "volume": "2", "trades": 2, "closed": closed}


@pytest.mark.django_db(transaction=True)
async def test_the_candles_snapshot_is_the_stored_closed_candles_and_the_recent_ones_then_the_open_one(store: MarketStore) -> None:
    btc = await db(Instrument.objects.create)(symbol="BTC-USD", name="Bitcoin", asset_class="crypto", quote_currency="USD")
    # 130 minutes in the database (only the last 120 count); the two latest are not stored yet when the snapshot is read.
    await db(Candle.objects.bulk_create)(
        [
            Candle(
                instrument=btc, start=T0 + timedelta(minutes=n), open=D(1), high=D(n + 1), low=D(1), close=D(n + 1), volume=D(2), trades=2
            )
            for n in range(130)
        ]
    )
    channel = "candles:BTC-USD@1m"
    await store.append(
        [
            msg(channel, 1, {"candle": candle(T0_MS + 129 * MINUTE, "130", closed=True)}),
            msg(channel, 2, {"candle": candle(T0_MS + 130 * MINUTE, "131", closed=False)}),
            msg(channel, 3, {"candle": candle(T0_MS + 130 * MINUTE, "131", closed=True)}),
            msg(channel, 4, {"candle": candle(T0_MS + 131 * MINUTE, "132", closed=True)}),
            msg(channel, 5, {"candle": candle(T0_MS + 132 * MINUTE, "133", closed=False)}),
        ]
    )
    snapshot = await store.snapshot(channel)
    assert (snapshot["epoch"], snapshot["seq"], snapshot["ts"]) == ("e1", 5, T0_MS + 5)
    candles = snapshot["data"]["candles"]
    assert len(candles) == SNAPSHOT_CANDLES + 1
    assert [c["start"] for c in candles] == [T0_MS + n * MINUTE for n in range(12, 133)]  # 120 closed, then the open one
    assert candles[0] == {
        "start": T0_MS + 12 * MINUTE,
        "open": "1",
        "high": "13",
        "low": "1",
        "close": "13",
        "volume": "2",
        "trades": 2,
        "closed": True,
    }
    assert candles[-3:] == [
        candle(T0_MS + 130 * MINUTE, "131", closed=True),
        candle(T0_MS + 131 * MINUTE, "132", closed=True),
        candle(T0_MS + 132 * MINUTE, "133", closed=False),
    ]


@pytest.mark.django_db(transaction=True)
async def test_an_open_candle_wins_over_a_stored_one_of_the_same_minute(store: MarketStore) -> None:
    # The previous run stored its last, unfinished minute; this run reopens it.
    btc = await db(Instrument.objects.create)(symbol="BTC-USD", name="Bitcoin", asset_class="crypto", quote_currency="USD")
    await db(Candle.objects.create)(instrument=btc, start=T0, open=D(1), high=D(1), low=D(1), close=D(1))
    await store.append([msg("candles:BTC-USD@1m", 1, {"candle": candle(T0_MS, "5", closed=False)})])
    assert (await store.snapshot("candles:BTC-USD@1m"))["data"]["candles"] == [candle(T0_MS, "5", closed=False)]


def levels(*pairs: tuple[str, str]) -> tuple[Level, ...]:
    return tuple((D(p), D(q)) for p, q in pairs)


async def test_the_book_snapshot_is_the_full_top_n_as_of_its_seq(store: MarketStore) -> None:
    hub, builder = Hub(epoch="e1"), MarketBuilder(epoch="e1")

    async def window(*events: Any) -> None:
        for event in events:
            hub.apply(event)
        out = builder.build(hub, hub.drain())
        await store.append([m for messages in out.values() for m in messages])

    await window(BookSnapshot("X", T0, levels(("10", "1"), ("9.50", "2"), ("9", "3")), levels(("11", "1.0"), ("12", "4")), "c"))
    await window(BookDelta("X", T0 + timedelta(milliseconds=5), levels(("10", "0"), ("9.25", "7")), levels(), "c"))
    for depth in (1, 10, 50):
        channel = f"book:X@depth={depth}"
        snapshot = await store.snapshot(channel)
        assert (snapshot["epoch"], snapshot["seq"], snapshot["ts"]) == ("e1", *(await store.head(channel))[1:], T0_MS + 5)
        assert snapshot["data"] == builder.book_view(channel)
    ten = (await store.snapshot("book:X@depth=10"))["data"]
    levels_ten = {"bids": [["9.5", "2"], ["9.25", "7"], ["9", "3"]], "asks": [["11", "1"], ["12", "4"]]}
    assert ten == levels_ten | {"checksum": ten["checksum"], "state": "synced", "update_id": None}
    assert ten["checksum"] == checksum(ten["bids"], ten["asks"])


async def test_a_book_snapshot_plus_the_updates_since_equals_a_later_snapshot(store: MarketStore) -> None:
    rng = random.Random(7)
    hub, builder = Hub(epoch="e1"), MarketBuilder(epoch="e1")
    views: list[dict[str, Message]] = []
    channels = [f"book:X@depth={n}" for n in (1, 10, 50)]
    for step in range(60):
        if step % 15 == 0:
            bids = tuple((D(100) - D(i) / 4, D(rng.choice("1234"))) for i in range(rng.randint(0, 70)))
            asks = tuple((D(101) + D(i) / 4, D(rng.choice("1234"))) for i in range(rng.randint(0, 70)))
            hub.apply(BookSnapshot("X", T0, bids, asks, "c"))
        for _ in range(rng.randint(0, 5)):
            side = (tuple((D(100) - D(rng.randint(0, 80)) / 4, D(rng.choice("0123"))) for _ in range(3)), ())
            hub.apply(BookDelta("X", T0, *(side if rng.random() < 0.5 else side[::-1]), "c"))
        out = builder.build(hub, hub.drain())
        await store.append([m for messages in out.values() for m in messages])
        views.append({ch: await store.snapshot(ch) for ch in channels})
    for channel in channels:
        for earlier in (views[5], views[20], views[40]):
            book = {side: dict(map(tuple, earlier[channel]["data"][side])) for side in ("bids", "asks")}
            updates = await store.since(channel, epoch="e1", seq=earlier[channel]["seq"])
            assert updates is not None
            for update in updates:
                for side in ("bids", "asks"):
                    for price, qty in update["data"][side]:
                        if qty == "0":
                            book[side].pop(price)
                        else:
                            book[side][price] = qty
            latest = views[-1][channel]["data"]
            assert book == {side: dict(map(tuple, latest[side])) for side in ("bids", "asks")}


async def test_a_book_channel_of_a_new_epoch_starts_from_an_empty_book(store: MarketStore) -> None:
    channel = "book:X@depth=1"
    await store.append([msg(channel, 1, {"bids": [["10", "1"]], "asks": [["11", "1"]], "checksum": 0})])
    await store.append([msg(channel, 1, {"bids": [["9", "1"]], "asks": [], "checksum": 0}, epoch="e2")])
    snapshot = await store.snapshot(channel)
    assert (snapshot["epoch"], snapshot["data"]["bids"], snapshot["data"]["asks"]) == ("e2", [["9", "1"]], [])


# -- Redis: the layout, and a worker starting over ----------------------------------------------


@pytest.mark.redis
async def test_redis_keeps_a_stream_per_channel_and_a_snapshot_key_per_book_beside_the_layer(redis_layer: dict[str, Any]) -> None:
    store = market_store()
    assert isinstance(store, RedisMarketStore)
    prefix = redis_layer["CONFIG"]["prefix"]
    await store.append([*tickers(1, 2), msg("book:AAPL@depth=1", 1, {"bids": [["1", "2"]], "asks": [], "checksum": 5})])
    entries = await store.client.xrange(f"{prefix}:hist:ticker:AAPL")
    assert entries == [
        ("1-0", {"e": "e1", "t": str(T0_MS + 1), "d": '{"last":"1"}'}),
        ("2-0", {"e": "e1", "t": str(T0_MS + 2), "d": '{"last":"2"}'}),
    ]
    record = json.loads(await store.client.get(f"{prefix}:snap:book:AAPL@depth=1"))
    assert record == {
        "ch": "book:AAPL@depth=1",
        "epoch": "e1",
        "seq": 1,
        "ts": T0_MS + 1,
        "data": {"bids": [["1", "2"]], "asks": [], "checksum": checksum([["1", "2"]], []), "state": "synced", "update_id": None},
    }
    assert sorted(await store.client.keys(f"{prefix}:*")) == [
        f"{prefix}:hist:book:AAPL@depth=1",
        f"{prefix}:hist:ticker:AAPL",
        f"{prefix}:snap:book:AAPL@depth=1",
    ]
    await store.client.aclose()


@pytest.mark.redis
async def test_a_restarted_worker_replaces_the_old_epochs_history_in_redis(redis_layer: dict[str, Any]) -> None:
    before = market_store()
    assert isinstance(before, RedisMarketStore)
    await before.append([*tickers(1, 5), msg("book:X@depth=1", 1, {"bids": [["1", "1"]], "asks": [], "checksum": 0})])
    # A new process: a writer that knows nothing, with a new epoch whose seq starts again at 1.
    after = RedisMarketStore(before.client, before.prefix)
    await after.append(
        [*tickers(1, 1, epoch="e2"), msg("book:X@depth=1", 1, {"bids": [["2", "1"]], "asks": [], "checksum": 0}, epoch="e2")]
    )
    assert await after.head("ticker:AAPL") == ("e2", 1)
    assert await after.since("ticker:AAPL", epoch="e2", seq=0) == tickers(1, 1, epoch="e2")
    assert (await after.snapshot("book:X@depth=1"))["data"]["bids"] == [["2", "1"]]
    await before.client.aclose()


@pytest.mark.redis
async def test_a_second_writer_of_the_same_epoch_carries_on_from_the_stored_book(redis_layer: dict[str, Any]) -> None:
    first = market_store()
    assert isinstance(first, RedisMarketStore)
    channel = "book:X@depth=10"
    await first.append([msg(channel, 1, {"bids": [["10", "1"], ["9", "1"]], "asks": [["11", "1"]], "checksum": 0})])
    second = RedisMarketStore(first.client, first.prefix)
    await second.append([msg(channel, 2, {"bids": [["10", "0"]], "asks": [], "checksum": 0})])
    assert [m["seq"] for m in await second.since(channel, epoch="e1", seq=0) or []] == [1, 2]
    assert (await second.snapshot(channel))["data"]["bids"] == [["9", "1"]]
    await first.client.aclose()


@pytest.mark.redis
async def test_a_failed_write_raises_leaves_a_hole_that_since_reports_and_the_next_write_lands(
    redis_layer: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = market_store()
    assert isinstance(store, RedisMarketStore)
    await store.append(tickers(1, 2))
    real = store.client.pipeline
    failures = []

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real(*args, **kwargs)
        if kwargs.get("transaction") and not failures:

            async def execute(*args: Any, **kwargs: Any) -> Any:
                failures.append(1)
                raise redis.exceptions.ConnectionError("Redis went away")

            pipe.execute = execute  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(store.client, "pipeline", pipeline)
    with pytest.raises(redis.exceptions.ConnectionError):
        await store.append(tickers(3, 3))
    await store.append(tickers(4, 5))
    assert failures == [1] and await store.head("ticker:AAPL") == ("e1", 5)
    assert await store.since("ticker:AAPL", epoch="e1", seq=2) is None  # 3 never landed: 3..5 is not whole
    assert await store.since("ticker:AAPL", epoch="e1", seq=4) == tickers(5, 5)
    await store.client.aclose()


@pytest.mark.redis
async def test_an_entry_redis_refuses_fails_alone_and_the_append_raises(redis_layer: dict[str, Any]) -> None:
    store = market_store()
    assert isinstance(store, RedisMarketStore)
    await store.append(tickers(1, 3))
    # seq 2 again (an id not above the stream's last) between two that fit: only it is refused.
    with pytest.raises(redis.exceptions.ResponseError, match="equal or smaller"):
        await store.append([*tickers(4, 4), *tickers(2, 2), *tickers(5, 5), msg("ticker:MSFT", 1)])
    assert await store.since("ticker:AAPL", epoch="e1", seq=0) == tickers(1, 5)
    assert await store.head("ticker:MSFT") == ("e1", 1)
    await store.client.aclose()


# -- which store --------------------------------------------------------------------------------


async def test_the_in_memory_store_is_shared_by_everything_on_one_in_memory_layer() -> None:
    first = market_store()
    assert isinstance(first, MemoryMarketStore) and market_store() is first
    assert get_channel_layer() is not None
    channel_layers.backends.clear()  # another layer (a new test): another store
    assert market_store() is not first


@pytest.mark.redis
async def test_with_a_redis_layer_the_store_is_redis_under_the_layers_prefix(redis_layer: dict[str, Any]) -> None:
    store = market_store()
    assert isinstance(store, RedisMarketStore) and market_store() is store
    assert store.prefix == redis_layer["CONFIG"]["prefix"]
    await store.client.aclose()


async def test_trades_built_from_events_round_trip_through_the_store(store: MarketStore) -> None:
    hub, builder = Hub(epoch="e1"), MarketBuilder(epoch="e1")
    hub.apply(Trade("BTC-USD", T0, D("87648.21000000"), D("0.08185000"), "binance", "sell"))
    out = builder.build(hub, hub.drain())
    await store.append(out["BTC-USD"])
    [trades] = await store.since("trades:BTC-USD", epoch="e1", seq=0) or []
    assert trades == next(m for m in out["BTC-USD"] if m["ch"] == "trades:BTC-USD")
    assert trades["data"]["trades"] == [{"price": "87648.21", "size": "0.08185", "side": "sell", "ts": T0_MS}]
