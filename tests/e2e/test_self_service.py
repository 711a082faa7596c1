"""Issue 14, "Done means": in a real browser, a fresh non-staff user, without the admin, creates a portfolio, imports a
Trading 212 export with one bad row (fixed in the wizard), sees the holdings valued live, edits a trade, switches the
value chart to 1M and reads the time- and money-weighted returns `portfolio.performance` computes for that month.

The export is written here with dates relative to today (all inside the last month), as Trading 212 writes a USD
account's history. Screenshots of every step at 1440x900 and 390x844 go to test-artifacts/self-service/."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from time import monotonic
from typing import Any, TypeVar

import pytest
from django.contrib.auth import get_user_model
from django.db import connections
from django.utils import timezone

from marketdata.models import DailyClose, Instrument
from portfolio.models import DailyValue, Portfolio
from portfolio.performance import daily_values_compute, performance_for
from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in
from tests.e2e.pages import SIZES, ratio_text, shoot
from tests.e2e.test_csp import REPORT_VIOLATIONS
from tests.servers import live_stack

pytestmark = BROWSER_TEST

SHOTS = ARTIFACTS / "self-service"
D = Decimal
T = TypeVar("T")
HEADER = [
    "Action", "Time", "ISIN", "Ticker", "Name", "No. of shares", "Price / share", "Currency (Price / share)", "Exchange rate",
    "Result (USD)", "Total (USD)", "Withholding tax", "Currency (Withholding tax)", "Charge amount (USD)",
    "Transaction fee (USD)", "Finra fee (USD)", "Notes", "ID", "Currency conversion fee (USD)",
]  # fmt: skip
SHARES_COLUMN = HEADER.index("No. of shares")
ISIN = {"AAPL": "US0378331005", "MSFT": "US5949181045"}
NAME = {"AAPL": "Apple", "MSFT": "Microsoft"}


def close_of(symbol: str, ago: int) -> Decimal:
    """A made-up daily close: AAPL climbs with a dip in the middle of the month, MSFT drifts down."""
    if symbol == "AAPL":
        return D("250") + D(40 - ago) * D("1.5") - D(max(0, 5 - abs(ago - 15))) * D("3")
    return D("480") - D(40 - ago) * D("0.75")


def day(ago: int) -> date:
    return timezone.now().date() - timedelta(days=ago)


def stamp(ago: int) -> str:
    return datetime.combine(day(ago), time(15, 0)).strftime("%Y-%m-%d %H:%M:%S")


def trade(action: str, ago: int, symbol: str, shares: str, ref: str) -> list[str]:
    price = close_of(symbol, ago)
    total = D(shares) * price if shares.replace(".", "").isdigit() else price
    return [action, stamp(ago), ISIN[symbol], symbol, NAME[symbol], shares, str(price), "USD", "1.00000", "", str(total), "", "", "", "", "", "", ref, ""]  # fmt: skip


def cash(action: str, ago: int, total: str, ref: str) -> list[str]:
    return [action, stamp(ago), "", "", "", "", "", "", "", "", total, "", "", total if action == "Deposit" else "", "", "", "Bank Transfer", ref, ""]  # fmt: skip


def write_export(path: Path) -> int:
    """A Trading 212 history export of a USD account over the last month; returns the line of its bad row.

    The bad row is a buy whose share count was typed with a decimal comma ("3,0") when the file was touched up in a
    spreadsheet: the preset reads numbers with a point, so it is a problem on that line, fixed in the wizard."""
    rows = [
        cash("Deposit", 24, "10000.00", "dep-1"),
        trade("Market buy", 23, "AAPL", "10", "EOF2001"),
        trade("Limit buy", 22, "MSFT", "5", "EOF2002"),
        trade("Market buy", 16, "MSFT", "3,0", "EOF2003"),
        trade("Market sell", 12, "AAPL", "4", "EOF2004"),
        cash("Deposit", 8, "2000.00", "dep-2"),
    ]
    with path.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out, lineterminator="\n").writerows([HEADER, *rows])
    return 1 + 1 + [r[SHARES_COLUMN] for r in rows].index("3,0")  # the header is line 1


def off_the_loop(work: Callable[[], T]) -> T:
    """Run ORM work in another thread: Playwright's sync API keeps an event loop running in this one, where Django
    refuses database calls. The thread's connection is closed before it ends."""

    def run() -> T:
        try:
            return work()
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result(timeout=30)


