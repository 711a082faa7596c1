from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketdata.api.channels import book_checksum, channel_parse
from marketdata.events import BookDelta, BookSnapshot, Level, PriceUpdate, Quote, Trade
from marketdata.worker.hub import TRADES_PER_WINDOW, Hub
from marketdata.worker.market import MarketBuilder, Message, ticker_data, ticker_price, wire
from marketdata.worker.references import Mark, MarketHours, References

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def ms(n: int) -> datetime:
    return T0 + timedelta(milliseconds=n)


def trade(symbol: str, price: str, at: int = 0, size: str = "1", side: str | None = "buy") -> Trade:
    return Trade(symbol, ms(at), D(price), D(size), "test", side)


def levels(*pairs: tuple[str, str]) -> tuple[Level, ...]:
    return tuple((D(p), D(q)) for p, q in pairs)


def snapshot(symbol: str, bids: tuple[tuple[str, str], ...], asks: tuple[tuple[str, str], ...], at: int = 0) -> BookSnapshot:
    return BookSnapshot(symbol, ms(at), levels(*bids), levels(*asks), "coinbase")


def delta(symbol: str, bids: tuple[tuple[str, str], ...] = (), asks: tuple[tuple[str, str], ...] = (), at: int = 0) -> BookDelta:
    return BookDelta(symbol, ms(at), levels(*bids), levels(*asks), "coinbase")


class Window:
    """A hub and its builder, driven window by window as the worker does."""

    def __init__(self, references: References | None = None, session: str = "") -> None:
        self.hub = Hub(epoch="e1", references=references)
        self.builder = MarketBuilder(epoch="e1", session=session)

    def __call__(self, *events: Any, minute: datetime | None = None) -> dict[str, list[Message]]:
        for event in events:
            self.hub.apply(event)
        return self.builder.build(self.hub, self.hub.drain(), minute=minute)

    def close_minute(self, start: datetime, *, closed: bool = True) -> None:
        self.builder.minute_closed(self.hub.take_minute(start), self.hub, closed=closed)


def on(window: dict[str, list[Message]], channel: str) -> list[Message]:
    return [m for m in window.get(channel_parse(channel).symbol, []) if m["ch"] == channel]


# -- envelope and seq --------------------------------------------------------------------------


def test_every_message_carries_channel_epoch_seq_ts_and_data() -> None:
    w = Window()
    out = w(trade("BTC-USD", "100", at=5))
    assert set(out) == {"BTC-USD"}
    assert {m["ch"] for m in out["BTC-USD"]} == {"ticker:BTC-USD", "trades:BTC-USD", "candles:BTC-USD@1m"}
    for message in out["BTC-USD"]:
        assert set(message) == {"ch", "epoch", "seq", "ts", "data"}
        assert (message["epoch"], message["seq"], message["ts"]) == ("e1", 1, T0_MS + 5)


def test_seq_rises_by_one_per_message_on_each_channel_independently() -> None:
    w = Window()
    seqs: dict[str, list[int]] = {}
    for i in range(4):
        events: list[Any] = [trade("AAPL", str(100 + i), at=i)]
        if i % 2:
            events.append(Quote("EUR/USD", ms(i), D("1.1"), D(f"1.1{i}"), "test"))
        for messages in w(*events).values():
            for m in messages:
                seqs.setdefault(m["ch"], []).append(m["seq"])
    assert seqs == {
        "ticker:AAPL": [1, 2, 3, 4],
        "trades:AAPL": [1, 2, 3, 4],
        "candles:AAPL@1m": [1, 2, 3, 4],
        "ticker:EUR/USD": [1, 2],
        "candles:EUR/USD@1m": [1, 2],
    }


def test_a_sandbox_builder_names_its_session_channels_with_the_live_messages_otherwise_alike() -> None:
    events: list[Any] = [
        snapshot("BTC-USD", (("99", "1"),), (("101", "2"),), at=1),
        trade("BTC-USD", "100", at=2),
        Quote("BTC-USD", ms(3), D("99"), D("101"), "test"),
    ]
    live, sandbox = Window()(*events), Window(session="day1")(*events)
    assert set(sandbox) == set(live) == {"BTC-USD"}  # keyed by symbol: the worker publishes them on the session's stream
    assert [m["ch"] for m in sandbox["BTC-USD"]] == [f"{m['ch']}?session=day1" for m in live["BTC-USD"]]
    assert [{**m, "ch": ""} for m in sandbox["BTC-USD"]] == [{**m, "ch": ""} for m in live["BTC-USD"]]
    # A session's ticker prices no portfolio: it is not the market's price.
    with pytest.raises(ValueError, match="replay session"):
        ticker_price(on(sandbox, "ticker:BTC-USD?session=day1")[0])


