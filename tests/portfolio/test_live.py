"""LiveBook: the incremental live result always equals a fresh valuation from the ledger."""

from datetime import timedelta
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from marketdata.events import PriceUpdate
from portfolio.ledger import Entry, book_from_ledger
from portfolio.live import LiveBook
from portfolio.selectors import Market, PortfolioBook
from portfolio.valuation import Cash, Flows, Line, Price
from tests.conftest import T0

D = Decimal
NAMES = {"AAPL": ("Apple Inc.", "equity", "USD"), "SAP": ("SAP SE", "equity", "EUR"), "BTC-USD": ("Bitcoin", "crypto", "USD")}
PAIRS = {("EUR", "USD"): "EUR/USD", ("GBP", "USD"): "GBP/USD"}


def book_from(portfolio_id: int, base: str, entries: list[Entry]) -> PortfolioBook:
    """What `selectors.books_for_portfolios` reads back after `services.portfolio_rebuild` wrote the fold."""
    book = book_from_ledger(entries, allow_negative_cash=True)
    lines = tuple(Line(symbol, *NAMES[symbol], p.quantity, p.cost, p.cost_base) for symbol, p in sorted(book.open_positions().items()))
    cash = tuple(Cash(c, a) for c, a in sorted(book.cash_balances().items()))
    flows = Flows(book.realised, book.dividends, book.interest, book.fees, book.net_deposits)
    return PortfolioBook(portfolio_id, f"P{portfolio_id}", base, lines, cash, flows)


def ledger_entries() -> tuple[list[Entry], list[Entry]]:
    """The entries of a USD portfolio and of a EUR one."""
    usd = [
        Entry("deposit", T0, "USD", quantity=D(50000)),
        Entry("buy", T0, "USD", "AAPL", D(10), D(150), D(1)),
        Entry("buy", T0, "USD", "BTC-USD", D("0.5"), D(40000)),
        Entry("deposit", T0, "GBP", quantity=D(1000), fx_rate=D("1.25")),
    ]
    eur = [
        Entry("deposit", T0, "EUR", quantity=D(10000)),
        Entry("buy", T0, "USD", "AAPL", D(5), D(180), D(1), fx_rate=D("0.92")),
        Entry("buy", T0, "EUR", "SAP", D(8), D(210)),
        Entry("sell", T0, "EUR", "SAP", D(3), D(230), D(1)),
    ]
    return usd, eur


def ledgers() -> list[PortfolioBook]:
    usd, eur = ledger_entries()
    return [book_from(1, "USD", usd), book_from(2, "EUR", eur)]


def market(prices: dict[str, Price]) -> Market:
    return Market(prices=dict(prices), pairs=PAIRS, asset_classes={"equity": "Equity", "crypto": "Crypto"})


SYMBOLS = ["AAPL", "SAP", "BTC-USD", "EUR/USD", "GBP/USD", "MSFT"]  # MSFT: held by nobody
START = {
    "AAPL": Price(D(200), T0, 1, "e", D(198)),
    "SAP": Price(D(230), T0, 1, "e", None),
    "EUR/USD": Price(D("1.10"), T0, 1, "e", D("1.09")),
}
prices_st = st.decimals(min_value=D("0.01"), max_value=D(100000), places=4)
maybe_reference = st.none() | prices_st
ticks = st.lists(st.tuples(st.sampled_from(SYMBOLS), prices_st, maybe_reference, st.booleans()), max_size=40)