@pytest.fixture
def gus(demo: dict[str, int]) -> Any:
    """A fresh non-staff user (the demo's instruments and synthetic feed exist, no portfolio of his), and the daily
    closes of AAPL and MSFT over the last five weeks. In production those come from the feed worker (closed candles)
    and from `manage.py import_prices` (a vendor's file); written here as an imported file's rows (source "csv"), so
    the worker's own closes of yesterday do not replace them while the test runs."""
    for instrument in Instrument.objects.filter(symbol__in=["AAPL", "MSFT"]):
        DailyClose.objects.filter(instrument=instrument).delete()  # the demo's seeded history makes way for these
        DailyClose.objects.bulk_create(
            DailyClose(instrument=instrument, date=day(ago), close=close_of(instrument.symbol, ago), source="csv") for ago in range(1, 36)
        )
    return get_user_model().objects.create_user("gus", password="gus-pass-123")


def rebuilt(portfolio_id: int) -> bool:
    """The stored daily values are what the ledger and the closes give now (the rebuild after the last commit ran)."""
    portfolio = Portfolio.objects.get(pk=portfolio_id)
    expected = [(d.day, d.value) for d in daily_values_compute(portfolio=portfolio)]
    return bool(expected) and expected == list(DailyValue.objects.filter(portfolio=portfolio).order_by("date").values_list("date", "value"))


def month_of(portfolio_id: int) -> dict[str, Any]:
    return performance_for(portfolio=Portfolio.objects.get(pk=portfolio_id), range_name="1M")