def test_a_quiet_window_builds_nothing() -> None:
    w = Window()
    w(trade("AAPL", "100"))
    assert w() == {}


# -- ticker ------------------------------------------------------------------------------------


def test_ticker_change_is_last_minus_ref_and_its_percentage_rounded_to_two_places() -> None:
    refs = References({"BTC-USD": MarketHours(always_open=True)}, [Mark("BTC-USD", T0 - timedelta(days=1), D("60000"))])
    w = Window(refs)
    w.hub.apply(Quote("BTC-USD", ms(0), D("60999.50"), D("61000.50"), "test"))
    [ticker] = on(w(trade("BTC-USD", "61000.00", at=1)), "ticker:BTC-USD")
    # 1000 / 60000 = 1.6666…% → 1.67
    assert ticker["data"] == {
        "last": "61000",
        "bid": "60999.5",
        "ask": "61000.5",
        "ref": "60000",
        "change": "1000",
        "change_pct": "1.67",
        "replay": False,
    }
    [down] = on(w(trade("BTC-USD", "59999.99", at=2)), "ticker:BTC-USD")
    assert (down["data"]["change"], down["data"]["change_pct"]) == ("-0.01", "-0.00")
    [flat] = on(w(trade("BTC-USD", "60000.0000", at=3)), "ticker:BTC-USD")
    assert (flat["data"]["last"], flat["data"]["change"], flat["data"]["change_pct"]) == ("60000", "0", "0.00")


def test_ticker_without_reference_or_quotes_has_nulls() -> None:
    w = Window()
    [ticker] = on(w(trade("AAPL", "200.50")), "ticker:AAPL")
    assert ticker["data"] == {"last": "200.5", "bid": None, "ask": None, "ref": None, "change": None, "change_pct": None, "replay": False}


def test_one_ticker_message_per_price_update_drained_in_the_window() -> None:
    w = Window()
    w.hub.apply(trade("AAPL", "100", at=1))
    first = w.hub.drain()  # a minute closing mid-window drains too
    w.hub.apply(trade("AAPL", "101", at=2))
    out = w.builder.build(w.hub, first + w.hub.drain())
    assert [(m["seq"], m["data"]["last"], m["ts"]) for m in on(out, "ticker:AAPL")] == [(1, "100", T0_MS + 1), (2, "101", T0_MS + 2)]


def test_ticker_zero_reference_gives_no_percentage() -> None:
    update = PriceUpdate("X", 1, "e1", D("5"), None, None, T0, "test", 1, reference=D("0"))
    out = MarketBuilder(epoch="e1").build(Hub(epoch="e1"), [update])
    assert out["X"][0]["data"]["change"] == "5" and out["X"][0]["data"]["change_pct"] is None


def test_decimals_have_one_spelling() -> None:
    assert [wire(D(s)) for s in ("87648.20000000", "100", "1E+2", "0E-8", "0.00000010", "-0.0", "12.5")] == [
        "87648.2",
        "100",
        "100",
        "0",
        "0.0000001",
        "0",
        "12.5",
    ]


# -- trades ------------------------------------------------------------------------------------


def test_the_trades_of_a_window_go_out_as_one_message_oldest_first() -> None:
    w = Window()
    out = w(trade("BTC-USD", "100", at=1, size="0.5"), trade("BTC-USD", "101", at=2, side="sell"), trade("BTC-USD", "99", at=3, side=None))
    [message] = on(out, "trades:BTC-USD")
    assert message["ts"] == T0_MS + 3
    assert message["data"] == {
        "trades": [
            {"price": "100", "size": "0.5", "side": "buy", "ts": T0_MS + 1},
            {"price": "101", "size": "1", "side": "sell", "ts": T0_MS + 2},
            {"price": "99", "size": "1", "side": None, "ts": T0_MS + 3},
        ]
    }
    # Next window: only the new trade; a quote alone makes no trades message.
    [next_one] = on(w(trade("BTC-USD", "98", at=4)), "trades:BTC-USD")
    assert [t["price"] for t in next_one["data"]["trades"]] == ["98"] and next_one["seq"] == 2
    assert on(w(Quote("BTC-USD", ms(5), D("97"), D("98"), "test")), "trades:BTC-USD") == []