@settings(max_examples=150, deadline=None)
@given(ticks=ticks, currency=st.sampled_from(["USD", "EUR", "GBP"]))
# A total of exactly half a cent (205.675) next to far larger rows: summed in 28 digits, kept-up and fresh
# totals rounded to opposite sides of it (205.67 against 205.68).
@example(ticks=[("AAPL", D("0.01"), None, False), ("SAP", D("40.135"), None, False), ("EUR/USD", D("0.01"), None, False)], currency="USD")
def test_incremental_revaluation_equals_a_fresh_snapshot(ticks: list[tuple[str, Decimal, Decimal | None, bool]], currency: str) -> None:
    live = LiveBook(ledgers(), market(START), currency=currency)
    first = live.snapshot()
    # What a client holds: each view's totals and allocation as last sent, and every row as last sent.
    seen = {view["id"]: view for view in [*first["portfolios"], first["combined"]]}
    rows = {(view["id"], row["key"]): row for view in seen.values() for row in view["rows"]}

    def take() -> None:
        frame = live.take_changes()
        for view in [*(frame or {}).get("portfolios", []), *([frame["combined"]] if frame and "combined" in frame else [])]:
            seen[view["id"]] = {**seen[view["id"]], "totals": view["totals"], "allocation": view["allocation"]}
            rows.update({(view["id"], row["key"]): row for row in view["rows"]})

    final = dict(START)
    for seq, (symbol, value, reference, flush) in enumerate(ticks, start=2):
        ts = T0 + timedelta(seconds=seq)
        live.apply(PriceUpdate(symbol, seq, "e", value, None, None, ts, "test", 1, reference=reference))
        held = final.get(symbol)
        final[symbol] = Price(value, ts, seq, "e", reference if reference is not None else held.reference if held else None)
        if flush:  # frames go out at arbitrary points between ticks
            take()
    take()
    fresh = LiveBook(ledgers(), market(final), currency=currency).snapshot()
    # The totals and allocation kept up row by row (what the update frames carried) equal a fresh valuation ...
    for view in [*fresh["portfolios"], fresh["combined"]]:
        assert (seen[view["id"]]["totals"], seen[view["id"]]["allocation"]) == (view["totals"], view["allocation"]), view["id"]
        assert {row["key"]: row for row in view["rows"]} == {key: row for (vid, key), row in rows.items() if vid == view["id"]}
    # ... and so does a snapshot of the live book.
    assert live.snapshot() == fresh


def test_a_price_nobody_holds_sends_nothing() -> None:
    live = LiveBook(ledgers(), market(START))
    assert live.apply(PriceUpdate("MSFT", 2, "e", D(400), None, None, T0, "test", 1))
    assert live.take_changes() is None


def test_subscriptions_cover_held_symbols_and_the_fx_pairs_on_the_way() -> None:
    # USD book: AAPL, BTC-USD, GBP cash (GBP/USD). EUR book: AAPL, SAP, EUR cash, USD cash (EUR/USD).
    assert LiveBook(ledgers(), market(START), currency="USD").symbols == {"AAPL", "BTC-USD", "SAP", "EUR/USD", "GBP/USD"}


def test_an_update_carries_only_the_views_a_price_touches() -> None:
    live = LiveBook(ledgers(), market(START), currency="USD")
    live.apply(PriceUpdate("BTC-USD", 2, "e", D(50000), None, None, T0, "test", 1))
    frame = live.take_changes()
    assert frame is not None
    assert [p["id"] for p in frame["portfolios"]] == [1]  # type: ignore[index]
    assert [r["key"] for r in frame["combined"]["rows"]] == ["BTC-USD"]  # type: ignore[index]


def test_a_newer_epoch_is_taken_even_with_an_older_timestamp() -> None:
    # A worker restarted (or a replay started over, or a standby took over): its stream has a newer epoch, and its
    # timestamps may be older than the ones held (a replay) or behind them for a while. Issue 13: ignored for ~20 s.
    live = LiveBook(ledgers(), market({"AAPL": Price(D(200), T0, 57, "1767225600000")}))
    assert live.apply(PriceUpdate("AAPL", 1, "1767225700000", D(190), None, None, T0 - timedelta(seconds=20), "test", 1))
    assert live.market.prices["AAPL"].value == D(190)
    # Then that stream goes on by seq, whatever its timestamps.
    assert live.apply(PriceUpdate("AAPL", 2, "1767225700000", D(191), None, None, T0 - timedelta(seconds=19), "test", 1))
    assert not live.apply(PriceUpdate("AAPL", 2, "1767225700000", D(192), None, None, T0, "test", 1))  # a duplicate
    assert live.market.prices["AAPL"].value == D(191)


def test_a_price_of_an_older_epoch_is_dropped_even_with_a_newer_timestamp() -> None:
    # The stream it replaced (a producer fenced off, a history read that raced the new epoch) is ignored.
    live = LiveBook(ledgers(), market({"AAPL": Price(D(200), T0, 3, "1767225700000")}))
    assert not live.apply(PriceUpdate("AAPL", 99, "1767225600000", D(150), None, None, T0 + timedelta(seconds=5), "test", 1))
    assert live.market.prices["AAPL"].value == D(200)


def test_a_reload_keeps_the_price_of_the_newer_epoch() -> None:
    live = LiveBook(ledgers(), market({"AAPL": Price(D(200), T0 - timedelta(seconds=30), 2, "1767225700000")}))
    live.replace(ledgers(), market({"AAPL": Price(D(150), T0, 900, "1767225600000")}))  # the database's, from the old run
    assert live.market.prices["AAPL"].value == D(200)
