"""In a real browser: the combined view names past figures it had to convert at today's rate for want of FX history.

Screenshots at 1440x900 and 390x844 go to test-artifacts/pastfx/."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from marketdata.models import DailyClose, Instrument
from portfolio import services
from tests.conftest import ARTIFACTS, record
from tests.e2e.conftest import BROWSER_TEST, log_in
from tests.servers import live_stack

pytestmark = BROWSER_TEST

SHOTS = ARTIFACTS / "pastfx"
SIZES = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}


@pytest.fixture
def frank(demo: dict[str, int]) -> dict[str, int]:
    """Two portfolios: dollars, and euros deposited on 1 February 2025, a month before the EUR/USD history starts."""
    user = get_user_model().objects.create_user("frank", password="frank-pass-123")
    dollars = services.portfolio_create(owner_id=user.pk, name="Dollars", base_currency="USD")  # sorts first: the view is in USD
    record(dollars, "deposit", "10000", currency="USD", executed_at=datetime(2025, 2, 1, 12, tzinfo=UTC))
    euros = services.portfolio_create(owner_id=user.pk, name="Euros", base_currency="EUR")
    record(euros, "deposit", "5000", currency="EUR", executed_at=datetime(2025, 2, 1, 12, tzinfo=UTC))
    record(euros, "fee", "10", currency="EUR", executed_at=datetime(2025, 3, 3, 12, tzinfo=UTC))
    DailyClose.objects.create(instrument=Instrument.objects.get(symbol="EUR/USD"), date=date(2025, 3, 1), close=Decimal(2), source="test")
    return {"dollars": dollars.pk, "euros": euros.pk}


# `frank` (and `demo`) before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_the_combined_view_names_past_figures_converted_at_todays_rate(
    frank: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        page = context.new_page()
        log_in(page, base, "frank", "frank-pass-123")

        note = page.get_by_test_id("past-fx-note")
        expect(note).to_be_visible(timeout=10_000)
        expect(note).to_have_text("Past figures of Euros converted at today's rate: no EUR/USD history on 2025-02-01.")
        # The fee of 3 March has its day's close: 10 EUR × 2.00. Net deposits: 10000 + 5000 EUR at today's 1.1542.
        expect(page.locator('[data-testid="fees"][data-portfolio-id="combined"]')).to_have_text("$20.00")
        expect(page.locator('[data-testid="net-deposits"][data-portfolio-id="combined"]')).to_have_text("$15,771.00")
        for size, viewport in SIZES.items():
            page.set_viewport_size(viewport)
            page.screenshot(path=str(SHOTS / f"dashboard-combined-{size}.png"), full_page=True)
        page.set_viewport_size(SIZES["desktop"])

        # A portfolio's own view is in its base currency: nothing converted, no note.
        page.click(f'[data-testid="view-tab"][data-view-id="{frank["euros"]}"]')
        expect(page.locator(f'[data-testid="net-deposits"][data-portfolio-id="{frank["euros"]}"]')).to_have_text("€5,000.00")
        expect(note).to_be_hidden()
        context.close()
