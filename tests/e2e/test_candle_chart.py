"""In a real browser: the instrument page's candle chart (static/js/candle-chart.js, lightweight-charts). With 90
stored minutes of BTC-USD, switching to 5m draws 5-minute bars added up from them (the page's bars and the endpoint
it fetched agree, to the decimal), the choice is remembered after a reload, the mouse wheel zooms in, a drag pans,
and the crosshair's bar is read out in the legend. Its colours follow the --chart-* custom properties when the
document fires livefolio:themechange and when the system's colour scheme changes. With the synthetic feed running,
the live minutes keep the current 5-minute bar moving.

Screenshots at 1440x900 and 390x844 go to test-artifacts/candles/."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from marketdata.models import Candle, Instrument
from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.e2e.pages import SIZES, shoot
from tests.e2e.test_csp import REPORT_VIOLATIONS
from tests.servers import live_stack

pytestmark = BROWSER_TEST

SHOTS = ARTIFACTS / "candles"
PAGE = "window.livefolioInstrument"
CHART = '[data-testid="candle-chart"]'
D = Decimal


def visible(page: Any) -> tuple[float, float]:
    root = page.locator(CHART)
    return float(root.get_attribute("data-visible-from") or "nan"), float(root.get_attribute("data-visible-to") or "nan")


@pytest.fixture
def stored_minutes(demo: dict[str, int]) -> int:
    """90 stored minutes of BTC-USD from two hours ago, on the hour: minute n opens at 87,000 + n, closes a quarter
    higher, ±0.5 around the open; 1.5 traded in 2 trades. Returns the first minute's start in epoch ms."""
    base = (timezone.now() - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    btc = Instrument.objects.get(symbol="BTC-USD")
    Candle.objects.bulk_create(
        Candle(instrument=btc, start=base + timedelta(minutes=n), open=D(87_000 + n), high=D(87_000 + n) + D("0.5"), low=D(87_000 + n) - D("0.5"),
               close=D(87_000 + n) + D("0.25"), volume=D("1.5"), trades=2)
        for n in range(90)
    )  # fmt: skip
    return int(base.timestamp() * 1000)


# `stored_minutes` (and so `demo`) before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_candles_switch_to_five_minutes_zoom_pan_and_read_out_the_hovered_bar(
    stored_minutes: int, browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    base_ms = stored_minutes

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base_url:
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        context.add_init_script(REPORT_VIOLATIONS)
        page = context.new_page()
        problems: list[str] = []
        page.on("console", lambda msg: problems.append(msg.text) if "CSP" in msg.text or "Content Security Policy" in msg.text else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        fetched: list[str] = []
        page.on("request", lambda request: fetched.append(request.url) if "/candles/" in request.url else None)
        log_in(page, base_url, settings.DEMO_USERNAME, settings.DEMO_PASSWORD, next_path="/market/BTC-USD/")

        chart = page.locator(CHART)
        one_minute = page.get_by_role("button", name="1m", exact=True)
        five_minutes = page.get_by_role("button", name="5m", exact=True)
        expect(one_minute).to_have_attribute("aria-pressed", "true", timeout=15_000)
        expect(chart).to_have_attribute("data-loaded", "1m", timeout=10_000)
        wait_for_js(page, f"{PAGE}.chart.bars.filter(b => b.start >= {base_ms}).length === 90")

        # 5m: the page asks for 5-minute bars and draws 18 of them, each starting on a multiple of 5 minutes (UTC).
        five_minutes.click()
        expect(five_minutes).to_have_attribute("aria-pressed", "true")
        expect(one_minute).to_have_attribute("aria-pressed", "false")
        expect(chart).to_have_attribute("data-loaded", "5m", timeout=10_000)
        expect(chart).to_have_attribute("data-interval-ms", "300000")
        assert fetched[-1].endswith("/market/BTC-USD/candles/?tf=5m"), fetched
        bars = page.evaluate(f"{PAGE}.chart.bars.filter(b => b.start >= {base_ms})")
        assert len(bars) == 18
        assert all(bar["start"] % 300_000 == 0 for bar in bars)
        assert [bar["start"] - base_ms for bar in bars] == [n * 300_000 for n in range(18)]
        # The third bucket, minutes 10..14: the first open, the extremes, the last close, the summed volume.
        assert {k: bars[2][k] for k in ("open", "high", "low", "close", "volume", "trades")} == {
            "open": "87010", "high": "87014.5", "low": "87009.5", "close": "87014.25", "volume": "7.5", "trades": 10
        }  # fmt: skip
        served = page.evaluate("async () => (await (await fetch('/market/BTC-USD/candles/?tf=5m')).json()).bars")
        assert [b for b in served if b["start"] >= base_ms] == bars  # what the page draws is what the endpoint gave

        # Remembered: a reload opens on 5m.
        page.reload()
        expect(page.get_by_role("button", name="5m", exact=True)).to_have_attribute("aria-pressed", "true", timeout=15_000)
        expect(chart).to_have_attribute("data-loaded", "5m", timeout=10_000)

        plot = chart.locator(".chart-canvas")
        plot.scroll_into_view_if_needed()
        box = plot.bounding_box()
        assert box is not None
        # Crosshair: the legend reads out the bar under the pointer (minutes 50 to 54: 87,050 to 87,054.25), else the last.
        legend = page.get_by_test_id("candle-ohlc")
        expect(legend).to_contain_text("C87,089.25")  # the last bar's close
        resting = legend.text_content() or ""
        x = page.evaluate(f"{PAGE}.chart.chart.timeScale().timeToCoordinate({bars[10]['start']} / 1000)")
        page.mouse.move(box["x"] + x, box["y"] + box["height"] * 0.4)
        expect(legend).to_contain_text("O87,050.00", timeout=5_000)
        expect(legend).to_contain_text("C87,054.25")
        page.mouse.move(0, 0)
        expect(legend).to_have_text(resting)

        # Zoom: the wheel over the plot shows fewer bars, around the same place.
        expect(chart).to_have_attribute("data-visible-to", timeout=5_000)
        before = visible(page)
        shown = chart.get_attribute("data-visible-from")
        page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.4)
        page.mouse.wheel(0, -600)
        wait_for_js(page, f"() => document.querySelector('{CHART}').dataset.visibleFrom !== '{shown}'")
        after = visible(page)
        assert after[1] - after[0] < before[1] - before[0], (before, after)

        # Pan: a drag to the right shows older bars.
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.4, steps=8)
        page.mouse.up()
        wait_for_js(page, f"() => Number(document.querySelector('{CHART}').dataset.visibleTo) < {after[1] - 1}")

        page.evaluate(f"{PAGE}.chart.chart.timeScale().fitContent()")
        shoot(page, SHOTS, "candles-5m", redraw_ms=200)

        # Theming: the colours are the CSS custom properties, read again when the app says the theme changed...
        up_colour = f"{PAGE}.chart.chart.panes()[0].getSeries()[0].options().upColor"
        assert page.evaluate(up_colour) == "rgba(22, 163, 107, 1)"  # --chart-up's light default, #16a36b
        page.evaluate("document.documentElement.style.setProperty('--chart-up', 'rgb(0, 0, 255)')")
        assert page.evaluate(up_colour) == "rgba(22, 163, 107, 1)"  # nothing said the theme changed yet
        page.evaluate("document.dispatchEvent(new Event('livefolio:themechange'))")
        assert page.evaluate(up_colour) == "rgba(0, 0, 255, 1)"
        # ...and when the system's colour scheme changes.
        page.evaluate("document.documentElement.style.setProperty('--chart-up', 'oklch(0.7 0.2 30)')")
        page.emulate_media(color_scheme="dark")
        wait_for_js(page, f"{up_colour} !== 'rgba(0, 0, 255, 1)'")
        assert page.evaluate(f"/^rgba\\(\\d+, \\d+, \\d+, 1\\)$/.test({up_colour})")  # any CSS colour, as rgba for the canvas
        assert problems == []
        context.close()


