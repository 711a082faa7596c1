"""In a real browser: the instrument page, opened from the dashboard, follows a replayed Binance session over
/ws/v1/market — candles, the trades tape, the order book and the header all move — survives a dropped
connection by resuming, and ends on exactly the book the exchange had."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings

from tests.conftest import AGGTRADES, ARTIFACTS, needs_aggtrades
from tests.e2e.capture import write_depth_capture
from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.servers import live_stack, manage, stack_env

pytestmark = [*BROWSER_TEST, needs_aggtrades]

# 12 minutes 20 s of recorded trades and depth at ×45: about 16 s.
SPEED = "45"
PAGE = "window.livefolioInstrument"


def stat(page: Any, name: str) -> int:
    return int(page.evaluate(f"{PAGE}.client.stats.{name}"))


# `demo` before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_the_instrument_page_follows_a_replayed_session_and_resumes_after_a_dropped_connection(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    # The depth of the same span as the trades, as a recorder of btcusdt@depth@100ms would have written it.
    capture = write_depth_capture(tmp_path / "btcusdt-depth.capture", trades=AGGTRADES)
    final_bids, final_asks = capture.top(10)

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC").new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        # From the dashboard: a holding's symbol opens its instrument page.
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        link = page.locator('tr[data-symbol="BTC-USD"] a.symbol').first
        expect(link).to_have_attribute("href", "/market/BTC-USD/", timeout=15_000)
        link.click()
        expect(page).to_have_url(f"{base}/market/BTC-USD/")
        expect(page.get_by_test_id("instrument-symbol")).to_have_text("BTC-USD")

        status = page.locator("#connection-status")
        expect(status).to_have_attribute("data-state", "live", timeout=15_000)
        expect(status).to_contain_text("Live")
        last_price = page.get_by_test_id("last-price")
        expect(last_price).to_have_text("$87,350.00")  # the stored quote, before any market data
        chart = page.get_by_test_id("candle-chart")
        book = page.get_by_test_id("book")
        trades = page.locator('[data-testid="trades"] tbody tr')
        expect(page.get_by_test_id("book-empty")).to_be_visible()
        expect(page.get_by_test_id("trades-empty")).to_be_visible()
        expect(chart).to_have_attribute("data-loaded", "1m")  # the stored history: the seeded reference minute, a day back
        bars_before = int(chart.get_attribute("data-candles") or 0)

        log = tmp_path / "replay_feed.log"
        replay = manage(
            "replay_feed",
            str(AGGTRADES),
            str(capture.path),
            "--speed",
            SPEED,
            "--rebase-time",
            "--no-progress",
            env=stack_env(redis_url=redis_url, layer_prefix=layer_prefix),
            log=log,
        )
        try:
            # Everything fills in...
            expect(book).to_have_attribute("data-levels", "20", timeout=15_000)
            expect(book).to_have_attribute("data-checksum", "ok")
            expect(trades).to_have_count(50, timeout=15_000)
            expect(last_price).not_to_have_text("$87,350.00", timeout=10_000)
            wait_for_js(page, f"{PAGE}.chart.bars.length > {bars_before}", timeout=10_000)

            # ...and moves: the tape, the book, the open candle (the live minutes, added to the stored history), the header.
            tape = page.locator('[data-testid="trades"]')
            newest = tape.get_attribute("data-newest") or ""
            expect(tape).not_to_have_attribute("data-newest", newest, timeout=10_000)
            book_text = book.inner_text()
            expect(book).not_to_have_text(book_text, timeout=10_000)
            close = chart.get_attribute("data-last-close") or ""
            expect(chart).not_to_have_attribute("data-last-close", close, timeout=10_000)
            price = last_price.inner_text()
            expect(last_price).not_to_have_text(price, timeout=10_000)
            expect(page.locator("#replay-badge")).to_be_visible()  # the ticker says the prices are replayed
            # A minute closes and the next one opens: the chart gains candles during the session.
            shown = int(chart.get_attribute("data-candles") or 0)
            wait_for_js(page, f"{PAGE}.chart.bars.length > {shown}", timeout=15_000)

            # The network drops mid-session: the page reconnects and resumes every channel where it was.
            resumes = stat(page, "recovered") + stat(page, "notRecovered")
            page.evaluate(f"{PAGE}.client.dropConnection()")
            wait_for_js(page, f"{PAGE}.client.stats.connections >= 2", timeout=10_000)
            wait_for_js(page, f"{PAGE}.client.stats.recovered + {PAGE}.client.stats.notRecovered >= {resumes + 4}", timeout=10_000)
            expect(status).to_have_attribute("data-state", "live", timeout=10_000)
            expect(status).to_have_text("Live")
            newest = tape.get_attribute("data-newest") or ""
            expect(tape).not_to_have_attribute("data-newest", newest, timeout=10_000)  # still flowing

            assert replay.wait(timeout=60) == 0, log.read_text()
        finally:
            if replay.poll() is None:
                replay.terminate()
                replay.wait(timeout=10)

        # The session's end, exactly: its last trade, and the exchange's book after its last diff.
        expect(last_price).to_have_text("$87,759.14", timeout=10_000)
        expect(trades.first.locator(".tape-price")).to_have_text("87,759.14")
        expect(chart).to_have_attribute("data-last-close", "87759.14")
        expected = json.dumps({"bids": final_bids, "asks": final_asks}, separators=(",", ":"))  # as JSON.stringify writes it
        wait_for_js(
            page,
            f"expected => JSON.stringify({{bids: {PAGE}.book.bids.slice(0, 10), asks: {PAGE}.book.asks.slice(0, 10)}}) === expected",
            arg=expected,
            timeout=10_000,
        )
        expect(book).to_have_attribute("data-checksum", "ok")
        expect(status).to_have_attribute("data-state", "live")
        page.screenshot(path=str(ARTIFACTS / "instrument.png"), full_page=True)

        stats = page.evaluate(f"{PAGE}.client.stats")
        assert stats["checksumMismatches"] == 0 and stats["gaps"] == 0, stats
        assert stats["checksumOk"] > 10, stats
        assert stats["recovered"] >= 1, stats  # at least one channel came back by replay, not by snapshot
        assert errors == [], errors

    summary = log.read_text().splitlines()[-1]
    assert summary.startswith(f"replay_feed: {5_000 + capture.diffs + 1:,} events read, "), summary
    assert "skipped: none" in summary, summary
