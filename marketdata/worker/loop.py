"""Source → hub → publish: the loop behind `run_feeds` and `replay_feed`.

Events are applied to the hub as fast as the source yields them. Every
conflation window the hub is drained: one price update per changed symbol, and the
latest quote per symbol is queued for the database, which is written in one
batch at most every `quote_flush` seconds. Nothing touches the database per tick.

Minutes follow event time, not the wall clock, so a replay builds the candles
of the minutes it replays: when a tick enters a new UTC minute, the minute
before it closes. Its candles are stored in one batch (their closes are kept in
`References` for day-change references), and then every minute hook runs with
the closed minute and the latest update per symbol. Minutes without a tick are
skipped. That work runs beside the broadcast loop, so a slow hook or database
never delays prices.

While a `record_feed` is listening, every event of a window also goes onto
the tape (`streams.tape_append`) as native JSONL, in the order it was applied.

Every window, after the hub is drained, the market-channel messages of the
changed symbols are built (`marketdata.worker.market`): a ticker per price
update (which is also how dashboards and portfolio channels get their prices),
trades, candles, books. They are appended to the history in one write
(`marketdata.delivery.history`), and only then published live, once per symbol
and encoded once, all symbols in one round trip (`streams.publish_market_window`:
Redis pub/sub, fanned out by each server process's hub), so a client that read
the history after subscribing sees no hole. The candles of a minute that closed
go out, closed, with the window in which it closed. If the history cannot be
written the messages are still published; a later resume over them reports
recovered: false.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from channels.db import database_sync_to_async

from marketdata import services
from marketdata.delivery import streams
from marketdata.delivery.history import MarketStore, market_store
from marketdata.events import Candle, MarketEvent, PriceUpdate
from marketdata.feeds import Feed, native
from marketdata.symbols import SymbolMap
from marketdata.worker.hub import Hub
from marketdata.worker.market import MarketBuilder, Message
from marketdata.worker.references import LOOKBACK, MARGIN, References, minute_of

log = logging.getLogger(__name__)

StoreQuotes = Callable[[Iterable[PriceUpdate]], Awaitable[int]]
StoreCandles = Callable[[Sequence[Candle]], Awaitable[int]]
PruneCandles = Callable[[datetime], Awaitable[int]]
# `async def hook(minute, prices)`: `minute` is the closed minute's start (aware UTC), `prices` the
# latest update of every symbol seen this run, as of the end of that minute.
MinuteHook = Callable[[datetime, Mapping[str, PriceUpdate]], Awaitable[None]]

PRUNE_EVERY = timedelta(hours=1)
# How often the worker asks Redis whether a recorder is listening.
TAPE_CHECK_SECONDS = 1.0


async def _store_candles(candles: Sequence[Candle]) -> int:
    return await database_sync_to_async(services.candles_store)(candles=candles)


async def _prune_candles(before: datetime) -> int:
    return await database_sync_to_async(services.candles_prune)(before=before)


def new_epoch() -> str:
    """Epoch of one worker run: clients seeing it change know seq restarted."""
    return str(time.time_ns() // 1_000_000)


@dataclass
class WorkerStats:
    events: int = 0
    broadcasts: int = 0
    quote_batches: int = 0
    quote_rows: int = 0
    candle_rows: int = 0
    taped: int = 0  # events written to the tape for record_feed
    minutes: int = 0  # closed minutes handed to the hooks
    market_messages: int = 0  # market-channel messages published
    market_store_errors: int = 0  # windows whose messages could not be written to the history
    symbols: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        return (
            f"{self.events} events in {elapsed:.1f} s, {self.broadcasts} broadcasts across "
            f"{len(self.symbols)} symbols, {self.quote_rows} quotes written in {self.quote_batches} batches, "
            f"{self.candle_rows} candles"
        )


@dataclass(frozen=True, slots=True)
class _ClosedMinute:
    minute: datetime
    candles: list[Candle]
    prices: Mapping[str, PriceUpdate]
    complete: bool  # False for the minute still open at shutdown: its candles are stored, hooks skip it


class Worker:
    def __init__(
        self,
        *,
        feed: Feed,
        conflation: float,
        quote_flush: float,
        epoch: str | None = None,
        store_quotes: StoreQuotes | None = None,
        references: References | None = None,
        minute_hooks: Sequence[MinuteHook] = (),
        store_candles: StoreCandles | None = None,
        prune_candles: PruneCandles | None = None,
        retention: timedelta | None = None,
        replay: bool = False,
        symbols: SymbolMap | None = None,
        tape: bool = True,
        market_history: MarketStore | None = None,
        session: str = "",
    ) -> None:
        """`retention`: candles older than this (in event time) are deleted, hourly; None keeps them.
        `replay`: updates are marked as replayed. `symbols`: instruments it creates (--create-instruments)
        are stored before any quote or candle of theirs. `tape`: feed a listening `record_feed`.
        `market_history`: the market channels' store (default `market_store()`).
        `session`: publish on that replay session's channels (`ticker:SYM?session=NAME`, ...) and streams, not the
        live ones (the stores, hooks and tape are the caller's to turn off: `management.base.worker_build`)."""
        self.feed = feed
        self.conflation = conflation
        self.quote_flush = quote_flush
        self.references = references if references is not None else References()
        self.hub = Hub(epoch=epoch or new_epoch(), references=self.references, replay=replay)
        self.market = MarketBuilder(epoch=self.hub.epoch, session=session)
        self._market_history = market_history
        self.store_quotes = store_quotes or database_sync_to_async(services.quotes_store)
        self.minute_hooks = list(minute_hooks)
        self.store_candles = store_candles or _store_candles
        self.prune_candles = prune_candles or _prune_candles
        self.retention = retention
        self.symbols = symbols
        self.tape = tape
        self._taping: list[MarketEvent] | None = None  # events for the tape while a recorder listens
        self._tape_checked = float("-inf")
        self._tape_n = 0
        self.stats = WorkerStats()
        self._unsaved: dict[str, PriceUpdate] = {}
        self._last_flush = time.monotonic()
        self._outbox: list[PriceUpdate] = []  # drained, not yet published
        self._latest: dict[str, PriceUpdate] = {}
        self._minute: datetime | None = None  # the open minute of event time
        self._minute_end: datetime | None = None
        self._closed: asyncio.Queue[_ClosedMinute | None] = asyncio.Queue()
        self._unsaved_candles: list[Candle] = []
        self._pruned_at: datetime | None = None

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Run until `stop` is set or the feed ends; always flushes what it holds."""
        await self._check_tape()
        ingest = asyncio.create_task(self._ingest())
        minutes = asyncio.create_task(self._record_minutes())
        stopping = asyncio.create_task(stop.wait())
        try:
            while not ingest.done() and not stop.is_set():
                await asyncio.wait({ingest, stopping}, timeout=self.conflation, return_when=asyncio.FIRST_COMPLETED)
                await self.flush_window()
            if ingest.done() and not ingest.cancelled() and ingest.exception():
                raise ingest.exception()  # type: ignore[misc]
        finally:
            for task in (ingest, stopping):
                task.cancel()
            await asyncio.gather(ingest, stopping, return_exceptions=True)
            if self._minute is not None:
                # Store the open minute's candles so far: after a session's last tick no
                # next minute may come before a restart, and that candle holds the close.
                self._close_minute(complete=False)
            await self.flush_window()
            self._closed.put_nowait(None)
            try:
                await minutes
            finally:
                minutes.cancel()
            await self.flush_quotes()
        return self.stats

    async def _ingest(self) -> None:
        async for event in self.feed:
            if self._minute_end is None or event.ts >= self._minute_end:
                if self._minute is not None:
                    self._close_minute(complete=True)
                self._minute = minute_of(event.ts)
                self._minute_end = self._minute + timedelta(minutes=1)
            self.hub.apply(event)
            self.stats.events += 1
            if self._taping is not None:
                self._taping.append(event)

    def _drain(self) -> None:
        updates = self.hub.drain()
        self._outbox.extend(updates)
        self._latest.update((u.symbol, u) for u in updates)

    def _close_minute(self, *, complete: bool) -> None:
        """Synchronous, so no tick of the next minute can slip in before the minute's prices are taken."""
        assert self._minute is not None
        # Drained first, so the updates the hooks get carry the minute's last prices.
        self._drain()
        candles = self.hub.take_minute(self._minute)
        self.market.minute_closed(candles, self.hub, closed=complete)
        for candle in candles:
            self.references.observe(candle.symbol, candle.start, candle.close)
        self._closed.put_nowait(_ClosedMinute(self._minute, candles, MappingProxyType(dict(self._latest)), complete))

    async def _record_minutes(self) -> None:
        while (closed := await self._closed.get()) is not None:
            await self._record(closed)

    async def _record(self, closed: _ClosedMinute) -> None:
        """Store a minute's candles, prune old ones hourly, then run the hooks; nothing here raises."""
        minute = closed.minute
        # Candles a failed write left behind go with this batch; those older than a restart could need are dropped.
        oldest = minute - LOOKBACK - MARGIN
        batch = [c for c in self._unsaved_candles if c.start >= oldest] + closed.candles
        self._unsaved_candles = []
        if batch:
            try:
                await self._create_instruments()
                self.stats.candle_rows += await self.store_candles(batch)
            except Exception:
                log.exception("could not store %d candles; retrying with the next minute", len(batch))
                self._unsaved_candles = batch
        if self.retention is not None and (self._pruned_at is None or minute - self._pruned_at >= PRUNE_EVERY):
            self._pruned_at = minute
            try:
                await self.prune_candles(minute - self.retention)
            except Exception:
                log.exception("could not delete candles older than %s", minute - self.retention)
        if not closed.complete:
            return
        for hook in self.minute_hooks:
            try:
                await hook(minute, closed.prices)
            except Exception:
                log.exception("minute hook %s failed for %s", getattr(hook, "__qualname__", hook), minute.isoformat())
        self.stats.minutes += 1

    async def flush_window(self) -> None:
        """End of a conflation window: publish one ticker (a price) per changed symbol, and tape its events."""
        self._drain()
        await self._flush_tape()
        batch, self._outbox = self._outbox, []
        window = self.market.build(self.hub, batch, minute=self._minute)
        for update in batch:
            self.stats.broadcasts += 1
            self.stats.symbols.add(update.symbol)
            self._unsaved[update.symbol] = update
        if window:
            await self._publish_market(window)
        if time.monotonic() - self._last_flush >= self.quote_flush:
            await self.flush_quotes()

    async def _publish_market(self, window: dict[str, list[Message]]) -> None:
        """History first (one write for the window), then live: one payload per symbol, one round trip."""
        messages = [message for symbol_messages in window.values() for message in symbol_messages]
        try:
            if self._market_history is None:
                self._market_history = market_store()
            await self._market_history.append(messages)
        except Exception:
            self.stats.market_store_errors += 1
            log.exception("could not write %d market messages to the history; publishing them all the same", len(messages))
        await streams.publish_market_window(window, session=self.market.session)
        self.stats.market_messages += len(messages)

    async def flush_quotes(self) -> None:
        self._last_flush = time.monotonic()
        if not self._unsaved:
            return
        batch, self._unsaved = list(self._unsaved.values()), {}
        try:
            await self._create_instruments()
            self.stats.quote_rows += await self.store_quotes(batch)
            self.stats.quote_batches += 1
        except Exception:
            # Keep them for the next flush unless a newer price arrived meanwhile.
            log.exception("could not store %d quotes; retrying with the next batch", len(batch))
            for update in batch:
                self._unsaved.setdefault(update.symbol, update)

    async def _create_instruments(self) -> None:
        """Store the instruments `--create-instruments` made up since the last call, before anything refers to them."""
        if self.symbols is None or not self.symbols.new:
            return
        new = self.symbols.take_new()
        try:
            await database_sync_to_async(services.instruments_create)(symbols=new)
        except Exception:
            self.symbols.new.update(new)
            raise

    async def _check_tape(self) -> None:
        """Start or stop collecting events for the tape, as recorders come and go (asked at most once a second)."""
        now = time.monotonic()
        if not self.tape or now - self._tape_checked < TAPE_CHECK_SECONDS:
            return
        self._tape_checked = now
        try:
            listening = await streams.tape_wanted()
        except Exception:
            log.exception("could not ask Redis whether a recorder listens; not taping")
            listening = False
        if listening and self._taping is None:
            log.info("a recorder is listening: taping events")
            self._taping = []
        elif not listening and self._taping is not None:
            log.info("no recorder listening any more: taping stopped")
            self._taping = None

    async def _flush_tape(self) -> None:
        if self._taping:
            events, self._taping = self._taping, []
            try:
                self._tape_n += 1
                await streams.tape_append("".join(native.encode(e) + "\n" for e in events), epoch=self.hub.epoch, n=self._tape_n)
                self.stats.taped += len(events)
            except Exception:
                log.exception("could not tape %d events; the recording has a gap", len(events))
        await self._check_tape()
