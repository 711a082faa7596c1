"""The pure return maths (portfolio/returns.py): hand-checked examples, then properties."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio.returns import annualise, max_drawdown, money_weighted, period_return, rebase, twr, xirr

D = Decimal


# ---------------------------------------------------------------- TWR, by hand


def test_twr_links_daily_returns_with_inflows_at_the_start_and_outflows_at_the_end_of_the_day() -> None:
    # Day 1: 100 → 110, no flow: +10 %.
    # Day 2: 100 deposited (counted from the start of the day): 110 + 100 = 210 works all day → 231: +10 %.
    # Day 3: 50 withdrawn (counted at the end of the day): 231 → 204.1 + 50 = 254.1: +10 %.
    # TWR = 1.1 ** 3 − 1 = 0.331, whatever the flows; the index is the growth of 1.
    result = twr([D(100), D(110), D(231), D("204.1")], [D(0), D(0), D(100), D(-50)])
    assert result.value == pytest.approx(0.331, abs=1e-12)
    assert result.index == pytest.approx((1.0, 1.1, 1.21, 1.331), abs=1e-12)
    assert result.skipped == 0


def test_an_imported_deposit_is_not_a_gain() -> None:
    # The case: an empty portfolio, then a $1,000 deposit: 1000 / (0 + 1000) − 1 = 0.
    assert twr([D(0), D(1000)], [D(0), D(1000)]).value == 0.0
    # Deposited and grown 1 % the same day: 1010 / (0 + 1000) − 1 = 1 %.
    assert twr([D(0), D(1010)], [D(0), D(1000)]).value == pytest.approx(0.01, abs=1e-12)


def test_withdrawing_everything_ends_on_a_defined_return_and_empty_days_are_skipped() -> None:
    # 100 → everything (105) withdrawn at the end of the day: (0 + 105) / 100 − 1 = +5 %; then two empty days.
    result = twr([D(100), D(0), D(0), D(0)], [D(0), D(-105), D(0), D(0)])
    assert result.value == pytest.approx(0.05, abs=1e-12)
    assert result.skipped == 2


def test_gross_inflows_split_a_day_with_money_in_and_out() -> None:
    # 100 in and 30 out on one day (net +70): (100 + 100) = 200 works all day → 198 + 30 out = 228 / 200 − 1 = 14 %.
    assert twr([D(100), D(198)], [D(0), D(70)], inflows=[D(0), D(100)]).value == pytest.approx(0.14, abs=1e-12)


# ---------------------------------------------------------------- XIRR, by hand


def test_xirr_of_one_year_at_ten_percent() -> None:
    # 1000 in on 2023-01-01, 1100 out 365 days later: 1100 / 1000 − 1 = 10 %.
    assert xirr([(date(2023, 1, 1), D(-1000)), (date(2024, 1, 1), D(1100))]) == pytest.approx(0.10, abs=1e-9)


def test_xirr_of_two_deposits() -> None:
    # 1000 in on 2021-01-01 and on 2022-01-01 (365 days apart each), 2310 out on 2023-01-01:
    # 1000 (1 + r)² + 1000 (1 + r) = 2310 → r = 10 % (1210 + 1100 = 2310).
    flows = [(date(2021, 1, 1), D(-1000)), (date(2022, 1, 1), D(-1000)), (date(2023, 1, 1), D(2310))]
    assert xirr(flows) == pytest.approx(0.10, abs=1e-9)


def test_xirr_with_two_roots_returns_the_one_closest_to_zero() -> None:
    # −100, +230 a year later, −132 two years later: 100y² − 230y + 132 = 0 (y = 1 + r) → y = 1.1 or 1.2.
    flows = [(date(2021, 1, 1), D(-100)), (date(2022, 1, 1), D(230)), (date(2023, 1, 1), D(-132))]
    assert xirr(flows) == pytest.approx(0.10, abs=1e-9)


@pytest.mark.parametrize(
    "flows",
    [
        [],
        [(date(2021, 1, 1), D(-100)), (date(2022, 1, 1), D(-50))],  # all in: no rate returns anything
        [(date(2021, 1, 1), D(100)), (date(2022, 1, 1), D(50))],  # all out
        [(date(2021, 1, 1), D(0)), (date(2022, 1, 1), D(0))],
    ],
)
def test_xirr_without_a_root_is_none(flows: list[tuple[date, Decimal]]) -> None:
    assert xirr(flows) is None


def test_money_weighted_puts_in_the_start_value_and_the_flows_and_takes_out_the_end_value() -> None:
    # Start 1000 on 2021-01-01, 1000 deposited 2022-01-01, 2310 at the end on 2023-01-01: the two-deposit case, 10 %.
    rate = money_weighted(
        start=date(2021, 1, 1), start_value=D(1000), flows=[(date(2022, 1, 1), D(1000))], end=date(2023, 1, 1), end_value=D(2310)
    )
    assert rate == pytest.approx(0.10, abs=1e-9)


def test_xirr_takes_aware_datetimes_for_intraday_periods() -> None:
    # 1000 → 1001 in exactly one day, +0.1 %: an annual rate of 1.001 ** 365 − 1.
    start = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
    rate = xirr([(start, D(-1000)), (start + timedelta(days=1), D(1001))])
    assert rate == pytest.approx(1.001**365 - 1, rel=1e-9)


def test_period_return_and_annualise_undo_each_other() -> None:
    # 21 % a year for two 365-day years: 1.21² − 1 = 46.41 %; and back.
    assert period_return(0.21, start=date(2021, 1, 1), end=date(2023, 1, 1)) == pytest.approx(0.4641, abs=1e-12)
    assert annualise(0.4641, 730) == pytest.approx(0.21, abs=1e-12)


# ---------------------------------------------------------------- drawdown and rebasing, by hand


def test_max_drawdown_is_the_largest_fall_from_a_running_peak() -> None:
    # 120 → 90 is −25 %; 130 → 65 is −50 %, the largest: peak at index 3, trough at index 4.
    result = max_drawdown([D(100), D(120), D(90), D(130), D(65), D(70)])
    assert (result.depth, result.peak, result.trough) == (0.5, 3, 4)


def test_rebase_starts_a_series_at_one_or_at_a_given_value() -> None:
    assert rebase([D(50), D(55), D(45)]) == pytest.approx([1.0, 1.1, 0.9])
    assert rebase([D(50), D(55), D(45)], to=D(1000)) == pytest.approx([1000.0, 1100.0, 900.0])


# ---------------------------------------------------------------- properties

prices = st.lists(st.decimals(min_value=D("0.01"), max_value=D(10_000), places=2), min_size=2, max_size=40)
fractions = st.lists(st.floats(min_value=0, max_value=1), min_size=40, max_size=40)
deposits = st.lists(st.decimals(min_value=D(0), max_value=D(100_000), places=2), min_size=40, max_size=40)


def holding_only(prices: list[Decimal], deposits: list[Decimal], sells: list[float]) -> tuple[list[Decimal], list[Decimal]]:
    """Values and net flows of a portfolio that only ever holds the benchmark: 10 units at first; each day a deposit
    buys units at the start of the day (the previous close), and a fraction of the units is sold and withdrawn at
    the end of the day (the day's close)."""
    units = D(10)
    values, flows = [units * prices[0]], [D(0)]
    for i in range(1, len(prices)):
        units += deposits[i] / prices[i - 1]
        sold = units * D(sells[i]) / 2
        units -= sold
        values.append(units * prices[i])
        flows.append(deposits[i] - sold * prices[i])
    return values, flows


@given(prices, deposits, fractions)
def test_twr_of_a_portfolio_that_only_holds_the_benchmark_is_the_benchmarks_return(
    prices: list[Decimal], deposits: list[Decimal], sells: list[float]
) -> None:
    values, flows = holding_only(prices, deposits, sells)
    result = twr(values, flows, inflows=[D(0), *deposits[1 : len(prices)]])
    assert result.value == pytest.approx(float(prices[-1] / prices[0]) - 1, rel=1e-9, abs=1e-12)


@given(prices, st.integers(min_value=1, max_value=39), st.decimals(min_value=D(1), max_value=D(1_000_000), places=2))
def test_a_deposit_changes_the_value_but_not_the_twr(prices: list[Decimal], day: int, amount: Decimal) -> None:
    day = min(day, len(prices) - 1)
    none = [D(0)] * len(prices)
    one = [amount if i == day else D(0) for i in range(len(prices))]
    without, without_flows = holding_only(prices, none, [0.0] * len(prices))
    with_deposit, with_flows = holding_only(prices, one, [0.0] * len(prices))
    assert with_deposit[-1] > without[-1]
    assert twr(with_deposit, with_flows).value == pytest.approx(twr(without, without_flows).value, rel=1e-9, abs=1e-12)


@given(
    st.floats(min_value=-0.9, max_value=5.0),
    st.integers(min_value=1, max_value=3650),
    st.decimals(min_value=D(1), max_value=D(1_000_000), places=2),
)
def test_xirr_of_a_single_deposit_growing_at_r_a_year_is_r(rate: float, days: int, amount: Decimal) -> None:
    start = date(2020, 1, 1)
    end_value = D(repr(float(amount) * (1 + rate) ** (days / 365)))
    found = xirr([(start, -amount), (start + timedelta(days=days), end_value)])
    assert found == pytest.approx(rate, rel=1e-6, abs=1e-6)


@settings(max_examples=200)
@given(st.lists(st.decimals(min_value=D(0), max_value=D(1_000_000), places=4), max_size=60))
def test_drawdown_is_a_fraction_between_zero_and_one(series: list[Decimal]) -> None:
    result = max_drawdown(series)
    assert 0.0 <= result.depth <= 1.0
    assert result.peak <= result.trough or result.depth == 0.0


@given(st.lists(st.decimals(min_value=D(0), max_value=D(1_000_000), places=4), max_size=60))
def test_drawdown_of_a_non_decreasing_series_is_zero(series: list[Decimal]) -> None:
    assert max_drawdown(sorted(series)).depth == 0.0
