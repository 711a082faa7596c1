from datetime import UTC, datetime, timedelta
from decimal import Decimal

from marketdata.events import Quote, Trade
from marketdata.hub import Hub
from marketdata.references import Mark, MarketHours, References

D = Decimal
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trade(symbol: str, price: str, ms: int = 0) -> Trade:
    return Trade(symbol, T0 + timedelta(milliseconds=ms), D(price), D("1"), "test")


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
    hub.apply(Quote("EUR/USD", T0, D("1.1000"), D("1.1002"), "test"))
    [update] = hub.drain()
    assert (update.price, update.bid, update.ask) == (D("1.1001"), D("1.1000"), D("1.1002"))


def test_once_traded_quotes_move_bid_and_ask_but_not_the_last_price() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    hub.apply(Quote("AAPL", T0, D("101"), D("102"), "test"))
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


def test_take_minute_gives_the_last_price_of_each_symbol_that_ticked_since_the_last_call() -> None:
    hub = Hub(epoch="e1")
    hub.apply(trade("AAPL", "100"))
    hub.apply(trade("AAPL", "101", ms=1))
    hub.apply(Quote("EUR/USD", T0, D("1.1000"), D("1.1002"), "test"))
    hub.drain()  # draining windows does not reset the minute
    hub.apply(trade("MSFT", "400", ms=2))
    assert hub.take_minute() == {"AAPL": D("101"), "EUR/USD": D("1.1001"), "MSFT": D("400")}
    hub.apply(trade("MSFT", "401", ms=60_000))
    assert hub.take_minute() == {"MSFT": D("401")}
    assert hub.take_minute() == {}
