"""Source → hub → publish: the loop behind `run_feeds` (and later `replay_feed`).

Events are applied to the hub as fast as the source yields them. Every
conflation window the hub is drained: one broadcast per changed symbol, and the
latest quote per symbol is queued for the database, which is written in one
batch at most every `quote_flush` seconds. Nothing touches the database per tick.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from channels.db import database_sync_to_async

from marketdata import services, streams
from marketdata.events import PriceUpdate
from marketdata.feeds import Feed
from marketdata.hub import Hub

log = logging.getLogger(__name__)

StoreQuotes = Callable[[Iterable[PriceUpdate]], Awaitable[int]]


def new_epoch() -> str:
    """Epoch of one worker run: clients seeing it change know seq restarted."""
    return str(time.time_ns() // 1_000_000)


@dataclass
class WorkerStats:
    events: int = 0
    broadcasts: int = 0
    quote_batches: int = 0
    quote_rows: int = 0
    symbols: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        return (
            f"{self.events} events in {elapsed:.1f} s, {self.broadcasts} broadcasts across "
            f"{len(self.symbols)} symbols, {self.quote_rows} quotes written in {self.quote_batches} batches"
        )


class Worker:
    def __init__(
        self,
        *,
        feed: Feed,
        conflation: float,
        quote_flush: float,
        epoch: str | None = None,
        store_quotes: StoreQuotes | None = None,
    ) -> None:
        self.feed = feed
        self.conflation = conflation
        self.quote_flush = quote_flush
        self.hub = Hub(epoch=epoch or new_epoch())
        self.store_quotes = store_quotes or database_sync_to_async(services.quotes_store)
        self.stats = WorkerStats()
        self._unsaved: dict[str, PriceUpdate] = {}
        self._last_flush = time.monotonic()

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Run until `stop` is set or the feed ends; always flushes what it holds."""
        ingest = asyncio.create_task(self._ingest())
        stopping = asyncio.create_task(stop.wait())
        try:
            while not ingest.done() and not stop.is_set():
                await asyncio.wait({ingest, stopping}, timeout=self.conflation)
                await self.flush_window()
            if ingest.done() and not ingest.cancelled() and ingest.exception():
                raise ingest.exception()  # type: ignore[misc]
        finally:
            for task in (ingest, stopping):
                task.cancel()
            await asyncio.gather(ingest, stopping, return_exceptions=True)
            await self.flush_window()
            await self.flush_quotes()
        return self.stats

    async def _ingest(self) -> None:
        async for event in self.feed:
            self.hub.apply(event)
            self.stats.events += 1

    async def flush_window(self) -> None:
        """End of a conflation window: publish one update per changed symbol."""
        for update in self.hub.drain():
            await streams.publish_price(update)
            self.stats.broadcasts += 1
            self.stats.symbols.add(update.symbol)
            self._unsaved[update.symbol] = update
        if time.monotonic() - self._last_flush >= self.quote_flush:
            await self.flush_quotes()

    async def flush_quotes(self) -> None:
        self._last_flush = time.monotonic()
        if not self._unsaved:
            return
        batch, self._unsaved = list(self._unsaved.values()), {}
        try:
            self.stats.quote_rows += await self.store_quotes(batch)
            self.stats.quote_batches += 1
        except Exception:
            # Keep them for the next flush unless a newer price arrived meanwhile.
            log.exception("could not store %d quotes; retrying with the next batch", len(batch))
            for update in batch:
                self._unsaved.setdefault(update.symbol, update)
