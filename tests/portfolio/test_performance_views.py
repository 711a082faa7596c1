"""GET /portfolios/<id>/performance/: the series, TWR, MWR, drawdown and benchmark of a range, for the owner only."""

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from marketdata.models import DailyClose, Instrument
from portfolio import services
from portfolio.models import DailyValue, Portfolio, PortfolioValue
from tests.conftest import record

D = Decimal


def today() -> date:
    return timezone.now().date()  # the portfolio's time zone is the site's, UTC


def days_ago(n: int) -> date:
    return today() - timedelta(days=n)


def value(portfolio: Portfolio, ago: int, amount: str, flow: str = "0", *, complete: bool = True) -> None:
    net = D(flow)
    DailyValue.objects.create(
        portfolio=portfolio, date=days_ago(ago), value=D(amount), net_flow=net, inflow=max(net, D(0)), complete=complete
    )


@pytest.fixture
def empty(alice: Any) -> Portfolio:
    return services.portfolio_create(owner_id=alice.pk, name="Performance")


def get(client: Client, portfolio: Portfolio, **params: str) -> Any:
    return client.get(f"/portfolios/{portfolio.pk}/performance/", params)


def test_max_links_the_days_from_nothing_so_deposits_are_not_gains(client: Client, alice: Any, empty: Portfolio) -> None:
    # 1000 in → 1050; 1100; 500 in → 1600; 1650. From nothing the day before the first:
    # 1050 / (0 + 1000) × 1100 / 1050 × 1600 / (1100 + 500) × 1650 / 1600 − 1 = 1.1 × 1.03125 − 1 = 13.4375 %.
    for ago, amount, flow in ((4, "1050", "1000"), (3, "1100", "0"), (2, "1600", "500"), (1, "1650", "0")):
        value(empty, ago, amount, flow)
    client.force_login(alice)
    body = get(client, empty, range="MAX").json()
    assert body["twr"] == pytest.approx(0.134375, abs=1e-12)
    assert [(p["t"], p["value"], p["flow"]) for p in body["series"]] == [
        (days_ago(5).isoformat(), "0", "0"),
        (days_ago(4).isoformat(), "1050", "1000"),
        (days_ago(3).isoformat(), "1100", "0"),
        (days_ago(2).isoformat(), "1600", "500"),
        (days_ago(1).isoformat(), "1650", "0"),
    ]
    assert [p["index"] for p in body["series"]] == pytest.approx([1, 1.05, 1.1, 1.1, 1.134375])
    assert body["max_drawdown"]["depth"] == 0.0  # the growth of 1 never fell
    # MWR: 1000 (1+r)^(3/365) + 500 (1+r)^(1/365) = 1650 gives a daily factor g ≈ 1.0414 (g = 1.0415: 1650.5).
    assert body["mwr"] > 0 and body["mwr_annualised"] > body["mwr"]
    assert body["currency"] == "USD" and body["incomplete_days"] == 0


def test_without_flows_money_and_time_weighted_returns_agree(client: Client, alice: Any, empty: Portfolio) -> None:
    # 1M: the anchor is the last day before the range (40 days ago, 1000); 10 days ago 1100: +10 % both ways.
    value(empty, 40, "1000", "1000")
    value(empty, 10, "1100")
    client.force_login(alice)
    body = get(client, empty, range="1M").json()
    assert [p["value"] for p in body["series"]] == ["1000", "1100"]
    assert body["twr"] == pytest.approx(0.1, abs=1e-12)
    assert body["mwr"] == pytest.approx(0.1, abs=1e-9)
    assert body["mwr_annualised"] == pytest.approx(1.1 ** (365 / 30) - 1, rel=1e-9)


def test_an_incomplete_day_is_left_out_and_its_flow_rolls_into_the_next(client: Client, alice: Any, empty: Portfolio) -> None:
    # 1000 in → 1000; an unpriced day with 500 in; 1650: 1000 / 1000 × 1650 / (1000 + 500) − 1 = 10 %.
    value(empty, 3, "1000", "1000")
    value(empty, 2, "0", "500", complete=False)
    value(empty, 1, "1650")
    client.force_login(alice)
    body = get(client, empty, range="1W").json()
    assert [(p["value"], p["flow"]) for p in body["series"]] == [("0", "0"), ("1000", "1000"), ("1650", "500")]
    assert body["twr"] == pytest.approx(0.1, abs=1e-12)
    assert body["incomplete_days"] == 1


