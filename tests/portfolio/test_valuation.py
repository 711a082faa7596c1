from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from portfolio.valuation import Line, Price, totals, value_row

D = Decimal
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def test_worked_example_a_row_in_profit() -> None:
    # 10 shares bought at 150.10 average, now 190: value 1900, cost 1501, P&L 399 = 26.58 %
    row = value_row(Line("AAPL", "Apple", "USD", D("10"), D("150.10")), Price(D("190"), T0))
    assert (row.market_value, row.cost, row.pnl) == (D("1900"), D("1501.00"), D("399.00"))
    assert row.pnl_pct is not None and round(row.pnl_pct, 2) == D("26.58")


def test_a_row_without_a_price_has_no_value_and_is_excluded_from_totals() -> None:
    priced = Line("AAPL", "Apple", "USD", D("1"), D("100"))
    unpriced = Line("MSFT", "Microsoft", "USD", D("1"), D("300"))
    rows = [(priced, value_row(priced, Price(D("110"), T0))), (unpriced, value_row(unpriced, None))]
    assert rows[1][1].market_value is None and rows[1][1].pnl is None
    t = totals(rows, base_currency="USD")
    assert (t.market_value, t.cost, t.pnl, t.excluded) == (D("110"), D("100"), D("10"), ("MSFT",))


def test_a_row_in_another_currency_is_excluded_not_added_or_zeroed() -> None:
    sap = Line("SAP", "SAP SE", "EUR", D("2"), D("200"))
    t = totals([(sap, value_row(sap, Price(D("230"), T0)))], base_currency="USD")
    assert (t.market_value, t.cost, t.pnl_pct, t.excluded) == (D(0), D(0), None, ("SAP",))


amounts = st.decimals(min_value=D("0.0001"), max_value=D("100000"), places=4)


@given(st.lists(st.tuples(amounts, amounts, amounts), min_size=1, max_size=20))
def test_totals_are_the_sum_of_their_rows_and_pnl_reconciles(data: list[tuple[Decimal, Decimal, Decimal]]) -> None:
    lines = [Line(f"S{i}", "", "USD", q, c) for i, (q, c, _) in enumerate(data)]
    rows = [(line, value_row(line, Price(p, T0))) for line, (_, _, p) in zip(lines, data, strict=True)]
    t = totals(rows, base_currency="USD")
    assert t.market_value == sum(q * p for q, _, p in data)
    assert t.cost == sum(q * c for q, c, _ in data)
    assert t.pnl == t.market_value - t.cost == sum(r.pnl for _, r in rows if r.pnl is not None)
    assert t.excluded == ()
