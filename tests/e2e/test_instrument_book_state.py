"""In a real browser: the instrument page's order book says when the worker has lost the book (an update id gap)
and shows nothing of it until a fresh snapshot brings it back; the source's update id is in the panel's footer."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from marketdata.delivery import streams
from marketdata.delivery.history import market_store
from marketdata.events import BookDelta, BookSnapshot, Level, MarketEvent
from marketdata.worker.hub import Hub
from marketdata.worker.market import MarketBuilder
from tests.conftest import ARTIFACTS
from tests.e2e.conftest import BROWSER_TEST, log_in
from tests.servers import live_stack

pytestmark = BROWSER_TEST

SYMBOL = "BTC-USD"
T0 = datetime.now(UTC).replace(microsecond=0)
NOTICE = "Book out of sync with the exchange — waiting for a fresh snapshot"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


def levels(*pairs: tuple[str, str]) -> tuple[Level, ...]:
    return tuple((Decimal(price), Decimal(qty)) for price, qty in pairs)


class Worker:
    """A hub and its market builder publishing one window per call, as the feed worker does: history first, then live.

    Publishing runs on an event loop of its own in a thread: Playwright's sync API holds this thread's."""

    def __init__(self) -> None:
        epoch = str(int(T0.timestamp() * 1000))
        self.hub = Hub(epoch=epoch)
        self.builder = MarketBuilder(epoch=epoch)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.windows = 0

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def __call__(self, event: MarketEvent) -> list[dict[str, Any]]:
        self.hub.apply(event)
        window = self.builder.build(self.hub, self.hub.drain())

        async def publish() -> None:
            for symbol, messages in window.items():
                await market_store().append(messages)
                await streams.publish_market(symbol, messages)

        self._run(publish())
        return [m for m in window.get(SYMBOL, []) if m["ch"] == f"book:{SYMBOL}@depth=10"]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def worker(redis_layer: dict[str, Any]) -> Iterator[Worker]:
    worker = Worker()
    yield worker
    worker.close()


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def screenshots(page: Any, name: str) -> None:
    """The book panel's state at desktop and phone width (test-artifacts/, for a look)."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(ARTIFACTS / f"instrument-book-{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


# `demo` before `browser`: the database is set up before Playwright's loop starts in this thread.
def test_an_out_of_sync_book_is_announced_and_empty_until_a_fresh_snapshot(
    demo: dict[str, int], worker: Worker, browser: Any, redis_url: str, layer_prefix: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    with live_stack(redis_url=redis_url, layer_prefix=layer_prefix, logs=tmp_path, feeds=False) as base:
        page = browser.new_context(viewport=DESKTOP, locale="en-US", timezone_id="UTC").new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(page, base, settings.DEMO_USERNAME, settings.DEMO_PASSWORD, next_path=f"/market/{SYMBOL}/")
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)

        book = page.get_by_test_id("book")
        empty = page.get_by_test_id("book-empty")
        notice = page.get_by_test_id("book-out-of-sync")
        footer = page.get_by_test_id("book-update-id")
        # No depth data yet: said so, and not as an out-of-sync book.
        expect(book).to_have_attribute("data-state", "none")
        expect(empty).to_have_text("No depth data for this instrument yet: the order book appears with the first depth data.")
        expect(notice).to_have_count(0)
        expect(footer).to_be_hidden()

        # Binance's REST snapshot, then a diff that chains on it (U = lastUpdateId + 1): the book is in sync.
        bids = levels(("87648.2", "1.5"), ("87648.1", "0.3"), ("87647.9", "2"))
        asks = levels(("87648.3", "0.2"), ("87648.5", "1.1"), ("87649", "4"))
        worker(BookSnapshot(SYMBOL, at(0), bids, asks, "binance", update_id=400900200))
        [synced] = worker(BookDelta(SYMBOL, at(1), levels(("87648.2", "1.25")), (), "binance", first_id=400900201, last_id=400900217))
        assert synced["data"]["state"] == "synced" and synced["data"]["update_id"] == 400900217
        expect(book).to_have_attribute("data-levels", "6", timeout=10_000)
        expect(book).to_have_attribute("data-state", "synced")
        expect(book).to_have_attribute("data-checksum", "ok")
        expect(book).to_be_visible()
        expect(footer).to_have_text("Update 400900217")
        expect(empty).to_be_hidden()
        expect(notice).to_have_count(0)

        # Diffs 400900218..400900229 never came: the worker drops the book and says so.
        [lost] = worker(BookDelta(SYMBOL, at(2), (), levels(("87648.3", "0.5")), "binance", first_id=400900230, last_id=400900231))
        assert lost["data"]["state"] == "out_of_sync"
        expect(book).to_have_attribute("data-state", "out_of_sync", timeout=10_000)
        expect(notice).to_have_text(NOTICE)
        expect(page.get_by_role("status").filter(has_text=NOTICE)).to_be_visible()
        expect(book).to_have_attribute("data-levels", "0")
        expect(book).to_be_hidden()
        expect(empty).to_be_hidden()  # not "no depth data": the book is known to be lost
        expect(footer).to_have_text("Last synced update 400900217")
        # A page opened meanwhile hears it from the snapshot: still out of sync, never a stale book.
        page.reload()
        expect(page.locator("#connection-status")).to_have_attribute("data-state", "live", timeout=15_000)
        expect(book).to_have_attribute("data-state", "out_of_sync")
        expect(notice).to_have_text(NOTICE)
        expect(book).to_have_attribute("data-levels", "0")
        screenshots(page, "out-of-sync")

        # Nothing more while it is lost, however the diffs move; then a fresh snapshot brings the whole top back.
        assert worker(BookDelta(SYMBOL, at(3), levels(("87648.2", "9")), (), "binance", first_id=400900232, last_id=400900240)) == []
        resnapshot = levels(("87650", "0.7"), ("87649.8", "1")), levels(("87650.1", "0.4"),)  # fmt: skip
        [back] = worker(BookSnapshot(SYMBOL, at(4), *resnapshot, "binance", update_id=400900300))
        assert back["data"]["state"] == "synced"
        expect(book).to_have_attribute("data-state", "synced", timeout=10_000)
        expect(book).to_have_attribute("data-levels", "3")
        expect(book).to_have_attribute("data-checksum", "ok")
        expect(book).to_be_visible()
        expect(notice).to_have_count(0)
        expect(page.get_by_test_id("book-status")).to_have_text("Order book back in sync with the exchange.")  # to screen readers
        expect(footer).to_have_text("Update 400900300")
        expect(book.locator('.book-level[data-side="bid"]').first).to_have_attribute("data-price", "87650")
        screenshots(page, "resynced")

        stats = page.evaluate("window.livefolioInstrument.client.stats")
        assert stats["checksumMismatches"] == 0, stats
        assert errors == [], errors