def test_drawdown_is_measured_on_the_growth_of_one_with_dates(client: Client, alice: Any, empty: Portfolio) -> None:
    # 1000 → 1200 → 900 (−25 % from the peak) → a 1000 withdrawal at 1000 (no loss, just money out).
    value(empty, 5, "1000", "1000")
    value(empty, 4, "1200")
    value(empty, 3, "900")
    value(empty, 2, "0", "-1000")  # the 900 grew to 1000 and left: (0 + 1000) / 900
    client.force_login(alice)
    drawdown = get(client, empty, range="MAX").json()["max_drawdown"]
    assert drawdown == {"depth": pytest.approx(0.25), "peak": days_ago(4).isoformat(), "trough": days_ago(3).isoformat()}


def test_the_benchmark_is_rebased_to_the_range_start(client: Client, alice: Any, empty: Portfolio) -> None:
    spy = Instrument.objects.create(symbol="SPY", name="S&P 500 ETF", asset_class="etf", quote_currency="USD")
    for ago, close in ((5, "400"), (3, "420"), (1, "440")):
        DailyClose.objects.create(instrument=spy, date=days_ago(ago), close=D(close), source="csv")
    for ago in (4, 3, 2, 1):
        value(empty, ago, "1000", "1000" if ago == 4 else "0")
    client.force_login(alice)
    benchmark = get(client, empty, range="MAX", benchmark="SPY").json()["benchmark"]
    # The range starts 5 days ago at 400: 1, 1 (carried), 420 / 400, 1.05 (carried), 440 / 400.
    assert [(p["close"], p["index"]) for p in benchmark["series"]] == [
        ("400", 1.0),
        ("400", 1.0),
        ("420", pytest.approx(1.05)),
        ("420", pytest.approx(1.05)),
        ("440", pytest.approx(1.1)),
    ]
    assert benchmark["return"] == pytest.approx(0.1)
    assert (benchmark["symbol"], benchmark["currency"]) == ("SPY", "USD")


def test_1d_uses_the_minute_values_and_the_flows_between_them(client: Client, alice: Any, empty: Portfolio, instruments: Any) -> None:
    now = timezone.now().replace(second=0, microsecond=0)
    for hours, amount in ((3, "1000"), (2, "1100"), (1, "1210")):
        PortfolioValue.objects.create(portfolio=empty, minute=now - timedelta(hours=hours), value=D(amount))
    PortfolioValue.objects.create(portfolio=empty, minute=now - timedelta(hours=30), value=D(1))  # older than a day
    record(empty, "deposit", "100", executed_at=now - timedelta(minutes=90))
    client.force_login(alice)
    body = get(client, empty, range="1D").json()
    # 1000 → 1100: +10 %; 100 in, then 1210: 1210 / (1100 + 100) − 1; linked: 1.1 × 1.0083… − 1.
    assert [p["flow"] for p in body["series"]] == ["0", "0", "100"]
    assert body["twr"] == pytest.approx(1.1 * 1210 / 1200 - 1, abs=1e-12)


def test_only_the_owner_sees_a_portfolios_performance(client: Client, bob: Any, empty: Portfolio) -> None:
    assert get(client, empty).status_code == 404  # signed out
    client.force_login(bob)
    assert get(client, empty).status_code == 404
    assert client.get("/portfolios/999999/performance/").status_code == 404


def test_a_bad_range_or_benchmark_is_a_400_that_says_why(client: Client, alice: Any, empty: Portfolio) -> None:
    client.force_login(alice)
    answer = get(client, empty, range="5Y")
    assert answer.status_code == 400 and "use one of 1D, 1W, 1M, YTD, 1Y, MAX" in answer.json()["error"]
    answer = get(client, empty, benchmark="NOPE")
    assert answer.status_code == 400 and answer.json()["error"] == "No instrument 'NOPE' to compare with."


def test_a_portfolio_without_history_has_an_empty_series(client: Client, alice: Any, empty: Portfolio) -> None:
    client.force_login(alice)
    body = get(client, empty, range="YTD").json()
    assert (body["series"], body["twr"], body["mwr"], body["max_drawdown"]) == ([], None, None, None)