# `gus` (and `demo`) before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_a_new_user_runs_their_own_money_from_import_to_returns_without_the_admin(
    gus: Any, browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    export = tmp_path / "from_2025-trading212.csv"
    bad_line = write_export(export)

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path / "logs") as base:
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        context.add_init_script(REPORT_VIOLATIONS)
        page = context.new_page()
        violations: list[str] = []
        errors: list[str] = []
        page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # 1. Signed in as a fresh non-staff user: the dashboard offers to create a portfolio.
        log_in(page, base, "gus", "gus-pass-123")
        expect(page.locator("#empty-state")).to_be_visible(timeout=10_000)
        expect(page.get_by_role("link", name="Admin")).to_have_count(0)
        shoot(page, SHOTS, "1-empty")

        # 2. A USD portfolio, through the pages.
        page.get_by_test_id("empty-create").click()
        page.fill("#id_name", "Trading 212")
        expect(page.locator("#id_base_currency")).to_have_value("USD")
        page.get_by_role("button", name="Create portfolio").click()
        expect(page).to_have_url(re.compile(r"/portfolios/\d+/transactions/new/$"))
        portfolio_id = int(re.findall(r"/portfolios/(\d+)/", page.url)[0])

        # 3. The import wizard, from the portfolio's transactions: the preset is detected, the one bad row listed by line.
        page.goto(f"{base}/portfolios/")
        page.get_by_role("link", name="Transactions").first.click()
        page.get_by_test_id("import-csv").click()
        page.set_input_files("#id_file", str(export))
        page.get_by_role("button", name="Upload and detect").click()
        expect(page.get_by_test_id("import-detected")).to_contain_text("It looks like a Trading 212 export.")
        expect(page.locator('input[name="format"][value="trading212"]')).to_be_checked()
        page.get_by_role("button", name="Check the file").click()
        expect(page.get_by_test_id("import-problems")).to_contain_text(f"line {bad_line}, No. of shares: '3,0' is not a number")
        expect(page.locator(".problem-list[role=alert] li")).to_have_count(1)
        expect(page.get_by_test_id("import-run")).to_have_count(0)
        shares = page.locator(f'input[name="c-{bad_line}-{SHARES_COLUMN}"]')
        expect(shares).to_have_value("3,0")
        expect(shares).to_have_attribute("aria-invalid", "true")
        shoot(page, SHOTS, "2-problem")

        # 4. Fixed in the wizard, checked again, imported all at once.
        shares.fill("3")
        page.get_by_test_id("import-recheck").click()
        expect(page.locator(".message-info")).to_contain_text("Fixed 1 row; checked again.")
        expect(page.get_by_test_id("import-problems")).to_have_count(0)
        holdings = page.get_by_test_id("import-holdings")
        expect(holdings).to_contain_text("AAPL")
        expect(holdings).to_contain_text("MSFT")
        shoot(page, SHOTS, "3-ready")
        page.get_by_test_id("import-run").click()
        expect(page.locator(".message-success")).to_contain_text("Imported Trading 212: 6 rows read")
        expect(page.locator('tr[data-kind="buy"]')).to_have_count(3)
        expect(page.locator('tr[data-kind="sell"]')).to_have_count(1)
        expect(page.locator('tr[data-kind="deposit"]')).to_have_count(2)

        # 5. The dashboard values the holdings live: the quantities imported, a market value that moves with the feed.
        page.get_by_role("link", name="Dashboard").click()
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        aapl, msft = page.locator('tr[data-symbol="AAPL"]'), page.locator('tr[data-symbol="MSFT"]')
        expect(aapl.locator('[data-field="quantity"]')).to_have_text("6", timeout=10_000)  # 10 bought, 4 sold
        expect(msft.locator('[data-field="quantity"]')).to_have_text("8")  # 5 and the 3 fixed in the wizard
        value = aapl.locator('[data-field="market_value"]')
        first = value.inner_text()
        assert "$" in first, first
        expect(value).not_to_have_text(first, timeout=15_000)
        shoot(page, SHOTS, "4-dashboard")

        # 6. Edit the AAPL buy on the transactions page: 12 shares, not 10. The dashboard follows.
        page.get_by_role("link", name="Portfolios & transactions").click()
        page.get_by_role("link", name="Transactions").first.click()
        buy = page.locator('tr[data-kind="buy"]', has_text="AAPL")
        expect(buy).to_have_count(1)
        buy.get_by_role("link", name="Edit").click()
        expect(page.locator("#id_quantity")).to_have_value("10")
        page.fill("#id_quantity", "12")
        shoot(page, SHOTS, "5-edit")
        page.get_by_role("button", name="Save changes").click()
        expect(page.locator(".message-success")).to_contain_text("with “Buy 12 AAPL @")
        page.get_by_role("link", name="Dashboard").click()
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        expect(aapl.locator('[data-field="quantity"]')).to_have_text("8", timeout=10_000)

        # 7. The daily values are rebuilt after each ledger commit (from the ledger and the closes): wait for them,
        # then work out the month's figures as the endpoint does.
        deadline = monotonic() + 15
        while not off_the_loop(lambda: rebuilt(portfolio_id)):
            assert monotonic() < deadline, "the daily values were not rebuilt after the edit within 15 s"
            page.wait_for_timeout(100)  # polls the condition, letting Playwright deliver the page's events meanwhile
        month = off_the_loop(lambda: month_of(portfolio_id))
        assert month["twr"] is not None and month["mwr"] is not None, month
        assert month["incomplete_days"] == 0, month  # every day priced by the closes given
        # The range opens at 0 the day before the first deposit, then every day from the deposit's to yesterday.
        assert [p["value"] for p in month["series"][:2]] == ["0", "10000"] and len(month["series"]) == 1 + 24, month["series"]
        assert ratio_text(month["twr"]) != ratio_text(month["mwr"])  # the second deposit tells them apart

        # 8. The value chart on 1M: the endpoint's time- and money-weighted returns, as the page formats them.
        page.get_by_role("button", name="1M", exact=True).click()
        expect(page.get_by_role("button", name="1M", exact=True)).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_test_id("perf-twr")).to_have_text(ratio_text(month["twr"]), timeout=10_000)
        expect(page.get_by_test_id("perf-mwr")).to_have_text(ratio_text(month["mwr"]))
        # The line leaves out the zero before the first day: the 24 days valued.
        expect(page.get_by_test_id("range-chart")).to_have_attribute("data-points", "24")
        expect(page.get_by_test_id("perf-note")).to_be_hidden()  # every day priced
        shoot(page, SHOTS, "6-month", redraw_ms=150)

        assert (violations, errors) == ([], [])
        context.close()
