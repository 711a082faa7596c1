"""`portfolio.ledger`: the pure fold from ledger entries to a book (positions, cash, totals in the base currency)."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_DOWN, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio.ledger import Book, Entry, LedgerError, Position, book_from_ledger
from portfolio.valuation import Cash, Flows, Line, Price, totals, value_cash, value_holding
from tests.conftest import T0

D = Decimal
ZERO, ONE = D(0), D(1)


def usd(kind: str, quantity: str, symbol: str = "", price: str = "1", fee: str = "0", day: int = 0, ref: object = None) -> Entry:
    return Entry(kind, T0 + timedelta(days=day), "USD", symbol, D(quantity), D(price), D(fee), ONE, ref=ref)


# ---------------------------------------------------------------- worked examples, checked by hand


def test_worked_example_a_buy_puts_the_price_in_cost_and_the_fee_in_fees() -> None:
    book = book_from_ledger([usd("deposit", "2000"), usd("buy", "10", "AAPL", price="150.00", fee="1.00")])
    # 10 × 150.00 = 1500.00 cost; the 1.00 fee is not part of it.
    assert book.open_positions() == {"AAPL": Position(D("10"), D("1500.00"), D("1500.00"))}
    # 2000 − (10 × 150.00 + 1.00 fee = 1501.00 cash out) = 499.00
    assert book.cash_balances() == {"USD": D("499.00")}
    assert (book.fees, book.realised, book.net_deposits) == (D("1.00"), ZERO, D("2000"))


def test_worked_example_a_partial_sell_realises_against_the_average_cost() -> None:
    book = book_from_ledger(
        [
            usd("deposit", "2000"),
            usd("buy", "10", "AAPL", price="150.00", fee="1.00"),
            usd("sell", "4", "AAPL", price="180.00", fee="2.00", day=1),
        ]
    )
    # Cost removed: 1500.00 × 4/10 = 600.00; proceeds 4 × 180.00 = 720.00; realised 720.00 − 600.00 = 120.00.
    assert book.realised == D("120.00")
    # 6 left at 1500.00 − 600.00 = 900.00: the average cost stays 150.00.
    assert book.open_positions() == {"AAPL": Position(D("6"), D("900.00"), D("900.00"))}
    # 499.00 + 720.00 − 2.00 fee = 1217.00; fees 1.00 + 2.00 = 3.00.
    assert book.cash_balances() == {"USD": D("1217.00")}
    assert book.fees == D("3.00")


def test_worked_example_a_dividend_with_withholding_tax_counts_gross_and_pays_net() -> None:
    book = book_from_ledger(
        [
            usd("deposit", "1000"),
            usd("buy", "6", "AAPL", price="150.00"),
            # 6 shares × 0.50 = 3.00 gross; 15 % withheld = 0.45, entered as the dividend's fee.
            usd("dividend", "6", "AAPL", price="0.50", fee="0.45", day=1),
        ]
    )
    assert (book.dividends, book.fees) == (D("3.00"), D("0.45"))
    # 1000 − 900.00 + 3.00 − 0.45 = 102.55
    assert book.cash_balances() == {"USD": D("102.55")}
    assert book.open_positions()["AAPL"] == Position(D("6"), D("900.00"), D("900.00"))


def test_worked_example_a_split_multiplies_the_shares_and_keeps_the_cost() -> None:
    before = book_from_ledger([usd("buy", "6", "AAPL", price="150.00")])
    after = book_from_ledger([usd("buy", "6", "AAPL", price="150.00"), usd("split", "3", "AAPL", day=1)])
    # 3-for-1: 6 × 3 = 18 shares, still 900.00 of cost, so 50.00 each.
    assert after.open_positions() == {"AAPL": Position(D("18"), D("900.00"), D("900.00"))}
    assert after.cash_balances() == before.cash_balances() == {"USD": D("-900.00")}
    # Worth the same at the split-adjusted price: 6 × 180.00 = 1080.00 = 18 × 60.00 (180.00 / 3).
    worth = [
        value_holding(Line("AAPL", "", "equity", "USD", p.quantity, p.cost, p.cost_base), Price(price, T0), ONE, ONE).market_value
        for p, price in ((before.positions["AAPL"], D("180.00")), (after.positions["AAPL"], D("60.00")))
    ]
    assert worth == [D("1080.00"), D("1080.00")]


def test_worked_example_a_foreign_stock_keeps_its_cost_at_trade_date_fx_and_realises_at_sale_date_fx() -> None:
    def eur_rate(kind: str, quantity: str, fx: str, symbol: str = "", price: str = "1", day: int = 0) -> Entry:
        return Entry(kind, T0 + timedelta(days=day), "USD", symbol, D(quantity), D(price), ZERO, D(fx))

    book = book_from_ledger(
        [
            eur_rate("deposit", "2500", "0.90"),  # 2500 USD × 0.90 = 2250.00 EUR deposited
            eur_rate("buy", "10", "0.92", "AAPL", price="200"),  # 2000 USD × 0.92 = 1840.00 EUR of cost
            eur_rate("sell", "5", "0.95", "AAPL", price="210", day=1),  # 1050 USD × 0.95 = 997.50 EUR of proceeds
        ]
    )
    # Half the cost leaves: 1000 USD, 920.00 EUR. Realised 997.50 − 920.00 = 77.50 EUR, FX gain included.
    assert book.open_positions() == {"AAPL": Position(D("5"), D("1000"), D("920.00"))}
    assert book.realised == D("77.50")
    assert book.net_deposits == D("2250.00")
    # Cash stays in its own currency: 2500 − 2000 + 1050 = 1550 USD.
    assert book.cash_balances() == {"USD": D("1550")}


def test_selling_out_resets_the_basis_so_a_later_buy_starts_afresh() -> None:
    book = book_from_ledger(
        [usd("buy", "10", "AAPL", price="100"), usd("sell", "10", "AAPL", price="90", day=1), usd("buy", "1", "AAPL", price="50", day=2)]
    )
    # 10 × 90 − 10 × 100 = −100 realised; the new share costs 50 alone.
    assert book.realised == D("-100")
    assert book.open_positions() == {"AAPL": Position(D("1"), D("50"), D("50"))}


def test_an_average_that_does_not_terminate_leaves_no_cost_behind_when_selling_out() -> None:
    # 1000 / 3 has no exact decimal; thirds sold one at a time must still remove all 1000.
    entries = [usd("buy", "1", "AAPL", price="1000"), usd("split", "3", "AAPL")]
    entries += [usd("sell", "1", "AAPL", price="400", day=d) for d in (1, 2, 3)]
    book = book_from_ledger(entries)
    assert book.positions["AAPL"] == Position(ZERO, ZERO, ZERO)
    assert book.realised == D("200")  # 3 × 400 − 1000, exactly


def test_shares_transferred_out_leave_at_average_cost_and_realise_nothing() -> None:
    book = book_from_ledger([usd("buy", "10", "AAPL", price="150"), usd("transfer_out", "4", "AAPL", price="999", fee="1.50", day=1)])
    # 4/10 of 1500 = 600 leaves (the transfer's price plays no part); it counts as 600 withdrawn.
    assert book.open_positions() == {"AAPL": Position(D("6"), D("900"), D("900"))}
    assert (book.realised, book.net_deposits, book.fees) == (ZERO, D("-600"), D("1.50"))
    assert book.cash_balances() == {"USD": D("-1501.50")}


def test_shares_transferred_in_arrive_at_their_carried_cost_as_a_deposit() -> None:
    book = book_from_ledger([usd("transfer_in", "4", "AAPL", price="150")])
    assert book.open_positions() == {"AAPL": Position(D("4"), D("600"), D("600"))}
    assert (book.net_deposits, book.cash_balances()) == (D("600"), {})


def test_cash_transfers_move_net_deposits_like_deposits_and_withdrawals() -> None:
    book = book_from_ledger([usd("transfer_in", "500"), usd("transfer_out", "200", day=1), usd("interest", "1.25", day=2)])
    assert book.cash_balances() == {"USD": D("301.25")}
    assert (book.net_deposits, book.interest) == (D("300"), D("1.25"))


def test_a_fee_entry_costs_its_amount_plus_its_own_fee() -> None:
    book = book_from_ledger([usd("deposit", "100"), usd("fee", "12", price="0.50", fee="1")])
    # 12 × 0.50 = 6.00 + 1 = 7.00
    assert (book.fees, book.cash_balances()) == (D("7.00"), {"USD": D("93.00")})


# ---------------------------------------------------------------- refusals


def test_selling_more_than_held_says_what_was_held_and_when() -> None:
    with pytest.raises(LedgerError, match=r"^Cannot sell 3 AAPL on 2026-01-06 14:30 UTC: only 2 held at that time\.$") as exc:
        book_from_ledger([usd("buy", "2", "AAPL", price="10"), usd("sell", "3", "AAPL", price="12", day=1, ref=42)])
    assert exc.value.ref == 42


def test_selling_what_was_never_held_says_none_was_held() -> None:
    with pytest.raises(LedgerError, match=r"Cannot sell 1 MSFT on 2026-01-05 14:30 UTC: only 0 held"):
        book_from_ledger([usd("sell", "1", "MSFT", price="12")])


def test_transferring_out_more_shares_than_held_is_refused() -> None:
    with pytest.raises(LedgerError, match=r"^Cannot transfer out 2.5 AAPL on 2026-01-05 14:30 UTC: only 2 held at that time\.$"):
        book_from_ledger([usd("buy", "2", "AAPL", price="10"), usd("transfer_out", "2.5", "AAPL")])


def test_withdrawing_more_cash_than_held_is_refused_with_both_amounts() -> None:
    with pytest.raises(LedgerError) as exc:
        book_from_ledger([usd("deposit", "100"), usd("withdrawal", "100.01", day=1, ref="line 2")])
    assert str(exc.value) == (
        "Cannot withdraw 100.01 USD on 2026-01-06 14:30 UTC: only 100 USD cash held at that time "
        "(the portfolio does not allow negative cash)."
    )
    assert exc.value.ref == "line 2"


def test_transferring_out_more_cash_than_held_is_refused_like_a_withdrawal() -> None:
    with pytest.raises(LedgerError, match=r"Cannot withdraw 150 USD .*only 100 USD cash held"):
        book_from_ledger([usd("deposit", "100"), usd("transfer_out", "150")])


def test_withdrawing_into_negative_cash_is_allowed_when_the_portfolio_allows_it() -> None:
    book = book_from_ledger([usd("deposit", "100"), usd("withdrawal", "150", day=1)], allow_negative_cash=True)
    assert (book.cash_balances(), book.net_deposits) == ({"USD": D("-50")}, D("-50"))


def test_a_withdrawal_refused_only_because_of_its_fee_says_so() -> None:
    # 100 held, 100 withdrawn with a 2.50 fee: 100 − 100 − 2.50 < 0. The refusal must explain
    # itself; "withdraw 100 … only 100 held" reads as a contradiction.
    with pytest.raises(LedgerError) as exc:
        book_from_ledger([usd("deposit", "100"), usd("withdrawal", "100", fee="2.50", day=1)])
    assert "2.5" in str(exc.value), str(exc.value)


@pytest.mark.parametrize("ratio", ["0", "-2"])
def test_a_split_ratio_that_is_not_positive_is_refused_naming_it(ratio: str) -> None:
    with pytest.raises(LedgerError, match=rf"^Split ratio must be greater than zero, not {ratio}\.$"):
        book_from_ledger([usd("buy", "2", "AAPL", price="10"), usd("split", ratio, "AAPL")])


@pytest.mark.parametrize("kind", ["buy", "sell", "split"])
def test_a_share_entry_without_an_instrument_is_refused(kind: str) -> None:
    with pytest.raises(LedgerError, match=rf"^A {kind} entry needs an instrument\.$"):
        book_from_ledger([usd(kind, "1")])


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(LedgerError, match=r"^Unknown kind 'gift'\.$"):
        book_from_ledger([usd("gift", "1")])


# ---------------------------------------------------------------- properties

SYMBOLS = ("AAA", "BBB", "CCC")
CASH_KINDS = ("deposit", "withdrawal", "dividend", "interest", "fee", "transfer_in", "transfer_out")
SHARE_KINDS = ("buy", "buy", "sell", "sell", "split", "transfer_in", "transfer_out")
CENT, TICK = D("0.01"), D("0.0001")

money = st.decimals(min_value=CENT, max_value=D("10000"), places=2)
fees = st.one_of(st.just(ZERO), st.decimals(min_value=ZERO, max_value=D("20"), places=2))
share_counts = st.decimals(min_value=TICK, max_value=D("500"), places=4)
share_prices = st.decimals(min_value=ZERO, max_value=D("2000"), places=4)
ratios = st.sampled_from([D("0.5"), D("1.5"), D(2), D(3), D(4), D(10)])


@st.composite
def valid_ledgers(draw: st.DrawFn, *, allow_negative_cash: bool) -> tuple[list[Entry], dict[str, Decimal], Decimal]:
    """A ledger in one currency that never sells more than it holds (nor, unless allowed, withdraws more cash than
    it has), with the quantities and cash it must end with, counted plainly alongside."""
    held = dict.fromkeys(SYMBOLS, ZERO)
    cash = ZERO
    entries: list[Entry] = []
    for i in range(draw(st.integers(min_value=0, max_value=30))):
        when, fee = T0 + timedelta(hours=i), draw(fees)
        if draw(st.booleans()):
            kind, symbol = draw(st.sampled_from(SHARE_KINDS)), draw(st.sampled_from(SYMBOLS))
            if kind in ("sell", "transfer_out"):
                most = held[symbol].quantize(TICK, rounding=ROUND_DOWN)
                if most < TICK:
                    continue
                quantity = draw(st.one_of(st.just(held[symbol]), st.decimals(min_value=TICK, max_value=most, places=4)))
                held[symbol] -= quantity
            elif kind == "split":
                quantity = draw(ratios)
                held[symbol] *= quantity
            else:
                quantity = draw(share_counts)
                held[symbol] += quantity
            price = ONE if kind == "split" else draw(share_prices)
            cash += {"buy": -quantity * price, "sell": quantity * price}.get(kind, ZERO) - fee
        else:
            kind, symbol, price = draw(st.sampled_from(CASH_KINDS)), "", ONE
            if kind in ("withdrawal", "transfer_out") and not allow_negative_cash:
                most = (cash - fee).quantize(CENT, rounding=ROUND_DOWN)
                if most < CENT:
                    continue
                quantity = draw(st.decimals(min_value=CENT, max_value=most, places=2))
            else:
                quantity = draw(money)
                if kind == "dividend":
                    symbol = draw(st.sampled_from(SYMBOLS))
            cash += (quantity if kind in ("deposit", "dividend", "interest", "transfer_in") else -quantity) - fee
        entries.append(Entry(kind, when, "USD", symbol, quantity, price, fee, ONE))
    return entries, {s: q for s, q in held.items() if q}, cash


def reconciliation_gap(book: Book, prices: dict[str, Decimal]) -> tuple[Decimal, Decimal]:
    """(left − right, scale) of: market value + cash − net deposits == realised + unrealised + dividends + interest − fees,
    every figure as `portfolio.valuation` computes it at `prices`."""
    holdings = []
    for symbol, position in book.open_positions().items():
        line = Line(symbol, symbol, "equity", "USD", position.quantity, position.cost, position.cost_base)
        holdings.append((line.key, value_holding(line, Price(prices[symbol], T0, reference=prices[symbol]), ONE, ONE)))
    cash = [(Cash(c, a).key, value_cash(Cash(c, a), ONE, ONE)) for c, a in book.cash_balances().items()]
    t = totals(holdings, cash, Flows(book.realised, book.dividends, book.interest, book.fees, book.net_deposits))
    assert t.missing == ()
    left = t.market_value + t.cash - t.net_deposits
    right = t.realised_pnl + t.unrealised_pnl + t.dividends + t.interest - t.fees
    terms = (t.market_value, t.cash, t.net_deposits, t.realised_pnl, t.cost, t.dividends, t.interest, t.fees)
    return left - right, 1 + sum(abs(x) for x in terms)


# Why a tolerance at all: the only inexact step is the average-cost division (cost × q / Q), which Decimal's
# default context rounds to 28 significant digits, i.e. within 5e-28 of the figure; a few hundred such roundings
# and the sums that carry them stay below 1e-24 of the largest figure. 1e-20 × scale leaves room for that and
# nothing else: a leaked fee or cent is 16 orders of magnitude larger.
TOLERANCE = D("1e-20")


@settings(max_examples=200, deadline=None)
@given(data=st.data(), allow_negative_cash=st.booleans())
def test_any_valid_ledger_reconciles_value_and_cash_with_pnl_and_flows(data: st.DataObject, allow_negative_cash: bool) -> None:
    entries, quantities, cash = data.draw(valid_ledgers(allow_negative_cash=allow_negative_cash))
    book = book_from_ledger(entries, allow_negative_cash=allow_negative_cash)

    assert {s: p.quantity for s, p in book.open_positions().items()} == quantities
    assert book.cash_balances() == ({"USD": cash} if cash else {})
    assert all(p.cost == p.cost_base for p in book.positions.values())  # one currency: fx 1 throughout

    prices = {s: data.draw(share_prices, label=f"price of {s}") for s in quantities}
    gap, scale = reconciliation_gap(book, prices)
    assert abs(gap) <= TOLERANCE * scale


@settings(max_examples=200, deadline=None)
@given(
    buys=st.lists(st.tuples(share_counts, share_prices), min_size=1, max_size=4),
    ratio=st.decimals(min_value=CENT, max_value=D("100"), places=2),
    price=share_prices,
)
def test_a_split_multiplies_quantity_and_keeps_cost_and_market_value(
    buys: list[tuple[Decimal, Decimal]], ratio: Decimal, price: Decimal
) -> None:
    ledger = [Entry("buy", T0, "USD", "AAA", q, p) for q, p in buys]
    before = book_from_ledger(ledger).positions["AAA"]
    after = book_from_ledger([*ledger, Entry("split", T0 + timedelta(days=1), "USD", "AAA", ratio)]).positions["AAA"]

    assert after.quantity == before.quantity * ratio
    assert (after.cost, after.cost_base) == (before.cost, before.cost_base)

    def value(position: Position, at_price: Decimal) -> Decimal:
        line = Line("AAA", "", "equity", "USD", position.quantity, position.cost, position.cost_base)
        row = value_holding(line, Price(at_price, T0), ONE, ONE)
        assert row.market_value is not None
        return row.market_value

    # price / ratio rounds to 28 significant digits, and so may the product: a relative error below 1e-26.
    worth_before, worth_after = value(before, price), value(after, price / ratio)
    assert abs(worth_after - worth_before) <= TOLERANCE * worth_before
