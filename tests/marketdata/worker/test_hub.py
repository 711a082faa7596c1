from datetime import UTC, datetime, timedelta
from decimal import Decimal

from marketdata.events import BookDelta, BookSnapshot, Candle, Quote, Trade
from marketdata.worker.hub import Hub
from marketdata.worker.references import Mark, MarketHours, References

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trade(symbol: str, price: str, ms: int = 0, size: str = "1") -> Trade:
    return Trade(symbol, T0 + timedelta(milliseconds=ms), D(price), D(size), "test")


def quote(symbol: str, bid: str, ask: str, ms: int = 0) -> Quote:
    return Quote(symbol, T0 + timedelta(milliseconds=ms), D(bid), D(ask), "test")


def levels(*pairs: tuple[str, str]) -> tuple[tuple[Decimal, Decimal], ...]:
    return tuple((D(price), D(qty)) for price, qty in pairs)


def snapshot(
    symbol: str, update_id: int, bids: tuple[tuple[str, str], ...], asks: tuple[tuple[str, str], ...], ms: int = 0
) -> BookSnapshot:
    return BookSnapshot(symbol, T0 + timedelta(milliseconds=ms), levels(*bids), levels(*asks), "binance", update_id=update_id)


def delta(
    symbol: str, first: int, last: int, bids: tuple[tuple[str, str], ...] = (), asks: tuple[tuple[str, str], ...] = (), ms: int = 0
) -> BookDelta:
    return BookDelta(symbol, T0 + timedelta(milliseconds=ms), levels(*bids), levels(*asks), "binance", first_id=first, last_id=last)


def test_a_burst_in_one_window_becomes_one_update_with_the_last_price() -> None:
    hub = Hub(epoch="e1")
    for i in range(50):
        hub.apply(trade("AAPL", f"{100 + i}", ms=i))
    [update] = hub.drain()
    assert (update.symbol, update.price, update.ticks) == ("AAPL", D("149"), 50)
    assert update.ts == T0 + timedelta(milliseconds=49)


def test_sequence_numbers_count_broadcasts_per_symbol() -> None:
    hub = Hub(epoch="e1")
    seen: dict[str, list[int]] = {"AAPL": [], "MSFT": []}
    for window in range(4):
        hub.apply(trade("AAPL", "100", window))
        if window % 2:
            hub.apply(trade("MSFT", "200", window))
        for update in hub.drain():
            seen[update.symbol].append(update.seq)
            assert update.epoch == "e1"
    assert seen == {"AAPL": [1, 2, 3, 4], "MSFT": [1, 2]}


def test_a_quiet_window_publishes_nothing() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    hub.drain()
    assert hub.drain() == []


def test_a_quote_only_market_is_priced_at_its_mid() -> None:
    hub = Hub(epoch="e1")
    hub.apply(quote("EUR/USD", "1.1000", "1.1002"))
    [update] = hub.drain()
    assert (update.price, update.bid, update.ask) == (D("1.1001"), D("1.1000"), D("1.1002"))


def test_once_traded_quotes_move_bid_and_ask_but_not_the_last_price() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    hub.apply(quote("AAPL", "101", "102"))
    [update] = hub.drain()
    assert (update.price, update.bid, update.ask) == (D("100"), D("101"), D("102"))


def test_each_update_carries_the_reference_at_its_own_time() -> None:
    refs = References(
        {"BTC-USD": MarketHours(always_open=True), "AAPL": MarketHours(always_open=False, timezone="America/New_York")},
        [Mark("BTC-USD", T0 - timedelta(days=1), D("60000")), Mark("AAPL", T0 - timedelta(days=1), D("190"))],
    )
    hub = Hub(epoch="e1", references=refs)
    hub.apply(trade("BTC-USD", "61000", ms=500))
    hub.apply(trade("AAPL", "191"))
    hub.apply(trade("MSFT", "400"))
    assert {u.symbol: u.reference for u in hub.drain()} == {"AAPL": D("190"), "BTC-USD": D("60000"), "MSFT": None}


def test_without_references_updates_carry_none() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    assert [u.reference for u in hub.drain()] == [None]


def test_price_updates_are_marked_as_replayed_only_by_a_replay_hub() -> None:
    live, replay = Hub(epoch="e1"), Hub(epoch="e1", replay=True)
    for hub in (live, replay):
        hub.apply(trade("AAPL", "100"))
        hub.apply(quote("EUR/USD", "1.1000", "1.1002"))
    assert [u.replay for u in live.drain()] == [False, False]
    assert [u.replay for u in replay.drain()] == [True, True]


