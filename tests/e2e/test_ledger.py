"""In a real browser, without the admin: a fresh non-staff user creates a portfolio, records a deposit and a buy
(the form filling the instrument's last price), edits the buy, and sees the holding valued live on the dashboard.

Screenshots of every ledger page at 1440x900 and 390x844 go to test-artifacts/ledger/ (the ones in
docs/screenshots/ were taken from there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.e2e.pages import SIZES, shoot
from tests.servers import live_stack

pytestmark = BROWSER_TEST

SHOTS = ARTIFACTS / "ledger"


@pytest.fixture
def erin(demo: dict[str, int]) -> Any:
    """A fresh non-staff user, with the demo's instruments and feed in the database but no portfolio."""
    return get_user_model().objects.create_user("erin", password="erin-pass-123")


# `erin` (and `demo`) before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_a_new_user_builds_a_portfolio_without_the_admin_and_sees_it_valued_live(
    erin: Any, browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base:
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        page = context.new_page()
        log_in(page, base, "erin", "erin-pass-123")

        # The dashboard's empty state leads to the new portfolio form.
        expect(page.locator("#empty-state")).to_be_visible(timeout=10_000)
        shoot(page, SHOTS, "dashboard-empty")
        page.get_by_test_id("empty-create").click()
        page.fill("#id_name", "My money")
        expect(page.locator("#id_base_currency")).to_have_value("USD")
        expect(page.locator("#id_time_zone")).to_have_value("UTC")
        shoot(page, SHOTS, "portfolio-create")
        page.get_by_role("button", name="Create portfolio").click()

        # A new portfolio starts with a deposit: no instrument, no price to fill.
        expect(page.locator("#id_kind")).to_have_value("deposit")
        expect(page.locator('[data-field="price"]')).to_be_hidden()
        expect(page.locator('[data-field="instrument"]')).to_be_hidden()
        expect(page.locator("[data-quantity-label]")).to_have_text("Amount")
        page.fill("#id_quantity", "10000")
        page.get_by_role("button", name="Record", exact=True).click()
        expect(page.locator('tr[data-kind="deposit"]')).to_be_visible()

        # A buy: picking the instrument fills its last price (from the stored quote) and its currency.
        page.get_by_test_id("record-transaction").click()
        expect(page.locator("#id_kind")).to_have_value("buy")
        expect(page.locator('[data-field="price"]')).to_be_visible()
        page.select_option("#id_instrument", label="AAPL · Apple Inc.")
        wait_for_js(page, "() => document.getElementById('id_price').value !== ''")
        last = float(page.input_value("#id_price"))
        assert 100 < last < 1000, last  # AAPL's demo price, moved by the feed
        assert page.get_attribute("#id_currency", "placeholder") == "USD"
        page.fill("#id_quantity", "10")
        page.fill("#id_price", "250")
        shoot(page, SHOTS, "transaction-record")
        page.get_by_role("button", name="Record", exact=True).click()
        buy = page.locator('tr[data-kind="buy"]')
        expect(buy).to_contain_text("AAPL")
        expect(buy).to_contain_text("2,500.00 USD")

        # Edit the buy: 12 shares instead of 10. The ledger still has one buy, now of 12.
        buy.get_by_role("link", name="Edit").click()
        expect(page.locator("#id_quantity")).to_have_value("10")
        expect(page.locator("#id_price")).to_have_value("250")  # an edit keeps the recorded price
        shoot(page, SHOTS, "transaction-edit")
        page.fill("#id_quantity", "12")
        page.get_by_role("button", name="Save changes").click()
        expect(page.locator(".message-success")).to_contain_text("Replaced “Buy 10 AAPL @ 250” with “Buy 12 AAPL @ 250”")
        expect(page.locator('tr[data-kind="buy"]')).to_have_count(1)
        expect(page.locator('tr[data-kind="buy"]')).to_contain_text("3,000.00 USD")
        shoot(page, SHOTS, "transactions")
        page.locator('tr[data-kind="deposit"]').get_by_role("link", name="Delete").click()
        shoot(page, SHOTS, "transaction-delete")
        page.goto(f"{base}/portfolios/")
        shoot(page, SHOTS, "portfolios")
        page.get_by_role("link", name="Delete My money").click()
        expect(page.get_by_test_id("lost")).to_contain_text("2 transactions (its whole ledger)")
        shoot(page, SHOTS, "portfolio-delete")

        # The dashboard values the holding live: 12 AAPL, a market value that moves with the feed.
        page.get_by_role("link", name="Dashboard").click()
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        row = page.locator('tr[data-symbol="AAPL"]')
        expect(row).to_be_visible(timeout=10_000)
        expect(row).to_have_attribute("data-status", "ok")
        expect(row.locator('[data-field="quantity"]')).to_have_text("12")
        value = row.locator('[data-field="market_value"]')
        first = value.inner_text()
        assert "$" in first, first
        expect(value).not_to_have_text(first, timeout=15_000)
        shoot(page, SHOTS, "dashboard")
        context.close()
