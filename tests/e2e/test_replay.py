"""In a real browser: a recorded Binance session replayed by `replay_feed` moves the demo portfolio's bitcoin,
exactly as live data would, while a plain WebSocket client sees each price's sequence numbers rise."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import AGGTRADES, ARTIFACTS, needs_aggtrades, session_cookie
from tests.e2e.conftest import BROWSER_TEST, log_in
from tests.servers import live_stack, manage, stack_env

pytestmark = [*BROWSER_TEST, needs_aggtrades]


def watch_btc(url: str, origin: str, cookie: str, portfolio: int, frames: list[dict[str, Any]], stop: threading.Event) -> None:
    """Collect one portfolio's BTC-USD rows from every frame until `stop` (a bot's view of the same stream)."""
    with connect(url, additional_headers={"Cookie": cookie, "Origin": origin}) as ws:
        while not stop.is_set():
            try:
                frame = json.loads(ws.recv(timeout=0.5))
            except TimeoutError:
                continue
            except ConnectionClosed:
                return
            for view in frame.get("portfolios", []):
                if view["id"] == portfolio:
                    frames.extend(row for row in view.get("rows", []) if row.get("symbol") == "BTC-USD")


@pytest.fixture
def demo_cookie(demo: dict[str, int]) -> str:
    return session_cookie(get_user_model().objects.get(username=settings.DEMO_USERNAME)).decode()


# `demo` and its cookie before `browser`: the database is used before Playwright's loop starts in this thread.
def test_a_replayed_session_moves_the_open_dashboard_and_its_sequence_numbers_only_rise(
    demo: dict[str, int], demo_cookie: str, browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    cookie = demo_cookie
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US", timezone_id="UTC").new_page()
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD)
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        page.click(f'[data-testid="view-tab"][data-view-id="{demo["usd"]}"]')
        btc_price = page.locator('tr[data-symbol="BTC-USD"] td[data-field="price"]')
        total = page.locator(f'[data-testid="total-value"][data-portfolio-id="{demo["usd"]}"]')
        expect(btc_price).to_contain_text("87,350.00")  # the seeded price
        before = total.inner_text()
        expect(page.locator("#replay-badge")).to_be_hidden()

        frames: list[dict[str, Any]] = []
        stop = threading.Event()
        bot = threading.Thread(
            target=watch_btc, args=(base.replace("http", "ws", 1) + "/ws/portfolio/", base, cookie, demo["usd"], frames, stop)
        )
        bot.start()
        try:
            # 12 minutes of trades at ×60, rebased to now so the day change is measured against the seeded reference.
            log = tmp_path / "replay_feed.log"
            replay = manage(
                "replay_feed",
                str(AGGTRADES),
                "--speed",
                "60",
                "--rebase-time",
                "--no-progress",
                env=stack_env(redis_url=redis_url, layer_prefix=layer_prefix),
                log=log,
            )
            expect(page.locator("#replay-badge")).to_be_visible(timeout=15_000)
            expect(total).not_to_have_text(before, timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "dashboard-replay.png"), full_page=True)
            assert replay.wait(timeout=60) == 0, log.read_text()
            expect(btc_price).to_contain_text("87,759.14", timeout=10_000)  # the session's last trade
        finally:
            stop.set()
            bot.join(timeout=10)

    summary = log.read_text().splitlines()[-1]
    assert summary.startswith("replay_feed: 5,000 events read, 5,000 published as "), summary
    seqs = [row["price_seq"] for row in frames if row.get("price_seq") is not None]
    assert len(seqs) >= 10, f"the bot saw only {len(seqs)} BTC prices"
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    assert all(row["price_replay"] for row in frames[1:])  # the first may be the stored quote
    assert len({row["price_epoch"] for row in frames if row["price_replay"]}) == 1