def test_live_minutes_keep_the_current_five_minute_bar_moving(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path) as base_url:  # the synthetic feed runs
        context = browser.new_context(viewport=SIZES["desktop"], locale="en-US", timezone_id="UTC")
        context.add_init_script("localStorage.setItem('livefolio.instrument.timeframe', '5m')")  # chosen on an earlier visit
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(page, base_url, settings.DEMO_USERNAME, settings.DEMO_PASSWORD, next_path="/market/BTC-USD/")
        chart = page.locator(CHART)
        expect(page.get_by_role("button", name="5m", exact=True)).to_have_attribute("aria-pressed", "true", timeout=15_000)
        expect(chart).to_have_attribute("data-loaded", "5m", timeout=10_000)

        # The open minute changes several times a second; the chart's last bar changes with it.
        wait_for_js(page, f"{PAGE}.candles.length > 0 && {PAGE}.chart.bars.length > 0", timeout=15_000)
        close = chart.get_attribute("data-last-close") or ""
        expect(chart).not_to_have_attribute("data-last-close", close, timeout=10_000)

        # The last bar is the 5-minute bucket of the newest live minute: its close (once the frame after the minute's
        # message is drawn), and every live minute's extremes in that bucket inside its own (stored minutes before
        # `last_minute` may widen it further).
        # Checked in one go in the page, polled: a trade may land between two reads, and the bar follows a frame later.
        follows = f"""() => {{
            const minute = {PAGE}.candles[{PAGE}.candles.length - 1];
            const bar = {PAGE}.chart.bars[{PAGE}.chart.bars.length - 1];
            const bucket = Math.floor(minute.start / 300000) * 300000;
            const inBucket = {PAGE}.candles.filter(c => Math.floor(c.start / 300000) * 300000 === bucket);
            return bar.start === bucket && bucket % 300000 === 0
                && Number(bar.close) === Number(minute.close)
                && inBucket.every(c => Number(bar.high) >= Number(c.high) && Number(bar.low) <= Number(c.low));
        }}"""
        wait_for_js(page, follows, timeout=5_000)
        # And again once the minute has moved on: the bar keeps following.
        close = chart.get_attribute("data-last-close") or ""
        expect(chart).not_to_have_attribute("data-last-close", close, timeout=10_000)
        wait_for_js(page, follows, timeout=5_000)
        assert errors == []
        context.close()