def test_a_window_keeps_its_latest_trades_up_to_the_cap_and_counts_the_rest() -> None:
    w = Window()
    extra = 7
    [message] = on(w(*(trade("BTC-USD", str(1000 + i), at=i) for i in range(TRADES_PER_WINDOW + extra))), "trades:BTC-USD")
    prices = [t["price"] for t in message["data"]["trades"]]
    assert len(prices) == TRADES_PER_WINDOW and prices[0] == str(1000 + extra) and prices[-1] == str(1000 + TRADES_PER_WINDOW + extra - 1)
    assert w.hub.trades_dropped == extra
    # A minute closing inside the window does not disturb the count.
    w(trade("BTC-USD", "1", at=60_000))
    w.close_minute(T0 + timedelta(minutes=1))
    [later] = on(w(trade("BTC-USD", "2", at=120_000)), "trades:BTC-USD")
    assert [t["price"] for t in later["data"]["trades"]] == ["2"] and w.hub.trades_dropped == extra


def test_a_hub_not_collecting_for_the_market_gives_no_trades() -> None:
    hub = Hub(epoch="e1", market=False)
    hub.apply(trade("AAPL", "1"))
    hub.apply(snapshot("AAPL", (("1", "1"),), (("2", "1"),)))
    assert (hub.take_trades(), hub.take_book_changes()) == ({}, {})


# -- candles -----------------------------------------------------------------------------------


def test_the_open_candle_goes_out_when_it_changes_and_closes_once() -> None:
    w = Window()
    [first] = on(w(trade("BTC-USD", "100", at=1_000, size="2"), trade("BTC-USD", "105", at=2_000), minute=T0), "candles:BTC-USD@1m")
    assert first["data"] == {
        "candle": {"start": T0_MS, "open": "100", "high": "105", "low": "100", "close": "105", "volume": "3", "trades": 2, "closed": False}
    }
    assert first["ts"] == T0_MS + 2_000
    # A quote on a traded symbol changes bid and ask, not the candle: a ticker but no candle message.
    out = w(Quote("BTC-USD", ms(3_000), D("104"), D("106"), "test"), minute=T0)
    assert on(out, "ticker:BTC-USD") and not on(out, "candles:BTC-USD@1m")
    [second] = on(w(trade("BTC-USD", "95", at=4_000), minute=T0), "candles:BTC-USD@1m")
    assert (second["seq"], second["data"]["candle"]["low"], second["data"]["candle"]["close"]) == (2, "95", "95")

    # The minute closes (a tick of the next minute arrived): the close goes out with the next window, then the new minute.
    w.close_minute(T0)
    one = T0 + timedelta(minutes=1)
    messages = on(w(trade("BTC-USD", "96", at=60_500), minute=one), "candles:BTC-USD@1m")
    assert [(m["seq"], m["data"]["candle"]["start"], m["data"]["candle"]["closed"]) for m in messages] == [
        (3, T0_MS, True),
        (4, T0_MS + 60_000, False),
    ]
    assert messages[0]["data"]["candle"] | {"closed": False} == second["data"]["candle"]
    assert messages[0]["ts"] == T0_MS + 4_000  # its latest event


def test_a_minute_closed_without_change_since_its_last_update_still_sends_closed() -> None:
    w = Window()
    w(trade("AAPL", "1"), minute=T0)
    w.close_minute(T0)
    [closed] = on(w(), "candles:AAPL@1m")
    assert closed["data"]["candle"]["closed"] is True and closed["seq"] == 2


def test_the_minute_still_open_at_shutdown_is_never_sent_as_closed() -> None:
    w = Window()
    w(trade("AAPL", "1"), minute=T0)
    w.hub.apply(trade("AAPL", "2", at=1))
    w.hub.drain()
    w.close_minute(T0, closed=False)
    [last] = on(w(), "candles:AAPL@1m")
    assert (last["data"]["candle"]["close"], last["data"]["candle"]["closed"]) == ("2", False)


