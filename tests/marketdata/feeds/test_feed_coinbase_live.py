"""CoinbaseLive against a fake Coinbase on 127.0.0.1 (tests/marketdata/feeds/fake_exchange.py): real sockets, no sleeps."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from marketdata.events import BookDelta, BookSnapshot, MarketEvent, Quote, Trade
from marketdata.feeds.coinbase_live import CoinbaseLive
from marketdata.symbols import SymbolMap
from marketdata.worker.book import OrderBook
from tests.marketdata.feeds.fake_exchange import Collector, FakeConnection, FakeExchange

PRODUCTS = ["BTC-USD", "ETH-USD"]
SUBSCRIBES = [
    {"type": "subscribe", "product_ids": PRODUCTS, "channel": "level2"},
    {"type": "subscribe", "product_ids": PRODUCTS, "channel": "market_trades"},
    {"type": "subscribe", "product_ids": PRODUCTS, "channel": "ticker"},
    {"type": "subscribe", "channel": "heartbeats"},
]
RESYNC = [
    {"type": "unsubscribe", "product_ids": PRODUCTS, "channel": "level2"},
    {"type": "subscribe", "product_ids": PRODUCTS, "channel": "level2"},
]


def symbol_map() -> SymbolMap:
    return SymbolMap(instruments=["BTC", "ETH"], aliases={("coinbase", "BTC-USD"): "BTC", ("coinbase", "ETH-USD"): "ETH"})


def live(fake: FakeExchange, **options: Any) -> CoinbaseLive:
    settings: dict[str, Any] = {
        "symbols": PRODUCTS,
        "symbol_map": symbol_map(),
        "ws_url": fake.url,
        "stale_after": 5.0,
        "backoff_initial": 0.01,
        "backoff_max": 0.05,
        "rng": random.Random(1),
    }
    settings.update(options)
    return CoinbaseLive(**settings)


def l2(kind: str, product: str, *levels: tuple[str, str, str]) -> dict[str, Any]:
    """One l2_data event: levels are (side, price, quantity)."""
    return {
        "type": kind,
        "product_id": product,
        "updates": [
            {"side": side, "event_time": "2024-05-01T10:00:00.000001Z", "price_level": price, "new_quantity": qty}
            for side, price, qty in levels
        ],
    }


BTC_BOOK = (("bid", "60000.00", "1.5"), ("bid", "59999.99", "0.25"), ("offer", "60000.01", "0.75"), ("offer", "60000.50", "2"))
ETH_BOOK = (("bid", "3000.20", "4"), ("offer", "3000.30", "5"))


def trade(trade_id: int, product: str, price: str, side: str = "BUY") -> dict[str, Any]:
    return {
        "type": "update",
        "trades": [
            {
                "trade_id": str(trade_id),
                "product_id": product,
                "price": price,
                "size": "0.01",
                "side": side,
                "time": "2024-05-01T10:00:00.5Z",
            }
        ],
    }


class Coinbase:
    """The fake's Coinbase behaviour: confirm subscriptions; the first level2 subscription of a
    connection is answered with book snapshots, as Coinbase does (later ones the test answers)."""

    def __init__(self) -> None:
        self.fake: FakeExchange | None = None

    async def __call__(self, connection: FakeConnection, message: dict[str, Any]) -> None:
        assert self.fake is not None
        if message.get("type") != "subscribe":
            return
        channel = message["channel"]
        await self.fake.send_sequenced("subscriptions", [{"subscriptions": {channel: message.get("product_ids", [channel])}}])
        level2 = [m for n, m in self.fake.received if n == connection.number and m.get("channel") == "level2" and m["type"] == "subscribe"]
        if channel == "level2" and len(level2) == 1:
            await self.fake.send_sequenced("l2_data", [l2("snapshot", "BTC-USD", *BTC_BOOK), l2("snapshot", "ETH-USD", *ETH_BOOK)])


@pytest.fixture
async def fake() -> AsyncIterator[FakeExchange]:
    behaviour = Coinbase()
    async with FakeExchange(responder=behaviour) as exchange:
        behaviour.fake = exchange
        yield exchange


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="marketdata.feeds")
    return caplog


def of(kind: type[Any], events: Iterable[MarketEvent]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def count(kind: type[Any], n: int) -> Any:
    return lambda events: len(of(kind, events)) >= n


def book_of(events: Iterable[MarketEvent], symbol: str) -> OrderBook:
    book = OrderBook(symbol)
    for event in events:
        if isinstance(event, BookSnapshot | BookDelta) and event.symbol == symbol:
            book.apply(event)
    return book


async def test_subscribes_to_each_channel_and_heartbeats(fake: FakeExchange, logs: pytest.LogCaptureFixture) -> None:
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 4, what="four subscribe messages")
        await feed.wait_for(count(BookSnapshot, 2))
    finally:
        await feed.stop()
    assert [m for _, m in fake.received] == SUBSCRIBES
    assert (
        f"coinbase: connected to {fake.url}; subscribed to level2, market_trades, ticker, heartbeats for BTC-USD, ETH-USD" in logs.messages
    )


async def test_a_level2_snapshot_then_updates_trades_and_tickers_come_out_normalized(fake: FakeExchange) -> None:
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 4, what="subscriptions")
        await feed.wait_for(count(BookSnapshot, 2))
        await fake.send_sequenced("heartbeats", [{"current_time": "2024-05-01 10:00:00 +0000 UTC", "heartbeat_counter": "1"}])
        await fake.send_sequenced("l2_data", [l2("update", "BTC-USD", ("offer", "60000.01", "0"), ("bid", "60000.00", "1.75"))])
        await fake.send_sequenced("market_trades", [trade(102, "BTC-USD", "60000.50", side="SELL")])
        ticker = {"type": "ticker", "product_id": "ETH-USD", "price": "3000.25", "best_bid": "3000.20", "best_ask": "3000.30"}
        await fake.send_sequenced("ticker", [{"type": "update", "tickers": [ticker]}])
        await feed.wait_for(count(Quote, 1))
    finally:
        await feed.stop()

    ts = datetime(2024, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)
    snapshot_btc, snapshot_eth, delta, sold, quote = feed.events
    assert snapshot_btc == BookSnapshot(
        "BTC",
        ts,
        bids=((Decimal("60000.00"), Decimal("1.5")), (Decimal("59999.99"), Decimal("0.25"))),
        asks=((Decimal("60000.01"), Decimal("0.75")), (Decimal("60000.50"), Decimal("2"))),
        source="coinbase",
    )
    assert snapshot_eth.symbol == "ETH"
    assert delta == BookDelta(
        "BTC",
        ts,
        bids=((Decimal("60000.00"), Decimal("1.75")),),
        asks=((Decimal("60000.01"), Decimal("0")),),
        source="coinbase",
        source_id=6,  # the message's sequence_num
    )
    assert sold == Trade(
        "BTC",
        datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC),
        Decimal("60000.50"),
        Decimal("0.01"),
        "coinbase",
        side="buy",
        trade_id=102,
    )
    assert quote == Quote("ETH", ts, Decimal("3000.20"), Decimal("3000.30"), "coinbase")
    btc = book_of(feed.events, "BTC")
    assert btc.synced
    assert btc.top(5) == (
        [(Decimal("60000.00"), Decimal("1.75")), (Decimal("59999.99"), Decimal("0.25"))],
        [(Decimal("60000.50"), Decimal("2"))],
    )


async def test_a_sequence_gap_resubscribes_level2_and_drops_updates_until_the_new_snapshot(
    fake: FakeExchange, logs: pytest.LogCaptureFixture
) -> None:
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 4, what="subscriptions")
        await feed.wait_for(count(BookSnapshot, 2))
        await fake.send_sequenced("l2_data", [l2("update", "BTC-USD", ("bid", "60000.00", "1.6"))])
        await feed.wait_for(count(BookDelta, 1))

        fake.skip_sequence()  # a message lost on the way
        gapped = fake.current.seq
        # Sent after the lost one: it may build on what was lost, so it must not reach the book.
        await fake.send_sequenced("l2_data", [l2("update", "BTC-USD", ("bid", "60000.00", "9"))])
        await fake.wait_for(lambda: [m for _, m in fake.received][4:] == RESYNC, what="unsubscribe + subscribe level2")

        # Still before the new snapshot: dropped too. The trade after it shows it was read.
        await fake.send_sequenced("l2_data", [l2("update", "ETH-USD", ("offer", "3000.30", "7"))])
        await fake.send_sequenced("market_trades", [trade(103, "ETH-USD", "3000.25")])
        await feed.wait_for(count(Trade, 1))
        assert len(of(BookDelta, feed.events)) == 1

        await fake.send_sequenced("l2_data", [l2("snapshot", "BTC-USD", ("bid", "60000.00", "2"), ("offer", "60000.01", "1"))])
        await fake.send_sequenced("l2_data", [l2("update", "BTC-USD", ("bid", "59999.00", "3"))])
        await fake.send_sequenced("l2_data", [l2("update", "ETH-USD", ("offer", "3000.40", "1"))])  # ETH has no new snapshot yet
        await fake.send_sequenced("l2_data", [l2("snapshot", "ETH-USD", ("bid", "3000.00", "1"), ("offer", "3000.50", "1"))])
        await fake.send_sequenced("l2_data", [l2("update", "ETH-USD", ("offer", "3000.60", "2"))])
        await feed.wait_for(count(BookSnapshot, 4))
        await feed.wait_for(count(BookDelta, 3))
    finally:
        await feed.stop()

    deltas = of(BookDelta, feed.events)
    assert [(d.symbol, d.bids, d.asks) for d in deltas] == [
        ("BTC", ((Decimal("60000.00"), Decimal("1.6")),), ()),
        ("BTC", ((Decimal("59999.00"), Decimal("3")),), ()),
        ("ETH", (), ((Decimal("3000.60"), Decimal("2")),)),
    ]
    assert (
        f"coinbase: sequence gap: sequence_num {gapped} after {gapped - 2} (1 message(s) lost); level-2 updates dropped until new snapshots"
        in logs.messages
    )
    assert "coinbase: resync: resubscribing to level2 for BTC-USD, ETH-USD" in logs.messages
    btc = book_of(feed.events, "BTC")
    assert btc.top(5) == ([(Decimal("60000.00"), Decimal("2")), (Decimal("59999.00"), Decimal("3"))], [(Decimal("60000.01"), Decimal("1"))])


async def test_a_dropped_connection_reconnects_and_resubscribes_everything(fake: FakeExchange, logs: pytest.LogCaptureFixture) -> None:
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 4, what="subscriptions")
        await feed.wait_for(count(BookSnapshot, 2))
        await fake.send_sequenced("market_trades", [trade(200, "BTC-USD", "60000.00")])
        await feed.wait_for(count(Trade, 1))

        await fake.drop()
        await fake.wait_for(lambda: len(fake.subscriptions(connection=2)) == 4, what="subscriptions on the new connection")
        await feed.wait_for(count(BookSnapshot, 4), what="fresh snapshots on the new connection")
        await fake.send_sequenced("l2_data", [l2("update", "BTC-USD", ("bid", "59990.00", "1"))])
        await fake.send_sequenced("market_trades", [trade(201, "BTC-USD", "60000.10")])
        await feed.wait_for(count(Trade, 2))
    finally:
        await feed.stop()

    assert fake.subscriptions(connection=2) == SUBSCRIBES
    assert fake.current.seq > 0 and fake.connections[1].number == 2
    assert "coinbase: connection closed: code 1006, reason '' (no close frame: connection lost)" in logs.messages
    assert any(m.startswith("coinbase: reconnecting in ") for m in logs.messages)
    # Numbering restarts on the new connection: that is no gap.
    assert not any("sequence gap" in m for m in logs.messages)
    assert len(of(BookDelta, feed.events)) == 1


async def test_an_error_message_drops_the_connection_and_subscribes_again(fake: FakeExchange, logs: pytest.LogCaptureFixture) -> None:
    feed = Collector(live(fake)).start()
    try:
        await fake.wait_for(lambda: len(fake.received) == 4, what="subscriptions")
        await fake.send({"type": "error", "message": "failure to subscribe"})
        await fake.wait_for(lambda: len(fake.subscriptions(connection=2)) == 4, what="subscriptions on a new connection")
    finally:
        await feed.stop()
    assert fake.connections[0].close_code == 1000
    assert "coinbase: error message: 'failure to subscribe'" in logs.messages


async def test_cancelling_the_iteration_closes_the_socket(fake: FakeExchange) -> None:
    feed = Collector(live(fake)).start()
    await fake.wait_for(lambda: len(fake.received) == 4, what="subscriptions")
    await feed.stop()
    await fake.wait_for(lambda: fake.current.closed, within=3.0, what="the server to see the close")
    assert fake.current.close_code == 1000
