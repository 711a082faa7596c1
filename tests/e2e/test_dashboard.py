"""In a real browser: log in as the demo user, watch a EUR portfolio's total and charts move while
the worker runs, record a trade in the admin and see it appear on the open dashboard, log out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in
from tests.servers import live_stack

pytestmark = BROWSER_TEST


# `demo` before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_demo_user_watches_values_move_and_sees_an_admin_trade_arrive(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
        page = context.new_page()
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)

        # The dashboard opens on the combined view; the EUR portfolio is one tab away.
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        expect(page.locator('[data-testid="total-value"][data-portfolio-id="combined"]')).to_be_visible(timeout=10_000)
        page.click(f'[data-testid="view-tab"][data-view-id="{demo["eur"]}"]')
        total = page.locator(f'[data-testid="total-value"][data-portfolio-id="{demo["eur"]}"]')
        expect(total).to_contain_text("€", timeout=10_000)
        for symbol in ("AAPL", "BTC-USD", "SAP"):
            expect(page.locator(f'tr[data-symbol="{symbol}"]')).to_be_visible()
        expect(page.locator('tr[data-key="cash:USD"]')).to_be_visible()
        # US stocks and bitcoin are valued in EUR through EUR/USD, never "no rate" while the pair streams.
        expect(page.locator('tr[data-symbol="AAPL"]')).to_have_attribute("data-status", "ok")
        first = total.inner_text()
        expect(total).not_to_have_text(first, timeout=15_000)

        # Both charts render and move with the prices.
        line = page.locator('[data-testid="value-chart"]')
        expect(line.locator("canvas").first).to_be_visible(timeout=15_000)
        points = int(line.get_attribute("data-points") or 0)
        expect(line).not_to_have_attribute("data-points", str(points), timeout=15_000)
        slice_ = page.locator('[data-testid="allocation-chart"] path.alloc-slice').first
        expect(slice_).to_be_visible()
        shape = slice_.get_attribute("d")
        expect(slice_).not_to_have_attribute("d", shape or "", timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

        # Staff record a trade in the admin; the open dashboard shows the new holding without a reload.
        admin = context.browser.new_context(locale="en-US", timezone_id="UTC").new_page()
        log_in(admin, base, settings.ADMIN_USERNAME, settings.ADMIN_PASSWORD, next_path="/admin/login/?next=/admin/")
        admin.goto(f"{base}/admin/portfolio/transaction/add/?portfolio={demo['usd']}&instrument={demo['qqq']}&kind=buy")
        admin.fill("#id_quantity", "12")
        admin.fill("#id_price", "600")
        admin.fill("#id_fee", "1")
        admin.click("#executed_at_0 ~ .datetimeshortcuts a, .datetimeshortcuts a >> nth=0")  # "Today"
        admin.click(".datetimeshortcuts a >> nth=2")  # "Now"
        admin.click("input[name=_save]")
        expect(admin.locator(".messagelist .success")).to_be_visible()
        page.click(f'[data-testid="view-tab"][data-view-id="{demo["usd"]}"]')
        expect(page.locator('tr[data-symbol="QQQ"]')).to_be_visible(timeout=5_000)
        page.screenshot(path=str(ARTIFACTS / "dashboard-after-admin-trade.png"), full_page=True)

        # Log out: back on the login page, and the dashboard is closed to us.
        page.get_by_role("button", name="Log out").click()
        expect(page.locator("#id_username")).to_be_visible()
        page.goto(f"{base}/")
        expect(page).to_have_url(f"{base}/accounts/login/?next=/")
        context.close()
