"""In a real browser: a signed-in user watches two symbols and sets a price alert; a replayed session crosses it; the
open dashboard shows the toast, the notification is recorded, and the email reaches a real SMTP server. Then the
instrument page: the replayed session's candles switched to 5m, and zoomed (issue 15, "Done means")."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model

from marketdata.models import Instrument
from portfolio.models import Alert, Notification
from tests.conftest import AGGTRADES, ARTIFACTS, needs_aggtrades
from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.e2e.test_candle_chart import CHART, PAGE, visible
from tests.servers import free_port, live_stack, manage, stack_env

pytestmark = [*BROWSER_TEST, needs_aggtrades]
T = TypeVar("T")

# The session's trades start at 87,648.21 and first reach 87,750 at its 1,942nd trade (of 5,000).
THRESHOLD = "87750"


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        from email import message_from_bytes

        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Any:
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


@pytest.fixture
def demo_with_email(demo: dict[str, int]) -> dict[str, int]:
    user = get_user_model().objects.get(username=settings.DEMO_USERNAME)
    user.email = "demo@example.test"
    user.save()
    return {**demo, "btc": Instrument.objects.get(symbol="BTC-USD").pk, "eth": Instrument.objects.get(symbol="ETH-USD").pk}


def off_the_loop(query: Callable[[], T]) -> T:
    """Run a query in a thread: Playwright's event loop runs in this one, and Django refuses queries there."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(query).result()


def wait_until(condition: Any, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


# The database fixtures before `browser`: they run before Playwright's loop starts in this thread.
def test_a_replayed_price_crossing_an_alert_shows_a_toast_records_a_notification_and_sends_an_email(
    demo_with_email: dict[str, int], smtp: Any, browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    inbox, smtp_port = smtp
    ids = demo_with_email
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="en-US", timezone_id="UTC")
        page = context.new_page()
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)

        for instrument in (ids["btc"], ids["eth"]):
            page.select_option("#watch_instrument", value=str(instrument))
            page.get_by_role("button", name="Watch", exact=True).click()
            expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        rows = page.locator('[data-testid="watch-row"]')
        expect(rows).to_have_count(2)
        btc_watched = page.locator('#watchlist tr[data-symbol="BTC-USD"] td[data-field="price"]')
        expect(btc_watched).to_contain_text("87,350.00")  # the snapshot's stored price
        expect(page.locator('#watchlist tr[data-symbol="ETH-USD"] td[data-field="price"]')).to_contain_text("2,975.00")

        page.select_option("#alert_instrument", value=str(ids["btc"]))
        expect(page.locator("#alert_window_minutes")).to_be_hidden()  # a price alert has no window
        page.select_option("#alert_kind", value="move_pct")
        expect(page.locator("#alert_window_minutes")).to_be_visible()
        page.select_option("#alert_kind", value="price_above")
        page.fill("#alert_threshold", THRESHOLD)
        page.check("#alert_email")
        page.get_by_role("button", name="Set alert", exact=True).click()
        expect(page.locator('[data-testid="alert-row"]')).to_contain_text("BTC-USD at or above 87750")
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / "alerts-before.png"), full_page=True)

        log = tmp_path / "replay_feed.log"
        env = {
            **stack_env(redis_url=redis_url, layer_prefix=layer_prefix),
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(smtp_port),
        }
        # 12 minutes of trades at ×60, rebased to now (the worker evaluates the alerts on the prices it publishes).
        replay = manage("replay_feed", str(AGGTRADES), "--speed", "60", "--rebase-time", "--no-progress", env=env, log=log)
        try:
            toast = page.locator('[data-testid="toast"]')
            expect(toast.first).to_be_visible(timeout=30_000)
            expect(toast.first).to_contain_text("BTC-USD at or above 87750: now 8775")
            expect(page.locator('[data-testid="notification"]').first).to_contain_text("BTC-USD at or above 87750")
            expect(page.locator('[data-testid="alert-row"] .alert-state')).to_have_text("Fired · email")
            page.screenshot(path=str(ARTIFACTS / "alerts-toast.png"), full_page=False)
            page.set_viewport_size({"width": 390, "height": 844})
            page.locator("#notifications").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "alerts-toast-phone.png"), full_page=False)
            page.locator("#alerts").screenshot(path=str(ARTIFACTS / "alerts-card-phone.png"))
            page.set_viewport_size({"width": 1440, "height": 900})
            assert replay.wait(timeout=60) == 0, log.read_text()
        finally:
            if replay.poll() is None:
                replay.terminate()
                replay.wait(timeout=10)
        expect(btc_watched).to_contain_text("87,759.14", timeout=10_000)  # the session's last trade, on the watchlist too
        # Once, though the session crosses 87,750 back and forth: the default hysteresis (0.5 %) re-arms it only under 87,311.25.
        expect(toast).to_have_count(1)
        # Dismissable: the close button takes it away.
        toast.first.get_by_role("button", name="Dismiss").click()
        expect(toast).to_have_count(0)

        # The instrument page: the session's minutes as 5-minute candles, then zoomed in with the wheel.
        page.goto(f"{base}/market/BTC-USD/")
        chart = page.locator(CHART)
        expect(chart).to_have_attribute("data-loaded", "1m", timeout=15_000)
        five_minutes = page.get_by_role("button", name="5m", exact=True)
        five_minutes.click()
        expect(five_minutes).to_have_attribute("aria-pressed", "true")
        expect(chart).to_have_attribute("data-loaded", "5m", timeout=10_000)
        bars = page.evaluate(f"{PAGE}.chart.bars")
        # 12 replayed minutes, rebased to now: at least three 5-minute buckets, each on a multiple of 5 minutes (UTC).
        assert len(bars) >= 3, bars
        assert all(bar["start"] % 300_000 == 0 for bar in bars), [bar["start"] for bar in bars]
        assert bars[-1]["close"] == "87759.14", bars[-1]  # the session's last trade
        plot = chart.locator(".chart-canvas")
        plot.scroll_into_view_if_needed()
        box = plot.bounding_box()
        assert box is not None
        expect(chart).to_have_attribute("data-visible-to", timeout=5_000)
        before, shown = visible(page), chart.get_attribute("data-visible-from")
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.4)
        page.mouse.wheel(0, -600)
        wait_for_js(page, f"() => document.querySelector('{CHART}').dataset.visibleFrom !== '{shown}'")
        after = visible(page)
        assert after[1] - after[0] < before[1] - before[0], (before, after)
        page.screenshot(path=str(ARTIFACTS / "alerts-instrument-5m-zoomed.png"), full_page=False)
        context.close()

    notes = off_the_loop(lambda: list(Notification.objects.filter(user__username=settings.DEMO_USERNAME)))
    assert len(notes) == 1, [n.message for n in notes]
    assert notes[0].message.startswith("BTC-USD at or above 87750: now 8775")
    assert notes[0].emailed
    assert off_the_loop(lambda: Alert.objects.get().armed) is False
    wait_until(lambda: inbox.messages, timeout=10, what="the alert email")
    assert len(inbox.messages) == 1
    recipients, message = inbox.messages[0]
    assert recipients == ["demo@example.test"]
    assert message["Subject"].startswith("Livefolio alert: BTC-USD at or above 87750: now 8775")
    assert notes[0].message in message.get_payload()