# -- candles -------------------------------------------------------------------


def test_take_minute_gives_a_candle_of_each_symbol_that_ticked_since_the_last_call() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    hub.apply(trade("AAPL", "101", ms=1))
    hub.apply(quote("EUR/USD", "1.1000", "1.1002"))
    hub.drain()  # draining windows does not reset the minute
    hub.apply(trade("MSFT", "400", ms=2))
    assert hub.take_minute(T0) == [
        Candle("AAPL", T0, D("100"), D("101"), D("100"), D("101"), D("2"), 2),
        Candle("EUR/USD", T0, D("1.1001"), D("1.1001"), D("1.1001"), D("1.1001"), D("0"), 0),
        Candle("MSFT", T0, D("400"), D("400"), D("400"), D("400"), D("1"), 1),
    ]
    next_minute = T0 + timedelta(minutes=1)
    hub.apply(trade("MSFT", "401", ms=60_000))
    assert hub.take_minute(next_minute) == [Candle("MSFT", next_minute, D("401"), D("401"), D("401"), D("401"), D("1"), 1)]
    assert hub.take_minute(T0 + timedelta(minutes=2)) == []


def test_a_candle_from_trades_matches_the_hand_computed_ohlcv() -> None:
    hub = Hub(epoch="e1")
    # open 100; a new high 105; a new low 95; back up to 101 (inside the range): close 101.
    for ms, (price, size) in enumerate([("100", "1"), ("103", "0.25"), ("105", "2"), ("99", "1"), ("95", "0.5"), ("101", "3")]):
        hub.apply(trade("BTC-USD", price, ms=ms * 1000, size=size))
        if ms == 2:
            hub.drain()  # a window closing mid-minute changes nothing in the candle
    # A quote on a traded symbol moves bid/ask, not the candle.
    hub.apply(quote("BTC-USD", "90", "120", ms=7000))

    [candle] = hub.take_minute(T0)

    assert candle == Candle("BTC-USD", T0, D("100"), D("105"), D("95"), D("101"), D("7.75"), 6)


def test_a_quote_only_symbol_gets_candles_of_its_mid_with_no_volume() -> None:
    hub = Hub(epoch="e1")
    # mids: 1.1001, 1.1003 (high), 1.0999 (low), 1.1000
    for ms, (bid, ask) in enumerate([("1.1000", "1.1002"), ("1.1002", "1.1004"), ("1.0998", "1.1000"), ("1.0999", "1.1001")]):
        hub.apply(quote("EUR/USD", bid, ask, ms=ms))

    [candle] = hub.take_minute(T0)

    assert candle == Candle("EUR/USD", T0, D("1.1001"), D("1.1003"), D("1.0999"), D("1.1000"), D("0"), 0)


def test_a_symbol_without_an_event_in_the_minute_gets_no_candle() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    hub.apply(trade("MSFT", "400"))
    hub.take_minute(T0)
    hub.apply(trade("MSFT", "402", ms=60_000, size="5"))

    assert [c.symbol for c in hub.take_minute(T0 + timedelta(minutes=1))] == ["MSFT"]


def test_take_minute_resets_the_candle_so_the_next_opens_at_the_next_price() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100", size="2"))
    hub.apply(trade("AAPL", "120", ms=1, size="3"))
    hub.take_minute(T0)
    one = T0 + timedelta(minutes=1)
    # Below the last minute's low and above nothing: high, low, volume and trades start over.
    hub.apply(trade("AAPL", "110", ms=60_000, size="1"))

    assert hub.take_minute(one) == [Candle("AAPL", one, D("110"), D("110"), D("110"), D("110"), D("1"), 1)]


def test_a_traded_symbol_quoted_in_a_later_minute_gets_a_flat_candle_at_its_last_trade() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    hub.take_minute(T0)
    one = T0 + timedelta(minutes=1)
    hub.apply(quote("AAPL", "98", "99", ms=60_000))

    assert hub.take_minute(one) == [Candle("AAPL", one, D("100"), D("100"), D("100"), D("100"), D("0"), 0)]


# -- order books ---------------------------------------------------------------