# -- books -------------------------------------------------------------------------------------


def test_the_first_book_message_is_the_whole_top_n_then_only_changed_levels() -> None:
    w = Window()
    bids = tuple((str(100 - i), "1") for i in range(12))
    asks = tuple((str(101 + i), "2.50") for i in range(12))
    out = w(snapshot("BTC-USD", bids, asks, at=7))
    [one] = on(out, "book:BTC-USD@depth=1")
    [ten] = on(out, "book:BTC-USD@depth=10")
    [fifty] = on(out, "book:BTC-USD@depth=50")
    assert one["data"] == {
        "bids": [["100", "1"]],
        "asks": [["101", "2.5"]],
        "checksum": book_checksum(*_levels([["100", "1"]], [["101", "2.5"]])),
        "state": "synced",
        "update_id": None,  # Coinbase-like: the source numbers no book versions
    }
    assert len(ten["data"]["bids"]) == 10 and len(fifty["data"]["bids"]) == 12 and one["ts"] == T0_MS + 7
    assert ten["data"]["bids"][0] == ["100", "1"] and ten["data"]["asks"][0] == ["101", "2.5"]  # best first

    # A level below the top 10 changes: only depth 50 hears of it.
    out = w(delta("BTC-USD", bids=(("89", "3"),)))
    assert [m["ch"] for m in out["BTC-USD"] if m["ch"].startswith("book")] == ["book:BTC-USD@depth=50"]
    assert on(out, "book:BTC-USD@depth=50")[0]["data"]["bids"] == [["89", "3"]]

    # A better bid pushes 100 out of the top 1 and 91 out of the top 10: "0" for each.
    out = w(delta("BTC-USD", bids=(("100.5", "4"),)))
    assert on(out, "book:BTC-USD@depth=1")[0]["data"]["bids"] == [["100.5", "4"], ["100", "0"]]
    assert on(out, "book:BTC-USD@depth=10")[0]["data"]["bids"] == [["100.5", "4"], ["91", "0"]]
    assert on(out, "book:BTC-USD@depth=50")[0]["data"]["bids"] == [["100.5", "4"]]
    # An emptied level is "0" too, and the one below it moves into the top 10.
    out = w(delta("BTC-USD", asks=(("101", "0"),)))
    assert on(out, "book:BTC-USD@depth=10")[0]["data"]["asks"] == [["101", "0"], ["111", "2.5"]]
    assert on(out, "book:BTC-USD@depth=1")[0]["data"]["asks"] == [["101", "0"], ["102", "2.5"]]


def test_a_book_that_loses_sync_says_so_and_clears_its_levels_until_a_snapshot_brings_the_whole_top_back() -> None:
    w = Window()
    bids, asks = (
        levels(("10", "1"), ("9", "1")),
        levels(
            ("11", "1"),
        ),
    )
    w(BookSnapshot("X", ms(0), bids, asks, "binance", update_id=100))
    out = w(
        BookDelta(
            "X",
            ms(1),
            levels(
                ("10", "2"),
            ),
            (),
            "binance",
            first_id=101,
            last_id=101,
        )
    )
    assert on(out, "book:X@depth=10")[0]["data"]["update_id"] == 101  # the exchange's `u`, to check against its data

    out = w(
        BookDelta(
            "X",
            ms(2),
            levels(
                ("10", "5"),
            ),
            (),
            "binance",
            first_id=105,
            last_id=106,
        )
    )  # 102..104 lost
    [lost] = on(out, "book:X@depth=10")
    assert lost["data"] | {"checksum": 0} == {
        "bids": [["10", "0"], ["9", "0"]],
        "asks": [["11", "0"]],
        "checksum": 0,
        "state": "out_of_sync",
        "update_id": 101,
    }
    empty = {"bids": [], "asks": [], "checksum": book_checksum([], []), "state": "out_of_sync", "update_id": 101}
    assert w.builder.book_view("book:X@depth=10") == empty
    # Nothing more while it is out of sync, however the levels move.
    assert (
        on(
            w(
                BookDelta(
                    "X",
                    ms(3),
                    levels(
                        ("10", "6"),
                    ),
                    (),
                    "binance",
                    first_id=107,
                    last_id=107,
                )
            ),
            "book:X@depth=10",
        )
        == []
    )

    out = w(
        BookSnapshot(
            "X",
            ms(4),
            levels(("10", "6"), ("8", "2")),
            levels(
                ("11", "1"),
            ),
            "binance",
            update_id=107,
        )
    )
    [back] = on(out, "book:X@depth=10")
    assert back["data"]["bids"] == [["10", "6"], ["8", "2"]] and back["data"]["asks"] == [["11", "1"]]
    assert (back["data"]["state"], back["data"]["update_id"]) == ("synced", 107)


