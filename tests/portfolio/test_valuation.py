"""`portfolio.valuation`: pure functions from holdings, cash, prices and FX to values, P&L, day change and allocation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio.valuation import (
    NO_PRICE,
    NO_RATE,
    NO_REFERENCE,
    OK,
    Cash,
    Flows,
    Line,
    Price,
    RowValue,
    RunningTotals,
    Tag,
    allocation,
    convert,
    fx_pair,
    fx_route,
    route_rate,
    totals,
    value_cash,
    value_holding,
)
from tests.conftest import T0

D = Decimal
ONE = D(1)
CENT = D("0.01")
PAIRS = {("EUR", "USD"): "EUR/USD", ("GBP", "USD"): "GBP/USD"}


def cents(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.quantize(CENT)


def aapl(quantity: str = "10", cost: str = "2000", cost_base: str = "1840") -> Line:
    return Line("AAPL", "Apple Inc.", "equity", "USD", D(quantity), D(cost), D(cost_base))


# ---------------------------------------------------------------- FX


@pytest.mark.parametrize(
    ("symbol", "quote", "pair"),
    [
        ("EUR/USD", "USD", ("EUR", "USD")),
        ("EURUSD", "USD", ("EUR", "USD")),
        ("eur-usd", "USD", ("EUR", "USD")),
        ("EUR/USD", "EUR", None),  # the quote currency must be the symbol's second half
        ("AAPL", "USD", None),
        ("EUR/USDT", "USD", None),
    ],
)
def test_fx_pair_reads_base_and_quote_from_the_symbol(symbol: str, quote: str, pair: tuple[str, str] | None) -> None:
    assert fx_pair(symbol, quote) == pair


def test_fx_route_within_one_currency_needs_no_pair() -> None:
    assert fx_route("USD", "USD", {}) == ()
    assert route_rate((), {}) == ONE


def test_fx_route_uses_a_direct_pair_as_quoted() -> None:
    assert fx_route("EUR", "USD", PAIRS) == (("EUR/USD", False),)


def test_fx_route_uses_the_inverse_of_a_pair() -> None:
    route = fx_route("USD", "EUR", PAIRS)
    assert route == (("EUR/USD", True),)
    # 1 USD = 1 / 1.25 EUR
    assert route_rate(route, {"EUR/USD": Price(D("1.25"), T0)}) == D("0.8")


def test_fx_route_crosses_through_a_common_currency() -> None:
    route = fx_route("EUR", "GBP", PAIRS)
    assert route == (("EUR/USD", False), ("GBP/USD", True))
    # EUR → USD → GBP: 1.10 / 1.25 = 0.88
    prices = {"EUR/USD": Price(D("1.10"), T0), "GBP/USD": Price(D("1.25"), T0)}
    assert route_rate(route, prices) == D("0.88")


def test_fx_route_without_any_path_is_none_and_so_is_its_rate() -> None:
    assert fx_route("JPY", "EUR", PAIRS) is None
    assert route_rate(None, {"EUR/USD": Price(D("1.10"), T0)}) is None


def test_a_route_with_a_leg_that_has_no_price_has_no_rate() -> None:
    route = fx_route("EUR", "GBP", PAIRS)
    assert route_rate(route, {"EUR/USD": Price(D("1.10"), T0)}) is None
    # A zero quote is no quote: dividing by it is not a rate either.
    assert route_rate(route, {"EUR/USD": Price(D("1.10"), T0), "GBP/USD": Price(D(0), T0)}) is None


def test_route_rate_at_the_reference_time_uses_each_legs_reference() -> None:
    route = fx_route("EUR", "GBP", PAIRS)
    prices = {"EUR/USD": Price(D("1.10"), T0, reference=D("1.20")), "GBP/USD": Price(D("1.25"), T0, reference=D("1.50"))}
    assert route_rate(route, prices, reference=True) == D("0.8")  # 1.20 / 1.50
    assert route_rate(route, {**prices, "GBP/USD": Price(D("1.25"), T0)}, reference=True) is None


# ---------------------------------------------------------------- rows


def test_worked_example_a_usd_stock_in_a_eur_portfolio() -> None:
    # Bought 10 AAPL @ 200 USD at fx 0.92: cost 2000 USD, 1840.00 EUR. Now AAPL 210 (200 yesterday), EUR/USD 1.10 (1.08).
    prices = {"AAPL": Price(D("210"), T0, reference=D("200")), "EUR/USD": Price(D("1.10"), T0, reference=D("1.08"))}
    route = fx_route("USD", "EUR", {("EUR", "USD"): "EUR/USD"})
    row = value_holding(aapl(), prices["AAPL"], route_rate(route, prices), route_rate(route, prices, reference=True))
    assert row.status == OK
    # 10 × 210 / 1.10 = 1909.09 EUR; unrealised 1909.09 − 1840.00 = 69.09 EUR, on cost 3.75 %.
    assert (cents(row.market_value), row.cost, cents(row.pnl)) == (D("1909.09"), D("1840"), D("69.09"))
    assert row.pnl_pct is not None and round(row.pnl_pct, 2) == D("3.75")
    # Yesterday 10 × 200 / 1.08 = 1851.85 EUR: the day's change, stock and FX together, is 57.24 EUR.
    assert cents(row.day_change) == D("57.24")

    # 500 USD cash through the inverse pair: 500 / 1.10 = 454.55 EUR, yesterday 500 / 1.08 = 462.96: −8.42 EUR.
    cash = value_cash(Cash("USD", D("500")), route_rate(route, prices), route_rate(route, prices, reference=True))
    assert (cash.status, cents(cash.market_value), cents(cash.day_change), cash.cost, cash.pnl) == (
        OK,
        D("454.55"),
        D("-8.42"),
        None,
        None,
    )

    t = totals([("AAPL", row)], [("cash:USD", cash)], Flows(net_deposits=D("2250")))
    # 1909.09 + 454.55 = 2363.64 EUR in all.
    assert (cents(t.total_value), cents(t.market_value), cents(t.cash), t.cost) == (D("2363.64"), D("1909.09"), D("454.55"), D("1840"))
    assert (cents(t.unrealised_pnl), cents(t.day_change), t.missing) == (D("69.09"), D("48.82"), ())


def test_worked_example_without_the_eur_usd_price_the_rows_have_no_rate_and_leave_the_totals() -> None:
    prices = {"AAPL": Price(D("210"), T0, reference=D("200"))}
    route = fx_route("USD", "EUR", {("EUR", "USD"): "EUR/USD"})
    rate = route_rate(route, prices)
    assert rate is None
    row = value_holding(aapl(), prices["AAPL"], rate, None)
    cash = value_cash(Cash("USD", D("500")), rate, None)
    # Never a zero: no value, no P&L, only the cost that is known.
    assert row == RowValue(NO_RATE, None, None, D("1840"), None, None)
    assert cash == RowValue(NO_RATE, None, None, None, None, None)

    sap = Line("SAP", "SAP SE", "equity", "EUR", D("2"), D("400"), D("400"))
    sap_row = value_holding(sap, Price(D("230"), T0, reference=D("225")), ONE, ONE)
    t = totals([("AAPL", row), ("SAP", sap_row)], [("cash:USD", cash)], Flows())
    assert t.missing == (("AAPL", NO_RATE), ("cash:USD", NO_RATE))
    # Only SAP counts: 2 × 230 = 460 against 400 of cost.
    assert (t.total_value, t.market_value, t.cash, t.cost, t.unrealised_pnl, t.day_change) == (
        D("460"),
        D("460"),
        D(0),
        D("400"),
        D("60"),
        D("10"),
    )


def test_a_holding_without_a_price_has_no_value_but_keeps_its_cost() -> None:
    assert value_holding(aapl(), None, ONE, ONE) == RowValue(NO_PRICE, ONE, None, D("1840"), None, None)


def test_a_holding_without_a_reference_has_a_value_but_no_day_change() -> None:
    row = value_holding(aapl(cost_base="2000"), Price(D("210"), T0), ONE, ONE)
    assert row == RowValue(NO_REFERENCE, ONE, D("2100"), D("2000"), D("100"), None)
    assert row.day_change_pct is None
    # A reference price without a reference FX rate is no reference either.
    assert value_holding(aapl(), Price(D("210"), T0, reference=D("200")), ONE, None).status == NO_REFERENCE


def test_day_change_uses_the_reference_price_at_the_reference_rate() -> None:
    row = value_holding(aapl(cost_base="1500"), Price(D("210"), T0, reference=D("200")), D("0.5"), D("0.4"))
    # now 10 × 210 × 0.5 = 1050; then 10 × 200 × 0.4 = 800; change 250 = 31.25 % of 800
    assert (row.market_value, row.day_change, row.day_change_pct) == (D("1050.0"), D("250.0"), D("31.25"))


def test_cash_in_the_view_currency_does_not_move_in_a_day() -> None:
    assert value_cash(Cash("EUR", D("-50")), ONE, ONE) == RowValue(OK, ONE, D("-50"), None, None, D(0))
    assert value_cash(Cash("EUR", D("50")), ONE, None).status == NO_REFERENCE


def test_pnl_percent_of_a_zero_cost_is_not_a_number() -> None:
    row = value_holding(aapl(cost="0", cost_base="0"), Price(D("210"), T0), ONE, ONE)
    assert (row.pnl, row.pnl_pct) == (D("2100"), None)


# ---------------------------------------------------------------- totals


def test_totals_carry_the_ledger_flows_through_unchanged() -> None:
    flows = Flows(realised=D("120"), dividends=D("3"), interest=D("1.25"), fees=D("3.45"), net_deposits=D("2000"))
    t = totals([], [], flows)
    assert (t.realised_pnl, t.dividends, t.interest, t.fees, t.net_deposits) == (D("120"), D("3"), D("1.25"), D("3.45"), D("2000"))
    assert (t.total_value, t.unrealised_pnl_pct, t.day_change_pct, t.missing) == (D(0), None, None, ())


def test_a_row_without_a_reference_counts_in_value_but_is_named_missing_from_the_day_change() -> None:
    with_ref = value_holding(aapl(cost_base="2000"), Price(D("210"), T0, reference=D("200")), ONE, ONE)
    without = value_holding(aapl(cost_base="2000"), Price(D("210"), T0), ONE, ONE)
    t = totals([("A", with_ref), ("B", without)], [], Flows())
    assert (t.market_value, t.day_change, t.missing) == (D("4200"), D("100"), (("B", NO_REFERENCE),))


amounts = st.decimals(min_value=D("0.0001"), max_value=D("100000"), places=4)


@settings(max_examples=200)
@given(st.lists(st.tuples(amounts, amounts, amounts, amounts), min_size=1, max_size=20), st.lists(amounts, max_size=3))
def test_totals_are_the_sum_of_their_rows(data: list[tuple[Decimal, Decimal, Decimal, Decimal]], balances: list[Decimal]) -> None:
    holdings = [
        (f"S{i}", value_holding(Line(f"S{i}", "", "equity", "USD", q, c, c), Price(p, T0, reference=r), ONE, ONE))
        for i, (q, c, p, r) in enumerate(data)
    ]
    cash = [(f"cash:{i}", value_cash(Cash(f"C{i}", a), ONE, ONE)) for i, a in enumerate(balances)]
    t = totals(holdings, cash, Flows())
    # Sums of products of 4-place numbers under 1e5: every figure is exact in 28 digits.
    assert t.market_value == sum(q * p for q, _, p, _ in data)
    assert t.cost == sum(c for _, c, _, _ in data)
    assert t.cash == sum(balances)
    assert t.total_value == t.market_value + t.cash
    assert t.unrealised_pnl == t.market_value - t.cost == sum(r.pnl for _, r in holdings if r.pnl is not None)
    assert t.day_change == sum(q * (p - r) for q, _, p, r in data)
    assert t.missing == ()


# ---------------------------------------------------------------- allocation


def tag(symbol: str, asset_class: str, currency: str) -> Tag:
    return Tag((symbol, symbol), (asset_class, asset_class.title()), (currency, currency))


def test_allocation_splits_by_instrument_asset_class_and_currency_largest_first() -> None:
    result = allocation(
        [
            (tag("AAPL", "equity", "USD"), D("300")),
            (tag("SAP", "equity", "EUR"), D("100")),
            (tag("BTC-USD", "crypto", "USD"), D("100")),
        ]
    )
    assert [(s.key, s.value, s.weight) for s in result["instrument"]] == [
        ("AAPL", D("300"), D("60")),
        ("BTC-USD", D("100"), D("20")),  # ties in key order
        ("SAP", D("100"), D("20")),
    ]
    assert [(s.key, s.label, s.weight) for s in result["asset_class"]] == [("equity", "Equity", D("80")), ("crypto", "Crypto", D("20"))]
    assert [(s.key, s.weight) for s in result["currency"]] == [("USD", D("80")), ("EUR", D("20"))]


def test_allocation_ignores_rows_without_a_value_and_overdrawn_cash() -> None:
    result = allocation(
        [(tag("AAPL", "equity", "USD"), D("50")), (tag("MSFT", "equity", "USD"), None), (tag("cash:USD", "cash", "USD"), D("-20"))]
    )
    assert [(s.key, s.weight) for s in result["instrument"]] == [("AAPL", D("100"))]
    assert allocation([(tag("cash:USD", "cash", "USD"), D("-20"))]) == {"instrument": [], "asset_class": [], "currency": []}


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B", "C", "D"]),
            st.sampled_from(["equity", "crypto", "cash"]),
            st.sampled_from(["USD", "EUR"]),
            st.one_of(st.none(), st.decimals(min_value=D("-1000"), max_value=D("100000"), places=2)),
        ),
        max_size=12,
    )
)
def test_allocation_weights_sum_to_100_over_positive_values_only(rows: list[tuple[str, str, str, Decimal | None]]) -> None:
    result = allocation((tag(symbol, asset_class, currency), value) for symbol, asset_class, currency, value in rows)
    positive = sum((v for *_, v in rows if v is not None and v > 0), D(0))
    for slices in result.values():
        assert all(s.value > 0 for s in slices)
        assert sum((s.value for s in slices), D(0)) == positive
        if positive:
            # Each weight is rounded to 28 significant digits; a dozen of them sum to 100 within 1e-24.
            assert abs(sum(s.weight for s in slices) - 100) <= D("1e-24")
        else:
            assert slices == []


# ---------------------------------------------------------------- running totals

KEYS = ["AAPL", "SAP", "BTC", "cash:USD", "cash:EUR"]
TAGS = {
    "AAPL": tag("AAPL", "equity", "USD"),
    "SAP": tag("SAP", "equity", "EUR"),
    "BTC": tag("BTC", "crypto", "USD"),
    "cash:USD": Tag(("cash:USD", "Cash USD"), ("cash", "Cash"), ("USD", "USD")),
    "cash:EUR": Tag(("cash:EUR", "Cash EUR"), ("cash", "Cash"), ("EUR", "EUR")),
}
money = st.decimals(min_value=D("-5000"), max_value=D("100000"), places=4)
row_values = st.one_of(
    st.builds(lambda v, c, d: RowValue(OK, ONE, v, c, v - c, d), money, money, money),
    st.builds(lambda v, c: RowValue(NO_REFERENCE, ONE, v, c, v - c, None), money, money),
    st.builds(lambda c: RowValue(NO_PRICE, None, None, c, None, None), money),
)
FLOWS = Flows(D("12.5"), D("3"), D("1"), D("4.25"), D("10000"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KEYS), row_values), min_size=1, max_size=60))
def test_running_totals_always_equal_the_totals_and_allocation_summed_afresh(changes: list[tuple[str, RowValue]]) -> None:
    running = RunningTotals(order={key: i for i, key in enumerate(KEYS)}, cash=["cash:USD", "cash:EUR"], tags=TAGS)
    rows: dict[str, RowValue] = {}
    for key, row in changes:
        running.set(key, row)
        rows[key] = row
        ordered = sorted(rows.items(), key=lambda item: KEYS.index(item[0]))
        holdings = [(k, r) for k, r in ordered if not k.startswith("cash:")]
        cash = [(k, r) for k, r in ordered if k.startswith("cash:")]
        # 4-place values under 1e5, a few dozen at most: every sum is exact, so equal to the last digit.
        assert running.totals(FLOWS) == totals(holdings, cash, FLOWS)
        assert running.allocation() == allocation((TAGS[k], r.market_value) for k, r in ordered)


# ---------------------------------------------------------------- convert


def test_convert_adds_rows_of_several_views_into_one_currency() -> None:
    # The same 10 AAPL in a USD portfolio (1 USD = 0.90 EUR, 0.80 yesterday) and a EUR one, shown in EUR.
    in_usd = value_holding(aapl(cost_base="2000"), Price(D("210"), T0, reference=D("200")), ONE, ONE)
    in_eur = value_holding(aapl(cost_base="1840"), Price(D("210"), T0, reference=D("200")), D("0.9"), D("0.8"))
    row = convert([(in_usd, D("0.9"), D("0.8")), (in_eur, ONE, ONE)])
    # 2100 × 0.9 + 1890 = 3780; cost 2000 × 0.9 + 1840 = 3640 (cost at today's rate); P&L 140.
    assert (row.status, row.rate, row.market_value, row.cost, row.pnl) == (OK, D("0.9"), D("3780.0"), D("3640.0"), D("140.0"))
    # yesterday: 2000 × 0.8 + 2000 × 0.8 = 3200; change 580
    assert row.day_change == D("580.00")


def test_convert_without_a_rate_for_any_part_has_no_value() -> None:
    in_usd = value_holding(aapl(cost_base="2000"), Price(D("210"), T0), ONE, ONE)
    assert convert([(in_usd, ONE, None), (in_usd, None, None)]) == RowValue(NO_RATE, None, None, None, None, None)


def test_convert_of_a_part_without_a_value_keeps_that_parts_status() -> None:
    priced = value_holding(aapl(cost_base="2000"), Price(D("210"), T0), ONE, ONE)
    unpriced = value_holding(aapl(cost_base="1000"), None, ONE, ONE)
    row = convert([(priced, ONE, ONE), (unpriced, D("2"), D("2"))])
    assert (row.status, row.market_value, row.cost) == (NO_PRICE, None, D("2000"))


def test_convert_without_a_reference_rate_has_no_day_change() -> None:
    row = value_holding(aapl(cost_base="2000"), Price(D("210"), T0, reference=D("200")), ONE, ONE)
    converted = convert([(row, D("2"), None)])
    assert (converted.status, converted.market_value, converted.day_change) == (NO_REFERENCE, D("4200"), None)


def test_convert_of_cash_has_no_cost() -> None:
    cash = value_cash(Cash("USD", D("100")), ONE, ONE)
    row = convert([(cash, D("0.9"), D("0.8"))])
    # 90 now, 80 yesterday
    assert (row.status, row.market_value, row.cost, row.pnl, row.day_change) == (OK, D("90.0"), None, None, D("10.0"))