def test_a_binance_snapshot_and_deltas_move_bid_ask_and_the_mid_of_a_never_traded_symbol() -> None:
    hub = Hub(epoch="e1")
    hub.apply(snapshot("BTCUSDT", 100, bids=(("99", "1"), ("98", "2")), asks=(("101", "1"), ("102", "3"))))
    [first] = hub.drain()
    assert (first.bid, first.ask, first.price) == (D("99"), D("101"), D("100"))

    # U <= lastUpdateId + 1 <= u: the first delta after the snapshot. A better bid at 100.
    hub.apply(delta("BTCUSDT", 99, 102, bids=(("100", "0.5"),), ms=1))
    [second] = hub.drain()
    assert (second.bid, second.ask, second.price, second.seq) == (D("100"), D("101"), D("100.5"), 2)

    # The best ask is taken (quantity 0 removes it): the next level is best.
    hub.apply(delta("BTCUSDT", 103, 103, asks=(("101", "0"),), ms=2))
    [third] = hub.drain()
    assert (third.bid, third.ask, third.price) == (D("100"), D("102"), D("101"))
    assert hub.book_top("BTCUSDT", 5) == ([(D("100"), D("0.5")), (D("99"), D("1")), (D("98"), D("2"))], [(D("102"), D("3"))])


def test_a_delta_below_the_top_of_the_book_is_no_tick() -> None:
    hub = Hub(epoch="e1")
    hub.apply(snapshot("BTCUSDT", 100, bids=(("99", "1"),), asks=(("101", "1"),)))
    hub.drain()
    hub.apply(delta("BTCUSDT", 101, 101, bids=(("90", "4"),)))
    assert hub.drain() == []
    assert hub.book_top("BTCUSDT", 2) == ([(D("99"), D("1")), (D("90"), D("4"))], [(D("101"), D("1"))])


def test_the_book_moves_bid_and_ask_but_not_the_price_of_a_traded_symbol() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("BTCUSDT", "100.25"))
    hub.apply(snapshot("BTCUSDT", 100, bids=(("99", "1"),), asks=(("101", "1"),)))
    [update] = hub.drain()
    assert (update.price, update.bid, update.ask) == (D("100.25"), D("99"), D("101"))


def test_after_a_gap_the_books_bid_and_ask_are_withdrawn_until_a_new_snapshot() -> None:
    hub = Hub(epoch="e1")
    hub.apply(snapshot("BTCUSDT", 100, bids=(("99", "1"),), asks=(("101", "1"),)))
    hub.apply(delta("BTCUSDT", 101, 105, bids=(("100", "1"),)))
    [synced] = hub.drain()
    assert (synced.bid, synced.ask) == (D("100"), D("101"))

    # U=110 > last u (105) + 1: versions 106-109 are lost.
    hub.apply(delta("BTCUSDT", 110, 112, bids=(("100.5", "1"),)))
    hub.apply(delta("BTCUSDT", 113, 114, asks=(("100.75", "1"),)))
    assert hub.drain() == []
    assert hub.book_top("BTCUSDT", 5) is None
    # Its levels are unknown now: later ticks must not carry them as if they were current.
    assert (hub.symbols["BTCUSDT"].bid, hub.symbols["BTCUSDT"].ask) == (None, None)

    # A new snapshot (past the buffered deltas) syncs the book again, and its top is published.
    hub.apply(snapshot("BTCUSDT", 120, bids=(("100.25", "2"),), asks=(("100.5", "3"),), ms=5))
    [resynced] = hub.drain()
    assert (resynced.bid, resynced.ask, resynced.price) == (D("100.25"), D("100.5"), D("100.375"))
    assert hub.book_top("BTCUSDT", 5) == ([(D("100.25"), D("2"))], [(D("100.5"), D("3"))])


def test_book_top_is_none_while_the_book_is_not_synced() -> None:
    hub = Hub(epoch="e1")
    assert hub.book_top("BTCUSDT", 5) is None  # no book at all
    # Deltas before any snapshot are buffered: no book to show, nothing published.
    hub.apply(delta("BTCUSDT", 99, 101, bids=(("99", "1"),), asks=(("101", "1"),)))
    assert hub.book_top("BTCUSDT", 5) is None
    assert hub.drain() == []
    assert hub.take_minute(T0) == []

    hub.apply(snapshot("BTCUSDT", 100, bids=(("98", "1"),), asks=(("102", "1"),)))
    # The buffered delta (99..101 spans 101) is replayed onto the snapshot.
    assert hub.book_top("BTCUSDT", 1) == ([(D("99"), D("1"))], [(D("101"), D("1"))])
    [update] = hub.drain()
    assert (update.bid, update.ask, update.price) == (D("99"), D("101"), D("100"))


