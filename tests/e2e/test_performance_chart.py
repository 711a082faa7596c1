"""In a real browser: the value chart's ranges. A user whose portfolio has two months of daily values switches the
chart to 1M and reads the time- and money-weighted returns the endpoint computes, adds SPY as a benchmark and sees
its line, and finds both remembered after a reload; a portfolio without history says what to do; the combined tab
explains that ranges are per portfolio. And the live line starts at the left edge of its axis (issue 15).

Screenshots at 1440x900 and 390x844 go to test-artifacts/performance/ (docs/screenshots/performance-*.png were
taken from there)."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from marketdata.models import DailyClose, Instrument
from portfolio import services
from portfolio.performance import daily_values_rebuild, performance_for
from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.e2e.pages import SIZES, ratio_text, shoot
from tests.e2e.test_csp import REPORT_VIOLATIONS
from tests.servers import live_stack

pytestmark = BROWSER_TEST

SHOTS = ARTIFACTS / "performance"
D = Decimal


def close_of(symbol: str, ago: int) -> Decimal:
    """A made-up daily close: AAPL climbs, falls back for ten days (a drawdown), climbs again; SPY climbs steadily."""
    if symbol == "SPY":
        return D("500") + D(70 - ago) * D("1.25")
    dip = max(0, min(ago - 25, 35 - ago))  # 0 outside days 35..25 ago, down to 5 in the middle
    return D("200") + D(70 - ago) * D("0.8") - D(dip) * D("4.5")


def at(ago: int) -> datetime:
    return datetime.combine(timezone.now().date() - timedelta(days=ago), time(15, 0), tzinfo=timezone.get_fixed_timezone(0))


@pytest.fixture
def pat(demo: dict[str, int]) -> dict[str, Any]:
    """A non-staff user with 'Savings' (two months of ledger and daily closes, its daily values rebuilt) and 'Fresh'
    (a deposit today: no daily history yet)."""
    user = get_user_model().objects.create_user("pat", password="pat-pass-123")
    instruments = {i.symbol: i for i in Instrument.objects.filter(symbol__in=["AAPL", "SPY"])}
    for symbol, instrument in instruments.items():
        DailyClose.objects.filter(instrument=instrument).delete()  # the demo's seeded history makes way for these
        DailyClose.objects.bulk_create(
            DailyClose(instrument=instrument, date=timezone.now().date() - timedelta(days=ago), close=close_of(symbol, ago), source="csv")
            for ago in range(1, 71)
        )
    savings = services.portfolio_create(owner_id=user.pk, name="Savings")
    for ago, kind, quantity, symbol in (
        (62, "deposit", "10000", None),
        (61, "buy", "30", "AAPL"),
        (40, "buy", "5", "SPY"),
        (20, "deposit", "2500", None),
        (19, "buy", "10", "AAPL"),
        (12, "withdrawal", "800", None),
    ):
        instrument = instruments[symbol] if symbol else None
        price = close_of(symbol, ago) if symbol else D(1)
        draft = services.Draft(kind=kind, quantity=D(quantity), instrument=instrument, price=price, executed_at=at(ago))
        services.transaction_record(portfolio=savings, draft=draft)
    assert daily_values_rebuild(portfolio=savings).days >= 60
    fresh = services.portfolio_create(owner_id=user.pk, name="Fresh")
    services.transaction_record(
        portfolio=fresh, draft=services.Draft(kind="deposit", quantity=D("100"), price=D(1), executed_at=timezone.now())
    )
    # What the endpoint computes for 1M with SPY, worked out before the browser's event loop starts in this thread.
    month = performance_for(portfolio=savings, range_name="1M", benchmark="SPY")
    return {"savings": savings, "fresh": fresh, "month": month}


def test_a_user_reads_the_ranges_returns_and_a_benchmark_on_the_value_chart(
    pat: dict[str, Any], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    savings, fresh, month = pat["savings"], pat["fresh"], pat["month"]
    assert month["twr"] is not None and month["mwr"] is not None and month["max_drawdown"]["depth"] > 0
    assert month["twr"] != month["mwr"]  # the flows inside the month tell them apart

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base:
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        context.add_init_script(REPORT_VIOLATIONS)
        page = context.new_page()
        violations: list[str] = []
        errors: list[str] = []
        page.on("console", lambda msg: violations.append(msg.text) if "CSP" in msg.text or "Content Security Policy" in msg.text else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(page, base, "pat", "pat-pass-123")
        expect(page.get_by_test_id("view-panel")).to_be_visible(timeout=15_000)

        # The combined tab has the live line only, and says why.
        page.click('[data-testid="view-tab"][data-view-id="combined"]')
        expect(page.get_by_test_id("ranges")).to_be_hidden()
        expect(page.get_by_test_id("perf-hint")).to_have_text(
            "Ranges, returns and a benchmark are per portfolio: open a portfolio's tab to see them."
        )

        # A portfolio opens on 1D, the live line.
        page.click(f'[data-testid="view-tab"][data-view-id="{savings.pk}"]')
        one_day = page.get_by_role("button", name="1D", exact=True)
        expect(one_day).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_test_id("value-chart")).to_be_visible()
        expect(page.get_by_test_id("range-chart")).to_be_hidden()

        # 1M: the endpoint's figures, to the basis point.
        page.get_by_role("button", name="1M", exact=True).click()
        expect(page.get_by_role("button", name="1M", exact=True)).to_have_attribute("aria-pressed", "true")
        expect(one_day).to_have_attribute("aria-pressed", "false")
        expect(page.get_by_test_id("perf-twr")).to_have_text(ratio_text(month["twr"]), timeout=10_000)
        expect(page.get_by_test_id("perf-mwr")).to_have_text(ratio_text(month["mwr"]))
        expect(page.get_by_test_id("perf-drawdown")).to_have_text(ratio_text(-month["max_drawdown"]["depth"]))
        peak = datetime.fromisoformat(month["max_drawdown"]["peak"]).strftime("%b %-d, %Y")
        expect(page.get_by_test_id("perf-drawdown")).to_have_attribute(
            "title",
            f"From the high on {peak} to the low on " + (datetime.fromisoformat(month["max_drawdown"]["trough"]).strftime("%b %-d, %Y")),
        )
        expect(page.get_by_test_id("perf-note")).to_be_hidden()  # every day priced
        chart = page.get_by_test_id("range-chart")
        expect(chart).to_have_attribute("data-points", str(len(month["series"])))
        expect(chart.locator(".chart-title")).to_have_text("Value")

        shoot(page, SHOTS, "performance-1m", redraw_ms=150)

        # A benchmark: the chart turns to % since the range start, with SPY's line beside the portfolio's.
        page.select_option("#perf-benchmark", "SPY")
        expect(chart).to_have_attribute("data-compare-points", str(len(month["benchmark"]["series"])), timeout=10_000)
        assert len(month["benchmark"]["series"]) == len(month["series"])
        expect(chart.locator(".chart-title")).to_have_text("Return vs SPY")
        expect(page.get_by_test_id("perf-benchmark-return")).to_have_text(ratio_text(month["benchmark"]["return"]))
        expect(page.get_by_test_id("perf-legend")).to_contain_text("SPY (close, USD)")
        expect(page.get_by_test_id("perf-twr")).to_have_text(ratio_text(month["twr"]))
        chart.locator(".chart-canvas").hover(position={"x": 300, "y": 100})
        expect(chart.locator(".chart-tooltip-compare")).to_contain_text("SPY")
        page.mouse.move(0, 0)
        shoot(page, SHOTS, "performance-1m-benchmark", redraw_ms=150)

        # Keyboard: arrows move along the ranges.
        page.get_by_role("button", name="1M", exact=True).focus()
        page.keyboard.press("ArrowRight")
        expect(page.get_by_role("button", name="YTD", exact=True)).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_role("button", name="YTD", exact=True)).to_be_focused()
        page.keyboard.press("ArrowLeft")
        expect(page.get_by_role("button", name="1M", exact=True)).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_test_id("perf-twr")).to_have_text(ratio_text(month["twr"]))

        # The endpoint failing: the plot and a note say so, and Retry loads the range once the server answers.
        page.route("**/performance/?range=1Y*", lambda route: route.fulfill(status=500, body="Server Error"))
        page.get_by_role("button", name="1Y", exact=True).click()
        expect(page.locator(".perf-problem")).to_contain_text("Couldn't load this range (the server answered 500).")
        expect(page.get_by_test_id("range-chart").locator(".chart-empty")).to_have_attribute("data-tone", "error")
        expect(page.get_by_test_id("perf-twr")).to_be_hidden()
        page.unroute("**/performance/?range=1Y*")
        page.get_by_test_id("perf-retry").click()
        expect(page.locator(".perf-problem")).to_be_hidden(timeout=10_000)
        expect(page.get_by_test_id("perf-twr")).to_be_visible()
        page.get_by_role("button", name="1M", exact=True).click()
        expect(page.get_by_test_id("perf-twr")).to_have_text(ratio_text(month["twr"]))

        # A portfolio without daily history says when it will have one; the other tab keeps its own range.
        page.click(f'[data-testid="view-tab"][data-view-id="{fresh.pk}"]')
        expect(page.get_by_role("button", name="1D", exact=True)).to_have_attribute("aria-pressed", "true")
        page.get_by_role("button", name="1M", exact=True).click()
        expect(page.get_by_test_id("range-chart").locator(".chart-empty")).to_contain_text(
            "No daily history yet: it builds up from tonight", timeout=10_000
        )
        expect(page.get_by_test_id("perf-twr")).to_be_hidden()  # no dashes for figures that cannot exist yet
        shoot(page, SHOTS, "performance-empty", redraw_ms=150)

        # Reloaded: each tab's range and benchmark are remembered.
        page.reload()
        page.click(f'[data-testid="view-tab"][data-view-id="{savings.pk}"]')
        expect(page.get_by_role("button", name="1M", exact=True)).to_have_attribute("aria-pressed", "true", timeout=15_000)
        expect(page.locator("#perf-benchmark")).to_have_value("SPY")
        expect(page.get_by_test_id("range-chart")).to_have_attribute("data-compare-points", str(len(month["series"])), timeout=10_000)
        assert (violations, errors) == ([], [])
        context.close()


def test_the_live_value_line_starts_at_the_left_edge_of_its_axis(
    pat: dict[str, Any], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    # Issue 15: "the value chart's axis starts 12 minutes before its first point" (a young series was padded to 15 min).
    from playwright.sync_api import expect

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base:
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        page = context.new_page()
        log_in(page, base, "pat", "pat-pass-123")
        page.goto(f"{base}/")
        page.click(f'[data-testid="view-tab"][data-view-id="{pat["savings"].pk}"]', timeout=15_000)
        chart = page.get_by_test_id("value-chart")
        # One point, or three and more: with two, the library fits them a quarter in from each edge (value-chart.js).
        points = "Number(document.querySelector('[data-testid=value-chart]').dataset.points)"
        wait_for_js(page, f"() => {points} >= 1 && {points} !== 2", timeout=90_000)
        # The first point is drawn at the plot's left edge, not minutes to the right of it: to the pixel once the line
        # has three points, within half a narrow slot (under 10 px of a 680 px plot) while it has one.
        expect(chart).to_have_attribute("data-first-x", re.compile(r"^(-1|[0-9])$"))
        context.close()