def test_a_level_respelled_with_the_same_value_is_no_change() -> None:
    w = Window()
    w(snapshot("X", (("10.0", "1.50"),), (("11", "1"),)))
    out = w(delta("X", bids=(("10.00", "0"),)), delta("X", bids=(("10", "1.5"),)))
    assert [m for m in out.get("X", []) if m["ch"].startswith("book")] == []
    assert w.builder.book_view("book:X@depth=1")["bids"] == [["10", "1.5"]]


# -- a client following the book channels converges on the book -------------------------------


def _levels(bids: list[list[str]], asks: list[list[str]]) -> tuple[list[Level], list[Level]]:
    # book_checksum writes each level with f"{price}:{qty}": the wire strings go through as they are.
    return cast("list[Level]", [tuple(x) for x in bids]), cast("list[Level]", [tuple(x) for x in asks])


class ClientBook:
    """What a client does with a book channel: start from a snapshot, apply updates by price string."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.sides: dict[str, dict[str, str]] = {"bids": dict(map(tuple, data["bids"])), "asks": dict(map(tuple, data["asks"]))}
        self.state, self.update_id = data["state"], data["update_id"]

    def apply(self, data: dict[str, Any]) -> None:
        self.state, self.update_id = data["state"], data["update_id"]
        for side in ("bids", "asks"):
            for price, qty in data[side]:
                if qty == "0":
                    self.sides[side].pop(price, None)
                else:
                    self.sides[side][price] = qty

    def view(self) -> dict[str, Any]:
        bids = [[p, q] for p, q in sorted(self.sides["bids"].items(), key=lambda level: D(level[0]), reverse=True)]
        asks = [[p, q] for p, q in sorted(self.sides["asks"].items(), key=lambda level: D(level[0]))]
        checksum = book_checksum(*_levels(bids[:10], asks[:10]))
        return {"bids": bids, "asks": asks, "checksum": checksum, "state": self.state, "update_id": self.update_id}


QUANTITIES = ["1", "2.5", "2.50", "0.001", "7"]  # 2.5 twice, spelt two ways
quantities = st.sampled_from(["0", "0", *QUANTITIES])


def quarters(low: int, count: int) -> st.SearchStrategy[Decimal]:
    return st.integers(0, count - 1).map(lambda n: D(low) + D(n) / 4)


def book_side(best: Decimal, step: Decimal, count: int, seed: int) -> tuple[Level, ...]:
    """`count` price steps from `best`, about one in five left empty, with quantities from `seed`."""
    rng = random.Random(seed)
    return tuple((best + step * i, D(rng.choice(QUANTITIES))) for i in range(count) if rng.random() < 0.8)


# Snapshots: bids from 104.75 down, asks from 105 up, by quarters, up to 70 deep (past a top 50). Delta bids
# reach 105.25 at times, crossing the book: that is a lost sync, until the next snapshot.
side_deltas = st.lists(st.tuples(quarters(88, 70), quantities), max_size=6)
actions = st.one_of(
    st.tuples(st.just("snapshot"), st.integers(0, 70), st.integers(0, 70), st.integers(0, 2**16)),
    st.tuples(st.just("delta"), side_deltas, st.lists(st.tuples(quarters(105, 72), quantities), max_size=6), st.just(0)),
    st.tuples(st.just("reset"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("window"), st.just(0), st.just(0), st.just(0)),
)


def _spell(level: tuple[Decimal, str]) -> tuple[Decimal, Decimal]:
    price, qty = level
    return D(f"{price:f}0") if "." in f"{price:f}" else price, D(qty)  # the same price, spelt another way at times


@settings(max_examples=300, deadline=None)
@given(st.lists(actions, max_size=30), st.integers(min_value=0, max_value=30))
def test_snapshot_plus_updates_equals_a_fresh_snapshot_and_every_checksum_matches(script: list[Any], join_at: int) -> None:
    """A client joins at some window with the view then sent (a snapshot), applies every later
    update, and after each window holds exactly the fresh snapshot, whose checksum every update carried."""
    hub = Hub(epoch="e1")
    builder = MarketBuilder(epoch="e1")
    channels = [f"book:X@depth={n}" for n in (1, 10, 50)]
    clients: dict[str, ClientBook] = {}
    script = [*script, ("window", 0, 0, 0)]
    for step, (action, bids, asks, seed) in enumerate(script):
        if action == "snapshot":
            hub.apply(
                BookSnapshot(
                    "X", ms(step), book_side(D("104.75"), D("-0.25"), bids, seed), book_side(D(105), D("0.25"), asks, seed + 1), "c"
                )
            )
        elif action == "delta":
            hub.apply(BookDelta("X", ms(step), tuple(map(_spell, bids)), tuple(map(_spell, asks)), "c"))
        elif action == "reset":
            if "X" in hub.books:
                hub.books["X"].reset()
        else:
            out = builder.build(hub, hub.drain())
            for channel in channels:
                if channel not in clients:
                    if step >= join_at:
                        clients[channel] = ClientBook(builder.book_view(channel))
                    continue
                for message in on(out, channel):
                    clients[channel].apply(message["data"])
                    # The checksum sent is that of the client's copy after applying the message.
                    assert message["data"]["checksum"] == clients[channel].view()["checksum"]
                assert clients[channel].view() == builder.book_view(channel)
                top = hub.book_top("X", int(channel.rpartition("=")[2]))
                if top is not None:  # in sync: the client holds the exchange's top N
                    assert clients[channel].view()["bids"] == [[wire(p), wire(q)] for p, q in top[0]]
                    assert clients[channel].view()["asks"] == [[wire(p), wire(q)] for p, q in top[1]]


prices = st.decimals(min_value=D("0.00000001"), max_value=D("10000000"), places=8)


@given(
    price=prices,
    bid=st.none() | prices,
    ask=st.none() | prices,
    reference=st.none() | prices,
    ms=st.integers(min_value=0, max_value=10**11),
    replay=st.booleans(),
)
def test_a_ticker_carries_its_price_to_portfolio_books_whole(
    price: Decimal, bid: Decimal | None, ask: Decimal | None, reference: Decimal | None, ms: int, replay: bool
) -> None:
    update = PriceUpdate("EUR/USD", 7, "e1", price, bid, ask, T0 + timedelta(milliseconds=ms), "feed", 3, reference, replay)
    message = {"ch": "ticker:EUR/USD", "epoch": "e1", "seq": 7, "ts": T0_MS + ms, "data": ticker_data(update)}

    decoded = ticker_price(message)

    # Everything a book values with survives; where it came from (source, ticks) stays with the worker.
    assert decoded == PriceUpdate("EUR/USD", 7, "e1", price, bid, ask, update.ts, "", 0, reference, replay)


@pytest.mark.parametrize(
    "message",
    [
        {"ch": "trades:AAPL", "epoch": "e1", "seq": 1, "ts": 0, "data": {}},
        {
            "ch": "ticker:AAPL",
            "epoch": "e1",
            "seq": 1,
            "ts": 0,
            "data": {"last": "x", "bid": None, "ask": None, "ref": None, "replay": False},
        },
        {"ch": "ticker:AAPL", "epoch": "e1", "seq": 1, "ts": 0, "data": {"last": "1"}},
        {"ch": "ticker:AAPL", "epoch": "e1", "seq": 1, "data": {"last": "1", "bid": None, "ask": None, "ref": None, "replay": False}},
        {"ch": "ticker:", "epoch": "e1", "seq": 1, "ts": 0, "data": {"last": "1", "bid": None, "ask": None, "ref": None, "replay": False}},
    ],
)
def test_a_malformed_ticker_is_a_value_error_that_says_so(message: Message) -> None:
    with pytest.raises(ValueError, match="ticker"):
        ticker_price(message)
