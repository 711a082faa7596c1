"""The daily value history: the ledger replayed day by day over the daily closes (portfolio/daily.py, performance.py)."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command

from marketdata.models import AssetClass, DailyClose, Instrument
from portfolio import services
from portfolio.daily import CloseHistory, daily_values
from portfolio.ledger import Entry
from portfolio.models import DailyValue, Portfolio
from portfolio.performance import daily_values_compute, daily_values_rebuild, daily_values_record, fx_rate_on
from tests.conftest import record

D = Decimal
TODAY = date(2026, 1, 9)


def at(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


def close(instrument: Instrument, day: int, value: str) -> None:
    DailyClose.objects.create(instrument=instrument, date=date(2026, 1, day), close=D(value), source="csv")


def stored(portfolio: Portfolio) -> list[tuple[date, Decimal, Decimal, bool]]:
    rows = DailyValue.objects.filter(portfolio=portfolio).order_by("date").values_list("date", "value", "net_flow", "complete")
    return [(day, value.normalize(), flow.normalize(), complete) for day, value, flow, complete in rows]


@pytest.fixture
def carol(alice: Any, instruments: dict[str, Instrument]) -> Portfolio:
    # 1000 deposited on the 5th, 5 AAPL bought at 150 (250 cash left), 500 more deposited on the 7th.
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Carol")
    record(portfolio, "deposit", "1000", executed_at=at(5, 10))
    record(portfolio, "buy", "5", instruments["AAPL"], price="150", executed_at=at(5, 15))
    record(portfolio, "deposit", "500", executed_at=at(7))
    for day, value in ((5, "160"), (6, "170"), (8, "180")):  # no close on the 7th
        close(instruments["AAPL"], day, value)
    return portfolio


def test_each_day_is_the_end_of_day_book_at_that_days_closes(carol: Portfolio) -> None:
    result = daily_values_rebuild(portfolio=carol, today=TODAY)
    # 5th: 5 × 160 + 250 = 1050 (1000 in). 6th: 5 × 170 + 250 = 1100.
    # 7th: no close, the 6th's carried: 5 × 170 + 750 = 1600 (500 in). 8th: 5 × 180 + 750 = 1650. Up to yesterday.
    assert stored(carol) == [
        (date(2026, 1, 5), D(1050), D(1000), True),
        (date(2026, 1, 6), D(1100), D(0), True),
        (date(2026, 1, 7), D(1600), D(500), True),
        (date(2026, 1, 8), D(1650), D(0), True),
    ]
    assert (result.days, result.incomplete) == (4, 0)


def test_a_holding_without_a_recent_close_makes_the_day_incomplete_not_guessed(carol: Portfolio, instruments: Any) -> None:
    record(carol, "buy", "1", instruments["MSFT"], price="100", executed_at=at(6))  # MSFT has no close at all
    daily_values_rebuild(portfolio=carol, today=TODAY)
    rows = DailyValue.objects.filter(portfolio=carol).order_by("date")
    assert [(r.date.day, r.complete, r.missing) for r in rows] == [
        (5, True, ""),
        (6, False, "MSFT"),
        (7, False, "MSFT"),
        (8, False, "MSFT"),
    ]
    # The 6th counts what could be priced: 5 × 170 + 150 cash.
    assert rows[1].value == D(1000)


def test_a_close_older_than_a_week_is_stale() -> None:
    history = CloseHistory([("AAPL", date(2026, 1, 1), D(10))])
    assert history.on("AAPL", date(2026, 1, 8)) == D(10)  # a week later: carried
    assert history.on("AAPL", date(2026, 1, 9)) is None  # eight days: stale
    assert history.on("AAPL", date(2025, 12, 31)) is None  # before the first close


def test_a_rebuild_since_a_day_keeps_the_days_before_it(carol: Portfolio) -> None:
    daily_values_rebuild(portfolio=carol, today=TODAY)
    DailyValue.objects.filter(portfolio=carol, date=date(2026, 1, 5)).update(value=1)
    assert daily_values_rebuild(portfolio=carol, since=date(2026, 1, 7), today=TODAY).days == 2
    assert [value for _, value, _, _ in stored(carol)] == [D(1), D(1100), D(1600), D(1650)]


def test_a_full_rebuild_replaces_the_days_already_stored(carol: Portfolio) -> None:
    # Every ledger change rebuilds the whole history over the rows the last one wrote.
    daily_values_rebuild(portfolio=carol, today=TODAY)
    DailyValue.objects.filter(portfolio=carol, date=date(2026, 1, 5)).update(value=1)
    assert daily_values_rebuild(portfolio=carol, today=TODAY).days == 4
    assert [value for _, value, _, _ in stored(carol)] == [D(1050), D(1100), D(1600), D(1650)]


def test_foreign_cash_is_valued_at_the_days_fx_close_and_its_deposit_at_the_booked_rate(alice: Any, instruments: Any) -> None:
    portfolio = services.portfolio_create(owner_id=alice.pk, name="Euro cash")
    # 100 EUR deposited at 1.10 (booked as 110 USD in); EUR/USD closes 1.20 that day: worth 120 USD.
    record(portfolio, "deposit", "100", currency="EUR", fx_rate="1.10", executed_at=at(5))
    close(instruments["EUR/USD"], 5, "1.20")
    daily_values_rebuild(portfolio=portfolio, today=date(2026, 1, 6))
    assert stored(portfolio) == [(date(2026, 1, 5), D(120), D(110), True)]


def test_a_day_is_a_day_of_the_portfolios_time_zone(alice: Any, instruments: Any) -> None:
    portfolio = services.portfolio_create(owner_id=alice.pk, name="New York")
    # 02:00 UTC on the 6th is 21:00 on the 5th in New York: the deposit belongs to New York's 5th.
    record(portfolio, "deposit", "100", executed_at=datetime(2026, 1, 6, 2, tzinfo=UTC))
    portfolio.time_zone = "America/New_York"  # the field another change adds; read with getattr until then
    assert [(d.day, d.net_flow) for d in daily_values_compute(portfolio=portfolio, today=date(2026, 1, 7))] == [
        (date(2026, 1, 5), D(100)),
        (date(2026, 1, 6), D(0)),
    ]
    del portfolio.time_zone  # type: ignore[attr-defined]
    assert [d.day for d in daily_values_compute(portfolio=portfolio, today=date(2026, 1, 7))] == [date(2026, 1, 6)]


def test_shares_transferred_in_flow_at_the_days_close() -> None:
    entries = [Entry("transfer_in", at(5), "USD", "AAPL", D(2), price=D(100))]
    history = CloseHistory([("AAPL", date(2026, 1, 5), D(130))])
    (day,) = daily_values(
        entries, base="USD", tz=ZoneInfo("UTC"), last=date(2026, 1, 5), closes=history, pairs={}, currencies={"AAPL": "USD"}
    )
    # Their cost was 200; they added 2 × 130 = 260 to the value, and that is the flow.
    assert (day.value, day.net_flow, day.inflow, day.complete) == (D(260), D(260), D(260), True)


def test_fx_rate_on_a_date_is_the_latest_close_direct_inverse_or_crossed(instruments: Any) -> None:
    gbp = Instrument.objects.create(symbol="GBPUSD", name="Sterling", asset_class=AssetClass.FX, quote_currency="USD")
    close(instruments["EUR/USD"], 5, "1.25")
    close(gbp, 6, "1.50")
    day = date(2026, 1, 6)
    assert fx_rate_on(base="EUR", quote="USD", day=day) == D("1.25")  # the 5th's close, carried
    assert fx_rate_on(base="USD", quote="EUR", day=day) == D("0.8")  # inverse pair: 1 / 1.25
    assert fx_rate_on(base="EUR", quote="GBP", day=day) == D("1.25") / D("1.50")  # cross through USD
    assert fx_rate_on(base="EUR", quote="USD", day=date(2026, 1, 4)) is None  # before any close
    assert fx_rate_on(base="EUR", quote="JPY", day=day) is None  # no pair
    assert fx_rate_on(base="EUR", quote="EUR", day=day) == 1


def test_a_ledger_change_rebuilds_the_daily_values_after_commit(
    carol: Portfolio, instruments: Any, django_capture_on_commit_callbacks: Any
) -> None:
    DailyValue.objects.all().delete()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        record(carol, "withdrawal", "100", executed_at=at(6))
    assert callbacks  # ran after commit, not inside the writer's transaction
    rows = stored(carol)
    assert rows[1] == (date(2026, 1, 6), D(1000), D(-100), True)  # 5 × 170 + 150
    assert rows[-1][0] == datetime.now(UTC).date() - timedelta(days=1)  # up to yesterday


def test_the_command_rebuilds_every_portfolio(carol: Portfolio) -> None:
    out = StringIO()
    call_command("rebuild_daily_values", stdout=out)
    assert DailyValue.objects.filter(portfolio=carol).exists()
    assert "rebuild_daily_values: 1 portfolios" in out.getvalue()


@pytest.mark.django_db(transaction=True)
async def test_the_worker_rebuilds_daily_values_when_a_utc_day_closes(alice: Any, instruments: Any) -> None:
    from channels.db import database_sync_to_async

    def setup() -> Portfolio:
        portfolio = services.portfolio_create(owner_id=alice.pk, name="Hooked")
        record(portfolio, "deposit", "100", executed_at=at(5))
        DailyValue.objects.all().delete()
        return portfolio

    portfolio = await database_sync_to_async(setup)()
    await daily_values_record([(at(6, 23), {})])
    count = await DailyValue.objects.filter(portfolio=portfolio).acount()
    assert count > 0
