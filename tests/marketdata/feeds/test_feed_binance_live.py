"""BinanceLive against a fake Binance on 127.0.0.1 (tests/marketdata/feeds/fake_exchange.py): real sockets, no sleeps."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from marketdata.events import BookDelta, BookSnapshot, MarketEvent, Quote, Trade
from marketdata.feeds.binance_live import BinanceLive
from marketdata.feeds.reconnect import Backoff
from marketdata.symbols import SymbolMap
from marketdata.worker.book import OrderBook
from tests.marketdata.feeds.fake_exchange import Collector, FakeExchange, binance_responder

NOW = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
STREAMS = ["btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@depth@100ms"]


def symbol_map() -> SymbolMap:
    return SymbolMap(instruments=["BTC"], aliases={("binance", "BTCUSDT"): "BTC"})


def live(fake: FakeExchange, **options: Any) -> BinanceLive:
    settings: dict[str, Any] = {
        "symbols": ["BTCUSDT"],
        "symbol_map": symbol_map(),
        "ws_url": fake.url,
        "rest_url": fake.http_url,
        "stale_after": 5.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "rng": random.Random(1),
        "now": lambda: NOW,
    }
    settings.update(options)
    return BinanceLive(**settings)


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    async with FakeExchange(responder=binance_responder) as exchange:
        yield exchange


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="marketdata.feeds")
    return caplog


def of(kind: type[Any], events: Iterable[MarketEvent]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def count(kind: type[Any], n: int) -> Any:
    return lambda events: len(of(kind, events)) >= n


def apply_books(events: Iterable[MarketEvent], symbol: str = "BTC") -> OrderBook:
    """The worker's order book fed with the connector's depth events, in order."""
    book = OrderBook(symbol)
    for event in events:
        if isinstance(event, BookSnapshot | BookDelta):
            book.apply(event)
    return book


async def test_events_arrive_normalized_and_the_first_diff_brings_a_rest_snapshot(
    fake: FakeExchange, logs: pytest.LogCaptureFixture
) -> None:
    book = fake.book("BTCUSDT")
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 1, what="SUBSCRIBE")
        await fake.send(book.agg_trade(5, "60000.10", "0.5", buyer_maker=True))
        await fake.send(book.book_ticker("60000.00", "60001.00"))
        await feed.wait_for(lambda events: len(events) == 2)
        assert fake.rest_requests == []  # no depth diff yet, so no snapshot

        diff = book.diff()
        await fake.send(diff)
        await feed.wait_for(count(BookSnapshot, 1), what="the snapshot")
    finally:
        await feed.stop()

    trade, quote, delta, snapshot = feed.events
    assert trade == Trade(
        symbol="BTC",
        ts=datetime(2024, 5, 1, 9, 59, 59, 999000, tzinfo=UTC),
        price=Decimal("60000.10"),
        size=Decimal("0.5"),
        source="binance",
        side="sell",
        trade_id=5,
    )
    assert quote == Quote(
        symbol="BTC", ts=NOW, bid=Decimal("60000.00"), ask=Decimal("60001.00"), source="binance", update_id=quote.update_id
    )
    assert quote.update_id is not None
    assert isinstance(delta, BookDelta)
    assert (delta.symbol, delta.first_id, delta.last_id) == ("BTC", diff["data"]["U"], diff["data"]["u"])
    assert isinstance(snapshot, BookSnapshot)
    assert (snapshot.symbol, snapshot.update_id) == ("BTC", book.update_id)
    assert fake.rest_requests == [{"symbol": "BTCUSDT", "limit": "1000"}]
    # The REST request came only after the diff went out.
    assert fake.log.index(("rest", "BTCUSDT")) > fake.log.index(("send", diff))
    assert apply_books(feed.events).top(10) == book.top(10)


async def test_subscribe_is_sent_with_every_stream_and_its_reply_checked(fake: FakeExchange, logs: pytest.LogCaptureFixture) -> None:
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 1, what="SUBSCRIBE")
        # The reply is the next message on the connection; a frame after it proves it was read.
        book = fake.book("BTCUSDT")
        await fake.send(book.agg_trade(1, "60000", "1", buyer_maker=False))
        await feed.wait_for(count(Trade, 1))
    finally:
        await feed.stop()
    assert fake.received == [(1, {"method": "SUBSCRIBE", "params": STREAMS, "id": 1})]
    assert f"binance: connected to {fake.url}/stream; subscribed to {', '.join(STREAMS)} (id 1)" in logs.messages


async def test_a_rejected_subscribe_drops_the_connection_and_tries_again(logs: pytest.LogCaptureFixture) -> None:
    async def reject(connection: Any, message: dict[str, Any]) -> None:
        await connection.send({"error": {"code": 2, "msg": "Invalid request: unknown stream"}, "id": message["id"]})

    async with FakeExchange(responder=reject) as fake:
        feed = Collector(live(fake)).start()
        try:
            await fake.wait_for(lambda: len(fake.received) >= 2, what="a second SUBSCRIBE")
        finally:
            await feed.stop()
    assert fake.connections[0].close_code == 1000  # closed by the connector, cleanly
    assert any("SUBSCRIBE (id 1) rejected" in m for m in logs.messages)


async def test_a_connection_dropped_mid_stream_reconnects_resubscribes_and_fetches_a_new_snapshot(
    fake: FakeExchange, logs: pytest.LogCaptureFixture
) -> None:
    book = fake.book("BTCUSDT")
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 1, what="SUBSCRIBE")
        await fake.send(book.diff())
        await feed.wait_for(count(BookSnapshot, 1))
        await fake.send(book.diff())
        await feed.wait_for(count(BookDelta, 2))

        await fake.drop()  # no close frame: the network went away
        await fake.wait_for(lambda: len(fake.received) == 2, what="SUBSCRIBE on the new connection")
        assert fake.received[1] == (2, {"method": "SUBSCRIBE", "params": STREAMS, "id": 2})

        await fake.send(book.diff())
        await feed.wait_for(count(BookSnapshot, 2), what="a snapshot on the new connection")
        await fake.send(book.diff())
        await fake.send(book.agg_trade(9, "60000.50", "0.1", buyer_maker=False))
        await feed.wait_for(count(Trade, 1))
    finally:
        await feed.stop()

    assert len(fake.connections) == 2
    assert [r["symbol"] for r in fake.rest_requests] == ["BTCUSDT", "BTCUSDT"]
    assert "binance: connection closed: code 1006, reason '' (no close frame: connection lost)" in logs.messages
    assert any(m.startswith("binance: reconnecting in ") for m in logs.messages)
    assert sum(m.startswith("binance: connecting to ") for m in logs.messages) == 2
    synced = apply_books(feed.events)
    assert synced.synced
    assert synced.top(10) == book.top(10)


async def test_a_skipped_diff_is_a_gap_that_brings_a_new_snapshot_and_the_book_ends_in_sync(
    fake: FakeExchange, logs: pytest.LogCaptureFixture
) -> None:
    book = fake.book("BTCUSDT")
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 1, what="SUBSCRIBE")
        await fake.send(book.diff())
        await feed.wait_for(count(BookSnapshot, 1))
        await fake.send(book.diff())
        expected_u = book.update_id
        book.skip()  # this diff never leaves the exchange
        gap = book.diff()
        await fake.send(gap)
        await feed.wait_for(count(BookSnapshot, 2), what="the snapshot after the gap")
        for _ in range(3):
            await fake.send(book.diff())
        await feed.wait_for(count(BookDelta, 6))
    finally:
        await feed.stop()

    assert len(fake.rest_requests) == 2
    assert f"binance: BTCUSDT depth gap: U={gap['data']['U']} after u={expected_u}; fetching a new snapshot" in logs.messages
    assert any(m.startswith("binance: BTCUSDT resync: snapshot lastUpdateId=") for m in logs.messages)
    # The worker's book, fed what the connector yielded, loses sync at the gap and regains it.
    synced = apply_books(feed.events)
    assert synced.synced
    assert synced.resyncs == 1
    assert synced.update_id == book.update_id
    assert synced.top(100) == book.top(100)


async def test_a_snapshot_older_than_the_first_diff_is_fetched_again(fake: FakeExchange, logs: pytest.LogCaptureFixture) -> None:
    book = fake.book("BTCUSDT")
    stale_snapshot = {**book.snapshot(), "lastUpdateId": 990}  # before the diff stream starts (U=1001)
    fake.snapshot_answers["BTCUSDT"] = deque([stale_snapshot])
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 1, what="SUBSCRIBE")
        await fake.send(book.diff())
        await feed.wait_for(count(BookSnapshot, 1))
    finally:
        await feed.stop()
    assert len(fake.rest_requests) == 2
    assert [s.update_id for s in of(BookSnapshot, feed.events)] == [book.update_id]  # the stale one is never yielded
    assert "binance: BTCUSDT snapshot lastUpdateId=990 is older than the first diff U=1001; fetching again (try 2 of 5)" in logs.messages


async def test_a_silent_server_is_caught_by_the_stale_watchdog_within_stale_after(
    fake: FakeExchange, logs: pytest.LogCaptureFixture
) -> None:
    loop = asyncio.get_running_loop()
    feed = Collector(live(fake, stale_after=0.5)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 1, what="SUBSCRIBE")
        last_message = loop.time()  # the subscription reply goes out now; then nothing
        await fake.wait_for(lambda: len(fake.connections) == 2, within=3.0, what="a reconnect")
        waited = loop.time() - last_message
    finally:
        await feed.stop()
    # stale_after, plus at most the 0.05 s backoff and a connect on loopback.
    assert 0.45 <= waited < 0.5 + 0.05 + 0.5
    assert "binance: stale: no message for 0.5 s; reconnecting" in logs.messages
    assert fake.connections[0].close_code == 1000  # the connector closed the dead link itself


async def test_cancelling_the_iteration_closes_the_socket(fake: FakeExchange) -> None:
    feed = Collector(live(fake)).start()
    await fake.wait_for(lambda: len(fake.received) == 1, what="SUBSCRIBE")
    await feed.stop()
    await fake.wait_for(lambda: fake.current.closed, within=3.0, what="the server to see the close")
    assert fake.current.close_code == 1000
    assert len(fake.connections) == 1


def test_backoff_delays_grow_to_the_cap_and_are_jittered() -> None:
    class Ceiling(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    top = Backoff(initial=0.5, maximum=30.0, rng=Ceiling())
    assert [top.next_delay() for _ in range(9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]

    seeded = Backoff(initial=0.5, maximum=30.0, rng=random.Random(42))
    delays = [seeded.next_delay() for _ in range(9)]
    same_seed = random.Random(42)
    assert delays == [same_seed.uniform(0, c) for c in (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0)]
    assert all(0 <= d <= c for d, c in zip(delays, (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0), strict=True))
    assert len(set(delays)) == len(delays)  # jittered: no two alike
    other = Backoff(initial=0.5, maximum=30.0, rng=random.Random(43))
    assert [other.next_delay() for _ in range(9)] != delays

    seeded.reset()
    assert (seeded.attempt, seeded.ceiling()) == (0, 0.5)


async def test_failed_connects_wait_growing_jittered_delays(logs: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port with nobody listening: every connect is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    delays: list[float] = []
    enough = asyncio.Event()

    async def sleep(delay: float) -> None:
        delays.append(delay)
        if len(delays) == 5:
            enough.set()
            await asyncio.Event().wait()  # no sixth attempt: the test cancels here

    feed = BinanceLive(
        symbols=["BTCUSDT"],
        symbol_map=symbol_map(),
        ws_url=f"ws://127.0.0.1:{port}",
        rest_url=f"http://127.0.0.1:{port}",
        backoff_initial=0.5,
        backoff_max=4.0,
        rng=random.Random(7),
        sleep=sleep,
    )
    collector = Collector(feed).start()
    async with asyncio.timeout(5):
        await enough.wait()
    await collector.stop()
    expected = random.Random(7)
    assert delays == [expected.uniform(0, c) for c in (0.5, 1.0, 2.0, 4.0, 4.0)]
    assert any(m.startswith(f"binance: cannot connect to ws://127.0.0.1:{port}/stream") for m in logs.messages)
    assert f"binance: reconnecting in {delays[0]:.2f} s (attempt 2)" in logs.messages


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="no symbols"):
        BinanceLive(symbols=[], symbol_map=symbol_map())
    with pytest.raises(ValueError, match="depth_limit"):
        BinanceLive(symbols=["BTCUSDT"], symbol_map=symbol_map(), depth_limit=0)
    with pytest.raises(ValueError, match="backoff"):
        BinanceLive(symbols=["BTCUSDT"], symbol_map=symbol_map(), backoff_initial=2, backoff_max=1)
