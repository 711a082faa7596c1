"""In Chromium, under the Content-Security-Policy: the login page, the dashboard, an instrument page, the profile
page's new-token script and the admin all run without one violation, and the live updates still arrive (the
pages' WebSockets are allowed by connect-src 'self'). A script injected inline at the end is blocked and
reported, which shows the watch would have seen a violation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.conf import settings

from tests.e2e.conftest import BROWSER_TEST, log_in
from tests.servers import live_stack

pytestmark = BROWSER_TEST

# Injected by the browser itself (DevTools), which no page policy blocks: every violation also reaches the console.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline"} at ${event.documentURI}`);
});
"""


def wait_until(page: Any, condition: Any, what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(20)  # lets Playwright deliver the browser's events meanwhile


# `demo` before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_no_page_violates_the_policy_and_live_updates_still_arrive(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
        context.add_init_script(REPORT_VIOLATIONS)
        page = context.new_page()
        violations: list[str] = []
        errors: list[str] = []
        page.on("console", lambda msg: violations.append(msg.text) if "Content Security Policy" in msg.text or "CSP" in msg.text else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        response = page.goto(f"{base}/accounts/login/")
        assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
        expect(page.locator("#id_username")).to_be_visible()

        # The dashboard: its socket opens and the values move.
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        total = page.locator('[data-testid="total-value"][data-portfolio-id="combined"]')
        expect(total).to_be_visible(timeout=10_000)
        expect(total).not_to_have_text(total.inner_text(), timeout=15_000)

        # An instrument page: its market-API socket opens and the price moves.
        page.goto(f"{base}/market/BTC-USD/")
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        last_price = page.get_by_test_id("last-price")
        expect(last_price).not_to_have_text(last_price.inner_text(), timeout=15_000)

        # The profile page right after creating a token: its script (a file now) wires the Copy button.
        page.goto(f"{base}/profile/")
        page.fill("#id_name", "csp check")
        page.get_by_role("button", name="Create token").click()
        copy = page.get_by_test_id("copy-token")
        copy.click()
        expect(copy).to_have_text("Copied")

        # The ledger's record form: its script (a file) shows the inputs the chosen kind uses.
        page.goto(f"{base}/portfolios/{demo['usd']}/transactions/new/?kind=buy")
        expect(page.locator('[data-field="price"]')).to_be_visible()
        page.select_option("#id_kind", "deposit")
        expect(page.locator('[data-field="price"]')).to_be_hidden()

        # The admin, as staff: the index, a change list and an add form whose calendar shortcuts are admin JS.
        log_in(page, base, settings.ADMIN_USERNAME, settings.ADMIN_PASSWORD, next_path="/admin/login/?next=/admin/")
        expect(page.locator("#site-name")).to_be_visible()
        page.goto(f"{base}/admin/portfolio/transaction/")
        expect(page.locator("#result_list")).to_be_visible()
        page.goto(f"{base}/admin/portfolio/transaction/add/")
        page.click(".datetimeshortcuts a >> nth=0")  # "Today", written by DateTimeShortcuts.js
        expect(page.locator("#id_executed_at_0")).not_to_have_value("")

        assert violations == []
        assert errors == []

        # The control: an inline script is refused and reported, so a violation above would have been seen.
        page.evaluate(
            "() => { const s = document.createElement('script'); s.textContent = 'window.ranInline = true'; document.body.append(s); }"
        )
        wait_until(page, lambda: len(violations) >= 2, "the control's violation to be reported")
        assert page.evaluate("window.ranInline") is None
        assert any("CSP violation: script-src" in text for text in violations), violations
        context.close()