def test_book_mids_make_candles_of_a_never_traded_symbol() -> None:
    hub = Hub(epoch="e1")
    hub.apply(snapshot("BTCUSDT", 100, bids=(("99", "1"),), asks=(("101", "1"),)))  # mid 100
    hub.apply(delta("BTCUSDT", 101, 101, asks=(("101", "0"), ("105", "1")), ms=1))  # mid 102
    hub.apply(delta("BTCUSDT", 102, 102, bids=(("99", "0"), ("95", "1")), ms=2))  # mid 100

    assert hub.take_minute(T0) == [Candle("BTCUSDT", T0, D("100"), D("102"), D("100"), D("100"), D("0"), 0)]


# -- what the market channels collect -------------------------------------------------------------


def test_the_hub_hands_over_each_windows_trades_once_oldest_first() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100", ms=1))
    hub.apply(quote("AAPL", "99", "101", ms=2))
    hub.apply(trade("MSFT", "400", ms=3))
    hub.apply(trade("AAPL", "101", ms=4))
    hub.drain()  # draining leaves them for the market channels
    assert hub.take_trades() == {"AAPL": [trade("AAPL", "100", ms=1), trade("AAPL", "101", ms=4)], "MSFT": [trade("MSFT", "400", ms=3)]}
    assert hub.take_trades() == {}
    assert hub.trades_dropped == 0


def test_the_hub_names_books_that_changed_with_their_latest_time_including_a_lost_sync() -> None:
    hub = Hub(epoch="e1")
    hub.apply(delta("BTCUSDT", 99, 101, bids=(("99", "1"),)))  # buffered before any snapshot: nothing to show
    assert hub.take_book_changes() == {}
    hub.apply(snapshot("BTCUSDT", 100, bids=(("98", "1"),), asks=(("102", "1"),), ms=5))
    hub.apply(delta("BTCUSDT", 102, 102, bids=(("90", "1"),), ms=6))  # below the top: no tick, but the book changed
    assert hub.take_book_changes() == {"BTCUSDT": T0 + timedelta(milliseconds=6)}
    hub.apply(delta("BTCUSDT", 110, 110, bids=(("97", "1"),), ms=7))  # a gap: out of sync
    assert hub.take_book_changes() == {"BTCUSDT": T0 + timedelta(milliseconds=7)}
    assert hub.book_top("BTCUSDT", 1) is None


# -- trade ids -----------------------------------------------------------------------------------


def with_id(trade_id: int | str, price: str, ms: int = 0, size: str = "1", **fields: object) -> Trade:
    return Trade("BTC-USD", T0 + timedelta(milliseconds=ms), D(price), D(size), "binance", "buy", trade_id, **fields)  # type: ignore[arg-type]


def test_a_trade_sent_twice_is_counted_once_in_the_candle_and_reported_as_a_duplicate() -> None:
    hub = Hub(epoch="e")
    for event in (with_id(7, "100", 0), with_id(8, "101", 1, size="2"), with_id(8, "101", 2, size="2"), with_id(9, "99", 3)):
        hub.apply(event)
    [candle] = hub.take_minute(T0)
    assert (candle.volume, candle.trades, candle.high) == (D(4), 3, D(101))
    assert hub.checks.duplicates == 1
    assert [t.trade_id for t in hub.take_trades()["BTC-USD"]] == [7, 8, 9]


def test_a_jump_in_trade_ids_is_a_gap_and_an_unseen_lower_id_is_out_of_order_but_kept() -> None:
    hub = Hub(epoch="e")
    for event in (with_id(1, "100"), with_id(5, "100"), with_id(3, "100"), with_id(6, "100")):
        hub.apply(event)
    checks = hub.checks
    assert (checks.gaps, checks.missing, checks.out_of_order, checks.duplicates) == (1, 3, 1, 0)
    assert hub.take_minute(T0)[0].trades == 4


def test_string_trade_ids_are_deduplicated_without_gap_counts() -> None:
    hub = Hub(epoch="e")
    for event in (with_id("a-1", "100"), with_id("a-1", "100"), with_id("b-2", "101")):
        hub.apply(event)
    assert (hub.checks.duplicates, hub.checks.gaps) == (1, 0)
    assert hub.take_minute(T0)[0].trades == 2


def test_backfill_trades_are_counted_and_kept_out_of_prices_candles_and_the_trades_channel() -> None:
    hub = Hub(epoch="e")
    hub.apply(with_id(1, "90", backfill=True))
    hub.apply(with_id(2, "100", 5))
    assert hub.checks.backfill == 1
    [update] = hub.drain()
    assert update.price == D(100)
    [candle] = hub.take_minute(T0)
    assert (candle.open, candle.low, candle.trades) == (D(100), D(100), 1)
    assert [t.trade_id for t in hub.take_trades()["BTC-USD"]] == [2]
