"""In a real browser: a past day replayed into a sandbox (`replay_feed --sandbox day1`) shows on the instrument
page with ?session=day1, badged as a replay, while the live page of the same instrument stays as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings

from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in, wait_for_js
from tests.marketdata.test_replay_sandbox import write_recording
from tests.servers import live_stack, manage, stack_env

pytestmark = BROWSER_TEST

PAGE = "window.livefolioInstrument"
STORED = "$87,350.00"  # the demo's stored BTC-USD quote: what the live page opens on


# `demo` before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_a_sandbox_replay_shows_on_the_session_page_only(
    demo: dict[str, int], browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    recording = write_recording(tmp_path / "btc-day1.jsonl")
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC")
        errors: list[str] = []
        log_in(context.new_page(), base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        live, sandbox = context.new_page(), context.new_page()
        for page in (live, sandbox):
            page.on("pageerror", lambda exc: errors.append(str(exc)))
        live.goto(f"{base}/market/BTC-USD/")
        sandbox.goto(f"{base}/market/BTC-USD/?session=day1")
        for page in (live, sandbox):
            expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        expect(sandbox.get_by_test_id("session-badge")).to_have_text("Replay session day1")
        expect(sandbox.get_by_test_id("last-price")).to_have_text("—")  # the session has no data yet, and no live quote
        expect(live.get_by_test_id("last-price")).to_have_text(STORED)

        log = tmp_path / "replay_feed.log"
        replay = manage(
            "replay_feed", str(recording), "--sandbox", "day1", "--speed", "max", "--no-progress",
            env=stack_env(redis_url=redis_url, layer_prefix=layer_prefix), log=log,
        )  # fmt: skip
        assert replay.wait(timeout=60) == 0, log.read_text()

        # The session page shows the day: its last trade, its tape, its book, its candles.
        expect(sandbox.get_by_test_id("last-price")).to_have_text("$101.50", timeout=10_000)
        expect(sandbox.locator('[data-testid="trades"] tbody tr')).to_have_count(4)
        book = sandbox.get_by_test_id("book")
        expect(book).to_have_attribute("data-levels", "4")
        expect(book).to_have_attribute("data-checksum", "ok")
        expect(book).to_have_attribute("data-state", "synced")
        expect(sandbox.get_by_test_id("book-out-of-sync")).to_have_count(0)
        wait_for_js(sandbox, f"{PAGE}.candles.length === 3", timeout=10_000)
        expect(sandbox.locator("#replay-badge")).to_be_hidden()  # the session badge says it already
        sandbox.screenshot(path=str(ARTIFACTS / "instrument-sandbox.png"), full_page=True)

        # The live page saw none of it.
        expect(live.get_by_test_id("last-price")).to_have_text(STORED)
        expect(live.get_by_test_id("trades-empty")).to_be_visible()
        expect(live.get_by_test_id("book-empty")).to_be_visible()
        expect(live.get_by_test_id("book")).to_have_attribute("data-state", "none")
        assert live.evaluate(f"{PAGE}.client.stats.updates") == 0
        assert errors == [], errors
