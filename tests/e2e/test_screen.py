"""Issue 15, part 2, in Chromium: the pages on a 390 px phone (holdings as cards, nothing scrolls sideways),
the dark theme and its toggle, flashes only on the cell that changed, sortable holdings, the favicon and
the skip link. No feed runs here: the pages show the seeded quotes, and the few price changes a test
needs are handed to the dashboard as the socket would (`livefolioDashboard.applyFrame`), so exactly one
cell changes at a time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.conf import settings

from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.servers import live_stack

pytestmark = BROWSER_TEST

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}
HOLDINGS = "#portfolios [data-testid=holdings]"


def open_dashboard(browser: Any, base: str, portfolio_id: int, **context: Any) -> Any:
    page = browser.new_context(locale="en-US", timezone_id="UTC", **context).new_page()
    log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
    page.locator(f'[data-testid="view-tab"][data-view-id="{portfolio_id}"]').click()
    wait_for_js(page, "(id) => window.livefolioDashboard?.selectedView === String(id)", arg=portfolio_id, timeout=15_000)
    wait_for_js(page, "document.querySelectorAll('#portfolios tr[data-kind=holding]').length > 0", timeout=10_000)
    return page


def page_overflow(page: Any) -> int:
    """How far the page is wider than the window (0: no sideways scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth"))


def row(page: Any, portfolio_id: int, symbol: str) -> dict[str, Any]:
    """A holding's row as the dashboard holds it (the server's decimal strings)."""
    found: dict[str, Any] = page.evaluate(
        "([id, symbol]) => [...window.livefolioDashboard.views.get(String(id)).rows.values()].find((r) => r.symbol === symbol)",
        [portfolio_id, symbol],
    )
    return found


def push_row(page: Any, portfolio_id: int, patch: dict[str, Any]) -> None:
    """One update frame for one row, as the socket delivers it."""
    page.evaluate(
        "([id, patch]) => window.livefolioDashboard.applyFrame({type: 'update', portfolios: [{id, rows: [patch]}]})",
        [portfolio_id, patch],
    )


def flashing(page: Any) -> list[str]:
    """Every element marked as changed: 'symbol/field:direction'."""
    marked: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('.flash-up, .flash-down')].map((node) =>
             `${node.closest('tr')?.dataset.symbol ?? node.dataset.testid}/${node.dataset.field ?? ''}:` +
             (node.classList.contains('flash-up') ? 'up' : 'down'))"""
    )
    return marked


def plus(value: str, delta: str) -> str:
    from decimal import Decimal

    return str(Decimal(value) + Decimal(delta))


# `demo` before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_on_a_phone_every_holding_shows_value_day_change_and_pnl_and_no_page_scrolls_sideways(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = open_dashboard(browser, base, demo["eur"], viewport=PHONE)
        holdings = page.locator("#portfolios tr[data-kind=holding]")
        assert holdings.count() >= 3
        for index in range(holdings.count()):
            card = holdings.nth(index)
            for field in ("instrument", "market_value", "day_change", "unrealised_pnl", "quantity", "price"):
                cell = card.locator(f'[data-field="{field}"]')
                expect(cell).to_be_visible()
                box = cell.bounding_box()
                assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (index, field, box)
            # The figures are labelled on the card (the header row is off screen there).
            expect(card.locator('[data-field="day_change"]')).to_have_attribute("data-label", "Day change")
            expect(card.locator('[data-field="unrealised_pnl"]')).to_have_attribute("data-label", "P&L")
        assert page_overflow(page) == 0

        # The tabs scroll sideways and say so, rather than clipping a name.
        tabs = page.locator(".view-tabs")
        assert page.evaluate("(() => { const t = document.querySelector('.view-tabs'); return t.scrollWidth > t.clientWidth; })()")
        # The EUR tab (chosen above) is scrolled into view; the edge with tabs behind it fades.
        faded = page.evaluate("(() => { const t = document.querySelector('.view-tabs').dataset; return [t.moreLeft, t.moreRight]; })()")
        assert "true" in faded, faded
        assert tabs.evaluate("(node) => getComputedStyle(node).maskImage") != "none"
        eur_tab = page.locator(f'[data-testid="view-tab"][data-view-id="{demo["eur"]}"]').bounding_box()
        assert eur_tab is not None and eur_tab["x"] + eur_tab["width"] <= PHONE["width"]
        expect(tabs).to_have_css("scroll-snap-type", re.compile(r"^x"))

        # The instrument page's figures wrap: bid and ask are shown whole.
        page.goto(f"{base}/market/BTC-USD/")
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        for testid in ("bid", "ask", "last-price"):
            clipped = page.get_by_test_id(testid).evaluate("(node) => node.scrollWidth > node.clientWidth")
            assert clipped is False, testid
        assert page_overflow(page) == 0

        # Every other page at 390 px: nothing wider than the phone.
        for path in (
            "/portfolios/",
            f"/portfolios/{demo['usd']}/transactions/",
            f"/portfolios/{demo['usd']}/transactions/new/?kind=buy",
            f"/portfolios/{demo['usd']}/import/",
            "/profile/",
        ):
            page.goto(f"{base}{path}")
            assert page_overflow(page) == 0, path
        page.get_by_role("button", name="Log out").click()
        expect(page.locator("#id_username")).to_be_visible()
        assert page_overflow(page) == 0, "login"
        page.context.close()


def test_the_dark_theme_follows_the_system_and_the_toggle_overrides_it_and_is_remembered(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        context = browser.new_context(viewport=DESKTOP, color_scheme="dark", locale="en-US", timezone_id="UTC")
        # Counts the theme-change events charts listen to (DevTools injects this; the CSP does not apply).
        context.add_init_script("window.themeChanges = 0; document.addEventListener('livefolio:themechange', () => window.themeChanges++);")
        page = context.new_page()
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        html = page.locator("html")
        body_bg = "getComputedStyle(document.body).backgroundColor"
        expect(html).to_have_attribute("data-theme", "dark")
        expect(html).to_have_attribute("data-theme-choice", "auto")
        assert page.evaluate(body_bg) == "rgb(13, 17, 23)"
        assert page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--chart-up').trim()") == "#3fcf8e"
        # The charts drawn on that first load have the dark theme's colours too (they once read them off a chart box
        # not yet in the page, got nothing, and drew the light defaults on the dark page: near-white grid lines).
        page.goto(f"{base}/market/BTC-USD/")
        wait_for_js(page, "!!window.livefolioInstrument?.chart?.chart")
        grid = "window.livefolioInstrument.chart.chart.options().grid.horzLines.color"
        assert page.evaluate(grid) == "rgba(36, 44, 55, 1)"  # the dark --grid, #242c37
        page.goto(f"{base}/")

        # Light, from the header's control: applied at once, announced once, remembered over a reload.
        page.get_by_test_id("prefs-toggle").click()
        page.get_by_test_id("theme-light").check()
        expect(html).to_have_attribute("data-theme", "light")
        assert page.evaluate(body_bg) == "rgb(245, 247, 250)"
        assert page.evaluate("window.themeChanges") == 1
        page.reload()
        expect(html).to_have_attribute("data-theme", "light")
        expect(html).to_have_attribute("data-theme-choice", "light")
        assert page.evaluate("window.themeChanges") == 0  # applied before the first paint: nothing to change
        page.get_by_test_id("prefs-toggle").click()
        expect(page.get_by_test_id("theme-light")).to_be_checked()

        # Auto again: the system's dark.
        page.get_by_test_id("theme-auto").check()
        expect(html).to_have_attribute("data-theme", "dark")
        # And a system switch while on Auto is followed and announced.
        page.emulate_media(color_scheme="light")
        expect(html).to_have_attribute("data-theme", "light")
        assert page.evaluate("window.themeChanges") == 2
        context.close()


def test_a_price_change_flashes_only_its_own_cell_by_its_direction_and_nothing_with_flashing_off(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    usd = demo["usd"]
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = open_dashboard(browser, base, usd, viewport=DESKTOP, reduced_motion="no-preference")
        assert flashing(page) == []

        aapl = row(page, usd, "AAPL")
        push_row(page, usd, {"key": aapl["key"], "market_value": plus(aapl["market_value"], "5.00")})
        assert flashing(page) == ["AAPL/market_value:up"]

        msft = row(page, usd, "MSFT")
        push_row(page, usd, {"key": msft["key"], "market_value": plus(msft["market_value"], "-5.00")})
        assert sorted(flashing(page)) == ["AAPL/market_value:up", "MSFT/market_value:down"]

        # A move smaller than the last digit shown changes nothing on screen, so nothing flashes.
        nvda = row(page, usd, "NVDA")
        push_row(page, usd, {"key": nvda["key"], "market_value": plus(nvda["market_value"], "0.001")})
        assert "NVDA" not in " ".join(flashing(page))
        # The mark is a faint tint: the text keeps its own colour (its sign's, or the plain text's).
        value_cell = page.locator('tr[data-symbol="AAPL"] [data-field="market_value"]')
        tint = value_cell.evaluate("(node) => getComputedStyle(node).backgroundColor")
        assert tint.startswith("rgba(") and float(tint.rstrip(")").split(",")[-1]) < 0.2, tint

        # Flashing off, from the header: remembered, and no cell is marked.
        page.get_by_test_id("prefs-toggle").click()
        page.get_by_test_id("flash-setting").uncheck()
        expect(page.locator("html")).to_have_attribute("data-flash", "off")
        wait_for_js(page, "document.querySelectorAll('.flash-up, .flash-down').length === 0", timeout=5_000)
        spy = row(page, usd, "SPY")
        spy_cell = page.locator('tr[data-symbol="SPY"] [data-field="market_value"]')
        spy_before = spy_cell.inner_text()
        push_row(page, usd, {"key": spy["key"], "market_value": plus(spy["market_value"], "7.00")})
        expect(spy_cell).not_to_have_text(spy_before)
        assert flashing(page) == []
        assert page.evaluate("localStorage.getItem('livefolio.flash')") == "off"
        page.context.close()


def test_reduced_motion_means_no_flashes(demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path) -> None:
    usd = demo["usd"]
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = open_dashboard(browser, base, usd, viewport=DESKTOP, reduced_motion="reduce")
        aapl = row(page, usd, "AAPL")
        push_row(page, usd, {"key": aapl["key"], "market_value": plus(aapl["market_value"], "5.00")})
        assert page.locator('tr[data-symbol="AAPL"] [data-field="market_value"]').inner_text() != ""
        assert flashing(page) == []
        page.context.close()


def test_holdings_sort_by_the_numbers_is_remembered_and_stays_put_while_prices_move(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    usd = demo["usd"]
    order = "[...document.querySelectorAll('#portfolios tr[data-kind=holding]')].map((tr) => tr.dataset.symbol)"
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = open_dashboard(browser, base, usd, viewport=DESKTOP)
        by_value = sorted(
            page.evaluate(
                "(id) => [...window.livefolioDashboard.views.get(String(id)).rows.values()].filter((r) => r.kind !== 'cash')", usd
            ),
            key=lambda r: float(r["market_value"]),
            reverse=True,
        )
        expected = [r["symbol"] for r in by_value]

        value_head = page.locator(f"{HOLDINGS} thead th.col-market_value")
        page.get_by_test_id("sort-market_value").click()
        expect(value_head).to_have_attribute("aria-sort", "descending")
        assert page.evaluate(order) == expected
        assert page.locator(f"{HOLDINGS} thead th[aria-sort]").count() == 1
        page.get_by_test_id("sort-market_value").click()
        expect(value_head).to_have_attribute("aria-sort", "ascending")
        assert page.evaluate(order) == expected[::-1]
        # Cash stays below the positions.
        assert page.evaluate("document.querySelector('#portfolios tbody tr:last-child').dataset.kind") == "cash"

        # A tick that would reorder the rows does not move them (the order is worked out calmly, sort.js).
        smallest = row(page, usd, expected[-1])
        push_row(page, usd, {"key": smallest["key"], "market_value": plus(smallest["market_value"], "1000000")})
        expect(page.locator(f'tr[data-symbol="{expected[-1]}"] [data-field="market_value"]')).to_contain_text("1,0")
        assert page.evaluate(order) == expected[::-1]

        # Remembered: after a reload the table opens sorted, on the server's fresh numbers.
        page.reload()
        page.locator(f'[data-testid="view-tab"][data-view-id="{usd}"]').click()
        wait_for_js(page, f"document.querySelectorAll('#portfolios tr[data-kind=holding]').length === {len(expected)}", timeout=15_000)
        expect(value_head).to_have_attribute("aria-sort", "ascending")
        assert page.evaluate(order) == expected[::-1]

        # Sorting by a text column; a third click goes back to the server's order.
        page.get_by_test_id("sort-instrument").click()
        expect(page.locator(f"{HOLDINGS} thead th.col-instrument")).to_have_attribute("aria-sort", "ascending")
        assert page.evaluate(order) == sorted(expected)
        page.get_by_test_id("sort-instrument").click()
        page.get_by_test_id("sort-instrument").click()
        assert page.locator(f"{HOLDINGS} thead th[aria-sort]").count() == 0
        assert page.evaluate("localStorage.getItem('livefolio.holdingsSort')") is None
        page.context.close()


def test_the_favicon_answers_and_the_skip_link_moves_focus_to_the_content(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = browser.new_context(viewport=DESKTOP, locale="en-US").new_page()
        # A page with no autofocused field (the login form focuses its username): Tab starts at the top.
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD, next_path="/portfolios/")
        expect(page.locator("h1")).to_have_text("Portfolios")
        icon = page.request.get(f"{base}/favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"].startswith("image/svg+xml")
        linked = page.locator("link[rel=icon]").get_attribute("href")
        assert page.request.get(f"{base}{linked}").status == 200

        skip = page.get_by_role("link", name="Skip to content")
        assert (skip.bounding_box() or {"y": 0})["y"] < 0  # off screen until focused
        page.keyboard.press("Tab")
        expect(skip).to_be_focused()
        box = skip.bounding_box()
        assert box is not None and box["y"] >= 0
        page.keyboard.press("Enter")
        wait_for_js(page, "document.activeElement?.id === 'main'")
        page.context.close()
