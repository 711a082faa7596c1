"""In a real browser, without the admin: a fresh non-staff user creates a portfolio, imports a Trading 212 export with
one row the preset cannot map, fixes that row in the wizard, imports, and sees the holdings valued on the dashboard.

Screenshots of every step at 1440x900 and 390x844 go to test-artifacts/import/ (the ones in docs/screenshots/ were
taken from there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in
from tests.e2e.pages import SIZES, shoot
from tests.servers import live_stack

pytestmark = BROWSER_TEST

SHOTS = ARTIFACTS / "import"
SAMPLE = Path(__file__).resolve().parent.parent / "portfolio" / "brokers" / "samples" / "trading212.csv"


@pytest.fixture
def frank(demo: dict[str, int]) -> Any:
    """A fresh non-staff user, with the demo's instruments and feed in the database but no portfolio."""
    return get_user_model().objects.create_user("frank", password="frank-pass-123")


# `frank` (and `demo`) before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_a_new_user_imports_a_broker_export_fixing_its_bad_row_in_the_wizard(
    frank: Any, browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base:
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        page = context.new_page()
        log_in(page, base, "frank", "frank-pass-123")

        # A EUR portfolio, through the pages (the Trading 212 account is in EUR).
        page.get_by_test_id("empty-create").click()
        page.fill("#id_name", "Trading 212")
        page.fill("#id_base_currency", "EUR")
        page.get_by_role("button", name="Create portfolio").click()
        page.goto(f"{base}/portfolios/")
        page.get_by_role("link", name="Transactions").first.click()
        page.get_by_test_id("import-csv").click()

        # 1. Upload.
        expect(page.get_by_test_id("import-upload")).to_be_visible()
        shoot(page, SHOTS, "import-upload")
        page.set_input_files("#id_file", str(SAMPLE))
        page.get_by_role("button", name="Upload and detect").click()

        # 2. The preset is detected and chosen; the column mapping stays out of the way.
        expect(page.get_by_test_id("import-detected")).to_contain_text("It looks like a Trading 212 export.")
        expect(page.locator('input[name="format"][value="trading212"]')).to_be_checked()
        expect(page.get_by_test_id("import-mapping")).to_be_hidden()
        shoot(page, SHOTS, "import-format")
        page.get_by_label("Map the columns myself").check()
        expect(page.get_by_test_id("import-mapping")).to_be_visible()
        shoot(page, SHOTS, "import-mapping")
        page.locator('input[name="format"][value="trading212"]').check()
        page.get_by_role("button", name="Check the file").click()

        # 3. Every problem at once, by the line of the user's file; the bad row offered for fixing.
        problems = page.get_by_test_id("import-problems")
        expect(problems).to_contain_text("line 10, Action: 'Stock split open' is not an action this preset maps")
        expect(page.locator(".problem-list[role=alert] li")).to_have_count(1)
        expect(page.get_by_test_id("import-run")).to_have_count(0)
        action = page.locator('input[name="c-10-0"]')
        expect(action).to_have_value("Stock split open")
        expect(action).to_have_attribute("aria-invalid", "true")
        shoot(page, SHOTS, "import-problems")

        # 4. Fixed in the browser: the row is a buy of 6 more AAPL. Checked again, without uploading again.
        action.fill("Market buy")
        page.get_by_test_id("import-recheck").click()
        expect(page.locator(".message-info")).to_contain_text("Fixed 1 row; checked again.")
        expect(page.get_by_test_id("import-problems")).to_have_count(0)
        holdings = page.get_by_test_id("import-holdings")
        expect(holdings).to_contain_text("AAPL")
        expect(holdings).to_contain_text("12")  # 10 bought, 4 sold, 6 bought on the fixed line
        expect(holdings).to_contain_text("SAP")
        expect(page.get_by_test_id("import-rows")).to_contain_text("Trading 212 Market buy")
        shoot(page, SHOTS, "import-ready")
        page.get_by_test_id("import-run").click()

        # Imported, all at once: the transactions page says so.
        expect(page.locator(".message-success")).to_contain_text("Imported Trading 212: 9 rows read, 1 skipped")
        expect(page.locator('tr[data-kind="buy"]')).to_have_count(3)
        shoot(page, SHOTS, "import-done")

        # The dashboard values the holdings live.
        page.get_by_role("link", name="Dashboard").click()
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        row = page.locator('tr[data-symbol="AAPL"]')
        expect(row).to_be_visible(timeout=10_000)
        expect(row.locator('[data-field="quantity"]')).to_have_text("12")
        expect(page.locator('tr[data-symbol="SAP"] [data-field="quantity"]')).to_have_text("5")
        value = row.locator('[data-field="market_value"]')
        first = value.inner_text()
        expect(value).not_to_have_text(first, timeout=15_000)
        shoot(page, SHOTS, "import-dashboard")
        context.close()
