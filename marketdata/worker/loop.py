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

Minutes are recorded in batches: the minutes that closed while the database was
busy with the previous batch (a replay closes them far faster than it can write)
are stored together, their candles in one call, a retention prune at most once,
and each hook called once with all of them (`MinuteHook`). Live, a minute a
minute, a batch is that one minute. On event time (a replay) at most
`MINUTE_BACKLOG` closed minutes wait: beyond that the replay waits for the
database, so a replay of months keeps no months of minutes in memory.

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

Windows follow the wall clock for a live feed and event time for a replay
(`event_time=True`). On event time a window is the interval [k·w, (k+1)·w) of
exchange time (w = the conflation): it closes, synchronously, when the first
event at or after its end arrives, or when the feed says it is waiting for such
an event (`Feed.waiting_until`, a paced replay between events). So what a
replay publishes depends on the file and the options only, never on the
machine's speed or load. Closed windows are built at once but published in
batches (every `PUBLISH_BATCH` messages, and at least every conflation interval
of wall time), the same messages in the same order, so a sparse session does
not pay a Redis round trip per event.

With `leases` (`marketdata.worker.leases`) the worker publishes a symbol only
while it holds that symbol's lease, taken when its first event arrives. A symbol
another producer holds is refused (`LeaseRefused` stops the run), or, for a
`standby` worker, its events are skipped and counted while the lease is retried
at every renewal and at the moment it ends unless renewed, so it takes over within
the lease TTL once the holder stops, dies or hangs. A lease lost
(taken over, or fenced off at the history) ends publishing of that symbol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from config.metrics import WorkerMetrics
from marketdata import groups, services
from marketdata.delivery import streams
from marketdata.delivery.history import Fenced, MarketStore, market_store
from marketdata.events import EPOCH, Candle, MarketEvent, PriceUpdate, Trade
from marketdata.feeds import Feed, native
from marketdata.symbols import SymbolMap
from marketdata.worker.hub import Hub
from marketdata.worker.leases import LeaseRefused, Leases
from marketdata.worker.market import MarketBuilder, Message
from marketdata.worker.outage import DATABASE_DOWN, REDIS_DOWN, Outage
from marketdata.worker.references import LOOKBACK, MARGIN, References, minute_of

log = logging.getLogger(__name__)

StoreQuotes = Callable[[Iterable[PriceUpdate]], Awaitable[int]]
StoreCandles = Callable[[Sequence[Candle]], Awaitable[int]]
PruneCandles = Callable[[datetime], Awaitable[int]]
# The closed minutes of one batch, oldest first: (minute, prices). `minute` is the closed minute's start (aware UTC),
# `prices` the latest update of every symbol seen this run, as of the end of that minute.
ClosedMinutes = Sequence[tuple[datetime, Mapping[str, PriceUpdate]]]
# `async def hook(minutes)`: called once per batch of closed minutes (one, live; many, in a fast replay).
MinuteHook = Callable[[ClosedMinutes], Awaitable[None]]


class PriceWatcher(Protocol):
    """Sees every window's prices (settings.MARKETDATA_PRICE_WATCHERS; `portfolio.alert_watch.AlertWatch`).

    `observe` runs on the tick path, synchronously, once per window with that window's updates: from memory
    only (no database, no await, no task); what it must write it queues for `run`, which runs beside the loop
    for the whole run and is cancelled at its end, after `close` had its chance to finish the queued work."""

    def observe(self, updates: Sequence[PriceUpdate]) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


PRUNE_EVERY = timedelta(hours=1)
# On event time, closed windows are published once this many messages are waiting (and on every wall-clock tick).
PUBLISH_BATCH = 2_000
# Closed minutes recorded (candles stored, hooks run) in one batch at most, and, on event time, waiting at most.
MINUTE_BATCH = 240
MINUTE_BACKLOG = 240
ONE_US = timedelta(microseconds=1)
# How often the worker asks Redis whether a recorder is listening.
TAPE_CHECK_SECONDS = 1.0
# A standby tries to take a lease this long after Redis said it would end (Redis expires keys to the millisecond).
LEASE_END_MARGIN = 0.01


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
    not_held: Counter[str] = field(default_factory=Counter)  # events skipped: another producer held the symbol
    lost: dict[str, str] = field(default_factory=dict)  # symbols whose lease was lost → who holds it now
    undelivered: int = 0  # market messages dropped because Redis was unreachable (live and history)
    restated: int = 0  # times every symbol was published afresh under a new epoch, once Redis was back
    windows: int = 0  # conflation windows closed
    lease_losses: int = 0  # leases lost to another producer
    lease_dropped: int = 0  # messages left unpublished when their symbol's lease was lost
    unstored_quotes: int = 0  # quote rows that could not be written when tried (kept and retried; the newest wins)
    symbols: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def faults(self, hub: Hub) -> str:
        """What the data itself got wrong, over the run: trade-id checks and order-book syncs ("none" when clean)."""
        checks = hub.checks
        books = hub.books.values()
        counts = {
            "duplicate trades (dropped)": checks.duplicates,
            f"trade id gaps ({checks.missing:,} ids missing)": checks.gaps,
            "trades out of order": checks.out_of_order,
            "backfill trades (left out)": checks.backfill,
            "book syncs lost": sum(book.losses for book in books),
            "book resyncs": sum(book.resyncs for book in books),
        }
        return ", ".join(f"{what} {count:,}" for what, count in counts.items() if count) or "none"

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        return (
            f"{self.events} events in {elapsed:.1f} s, {self.broadcasts} broadcasts across "
            f"{len(self.symbols)} symbols, {self.quote_rows} quotes written in {self.quote_batches} batches, "
            f"{self.candle_rows} candles"
            + "".join(f", {symbol}: {count} events skipped while another producer held it" for symbol, count in self.not_held.items())
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
        watchers: Sequence[PriceWatcher] = (),
        store_candles: StoreCandles | None = None,
        prune_candles: PruneCandles | None = None,
        retention: timedelta | None = None,
        replay: bool = False,
        symbols: SymbolMap | None = None,
        tape: bool = True,
        market_history: MarketStore | None = None,
        event_time: bool = False,
        leases: Leases | None = None,
        takeover: bool = False,
        standby: bool = False,
        session: str = "",
    ) -> None:
        """`retention`: candles older than this (in event time) are deleted, hourly; None keeps them.
        `replay`: updates are marked as replayed. `symbols`: instruments it creates (--create-instruments)
        are stored before any quote or candle of theirs. `tape`: feed a listening `record_feed`.
        `market_history`: the market channels' store (default `market_store()`).
        `watchers`: see every window's prices (`PriceWatcher`).
        `event_time`: windows on event time (replays), not the wall clock (live feeds).
        `leases`: publish a symbol only while holding its lease; `takeover` takes leases others hold,
        `standby` waits for them instead of stopping with LeaseRefused.
        `session`: publish on that replay session's channels (`ticker:SYM?session=NAME`, ...) and streams, not the
        live ones (the stores, hooks and tape are the caller's to turn off: `management.base.worker_build`)."""
        self.feed = feed
        self.conflation = conflation
        self.event_time = event_time
        self._window_us = max(1, round(conflation * 1_000_000))
        self._window_end: datetime | None = None  # on event time: the end of the open window
        self._unpublished: dict[str, list[Message]] = {}  # closed windows' messages not yet published, per symbol
        self._unpublished_n = 0
        self._publishing = asyncio.Lock()  # publishes go out one at a time, in the order their windows closed
        self.leases = leases
        self.takeover = takeover
        self.standby = standby
        self._held: set[str] = set()  # symbols whose lease this worker holds
        self._waiting: dict[str, str] = {}  # symbols another producer holds → who (standby retries them)
        self._keys: dict[str, str] = {}  # symbol → its lease key (`groups.market_key`), and back
        self._symbols: dict[str, str] = {}
        self.quote_flush = quote_flush
        self.references = references if references is not None else References()
        self.hub = Hub(epoch=epoch or new_epoch(), references=self.references, replay=replay)
        self.market = MarketBuilder(epoch=self.hub.epoch, session=session)
        self._market_history = market_history
        self.store_quotes = store_quotes or database_sync_to_async(services.quotes_store)
        self.minute_hooks = list(minute_hooks)
        self.watchers = list(watchers)
        self.store_candles = store_candles or _store_candles
        self.prune_candles = prune_candles or _prune_candles
        self.retention = retention
        self.symbols = symbols
        self.tape = tape
        self._taping: list[MarketEvent] | None = None  # events for the tape while a recorder listens
        self._tape_checked = float("-inf")
        self._tape_n = 0
        self.stats = WorkerStats()
        # Prometheus (config/metrics.py), synced after each publish; `worker_build` names it after its command.
        self.metrics = WorkerMetrics("worker", per_symbol=not session)
        first, cap = float(settings.MARKETDATA_RETRY_SECONDS), float(settings.MARKETDATA_RETRY_MAX_SECONDS)
        self.redis_outage = Outage("Redis", first=first, cap=cap)
        self.db_outage = Outage("the database", first=first, cap=cap)
        self._renewing = asyncio.Lock()  # one lease renewal at a time (the renewal loop, and the return of Redis)
        self._refused = asyncio.Event()  # set when a standby is refused a symbol for the first time (`_keep_leases`)
        self._unsaved: dict[str, PriceUpdate] = {}
        self._last_flush = time.monotonic()
        self._outbox: list[PriceUpdate] = []  # drained, not yet published
        self._latest: dict[str, PriceUpdate] = {}
        self._minute: datetime | None = None  # the open minute of event time
        self._minute_end: datetime | None = None
        self._closed: asyncio.Queue[_ClosedMinute | None] = asyncio.Queue()
        self._minutes_taken = asyncio.Event()  # set whenever the recorder takes a batch off `_closed`
        self._unsaved_candles: list[Candle] = []
        self._pruned_at: datetime | None = None

    async def run(self, stop: asyncio.Event) -> WorkerStats:
        """Run until `stop` is set or the feed ends; always flushes what it holds."""
        await self._check_tape()
        ingest = asyncio.create_task(self._ingest())
        minutes = asyncio.create_task(self._record_minutes())
        stopping = asyncio.create_task(stop.wait())
        keeping = asyncio.create_task(self._keep_leases()) if self.leases is not None else None
        watching = [asyncio.create_task(watcher.run()) for watcher in self.watchers]
        try:
            while not ingest.done() and not stop.is_set():
                await asyncio.wait({ingest, stopping}, timeout=self.conflation, return_when=asyncio.FIRST_COMPLETED)
                if self.event_time:
                    self._close_window_if_waiting()
                    await self._publish()
                else:
                    await self.flush_window()
            if ingest.done() and not ingest.cancelled() and ingest.exception():
                raise ingest.exception()  # type: ignore[misc]
        finally:
            tasks = [ingest, stopping] if keeping is None else [ingest, stopping, keeping]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
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
            for watcher in self.watchers:
                await watcher.close()
            for task in watching:
                task.cancel()
            await asyncio.gather(*watching, return_exceptions=True)
            if self.leases is not None:
                await self.leases.release()
            self.metrics.sync(self, force=True)
            self.metrics.stopped()
        return self.stats

    async def _ingest(self) -> None:
        event_time = self.event_time
        leased = self.leases is not None
        async for event in self.feed:
            if leased and event.symbol not in self._held and not await self._lease(event.symbol):
                self.stats.not_held[event.symbol] += 1
                continue
            if event.__class__ is Trade and event.backfill:
                self.hub.apply(event)  # from before the session: only counted, in no window or minute
                continue
            if event_time:
                if self._window_end is None:
                    self._window_end = self._window_after(event.ts)
                elif event.ts >= self._window_end:
                    self._close_window()
                    self._window_end = self._window_after(event.ts)
                    if self._unpublished_n >= PUBLISH_BATCH:
                        await self._publish()
            if self._minute_end is None or event.ts >= self._minute_end:
                if self._minute is not None:
                    self._close_minute(complete=True)
                    if event_time and self._closed.qsize() >= MINUTE_BACKLOG:
                        await self._wait_for_recorder()
                self._minute = minute_of(event.ts)
                self._minute_end = self._minute + timedelta(minutes=1)
            self.hub.apply(event)
            self.stats.events += 1
            if self._taping is not None:
                self._taping.append(event)

    # -- leases ------------------------------------------------------------------------------

    async def _lease(self, symbol: str) -> bool:
        """Take the lease of a symbol seen for the first time; False while another producer holds it (standby)."""
        assert self.leases is not None
        if symbol in self._waiting or symbol in self.stats.lost:
            return False
        key = self._key(symbol)
        if not self.redis_outage.due():
            return False  # Redis is down: the event is skipped (counted as not held) until the next try
        try:
            refused = await self.leases.acquire([key], takeover=self.takeover)
        except REDIS_DOWN as exc:
            self.redis_outage.failed(exc, what=f"taking the lease of {key}")
            return False
        if key in self.leases.tokens:
            self._held.add(symbol)
            return True
        if not self.standby:
            raise LeaseRefused(refused)
        self._waiting[symbol] = refused[key]
        self._refused.set()  # the lease keeper learns when this lease ends
        log.warning("%s is published by %s: standing by, and taking over when its lease ends", key, refused[key])
        return False

    def _key(self, symbol: str) -> str:
        """What a symbol is leased and published under: itself, or itself within the replay session."""
        key = self._keys.get(symbol)
        if key is None:
            key = self._keys[symbol] = groups.market_key(symbol, self.market.session)
            self._symbols[key] = symbol
        return key

    def _symbol(self, key: str) -> str:
        return self._symbols[key]

    async def _keep_leases(self) -> None:
        """Renew the leases every third of their TTL: notice the ones lost, and (standby) take the ones freed.

        A standby also wakes when a lease it waits for ends unless its holder renews it (`Leases.ending`, told by each
        refusal), so it takes over a holder that died or hangs within the TTL of that holder's last renewal, not up to a
        renewal period later."""
        leases = self.leases
        assert leases is not None
        period = leases.ttl / 3
        due = time.monotonic() + period  # the next renewal of the leases held
        while True:
            self._refused.clear()
            ending = leases.ending(map(self._key, self._waiting))
            wait = due - time.monotonic() if ending is None else min(due - time.monotonic(), ending + LEASE_END_MARGIN)
            try:
                await asyncio.wait_for(self._refused.wait(), max(0.0, wait))
                continue  # a symbol was refused meanwhile: when its holder's lease ends may come first
            except TimeoutError:
                pass
            try:
                await self._renew_leases()
                if not self._held:
                    # Nothing held, so nothing published that would notice Redis back (`_redis_back`): this renewal did.
                    self.redis_outage.recovered()
            except REDIS_DOWN as exc:
                leases.ends.clear()  # stale: tried again at the next renewal, not at once
                # Logged once per outage; the publishing side notices Redis back and renews before it publishes.
                self.redis_outage.failed(exc, what=f"renewing the leases of {len(self._held)} symbols")
            except Exception:
                leases.ends.clear()
                log.exception("could not renew the leases of %d symbols; retrying", len(self._held))
            due = time.monotonic() + period

    async def _renew_leases(self) -> None:
        """Renew every lease held. One that expired with nobody holding it (Redis restarted empty, or this worker could
        not renew in time) is taken again; one another producer holds now is given up (no double publishing)."""
        assert self.leases is not None
        async with self._renewing:
            for lost in await self.leases.renew():
                symbol = self._symbol(lost.key)
                if not lost.holder and not (await self.leases.acquire([lost.key])):
                    log.warning("the lease of %s had expired with nobody holding it: taken again", lost.key)
                    await self._regain(symbol)
                    continue
                self._lose(symbol, lost.holder or await self.leases.holder_of(lost.key) or "nobody (it expired)")
            if self._waiting:
                await self.leases.acquire([self._key(symbol) for symbol in self._waiting])
                for symbol in [s for s in self._waiting if self._key(s) in self.leases.tokens]:
                    await self._regain(symbol)  # still waiting meanwhile: its events are skipped until the new epoch is set
                    holder = self._waiting.pop(symbol)
                    log.warning(
                        "%s: the lease of %s ended; publishing it now (token %d, epoch %s)",
                        symbol,
                        holder,
                        self.leases.tokens[self._key(symbol)],
                        self.market.epoch_of(symbol),
                    )

    @property
    def held_symbols(self) -> frozenset[str]:
        """The symbols whose lease this worker holds."""
        return frozenset(self._held)

    def _store(self) -> MarketStore:
        if self._market_history is None:
            self._market_history = market_store()
        return self._market_history

    def _fresh_epoch(self, symbol: str, *, above: str = "") -> str:
        """A new epoch for a symbol's channels: now (ms), and above the one they had (and `above`), so that whoever
        compares epochs (a dashboard, `portfolio.live`) takes the new stream for the newer one, whatever its timestamps."""
        epoch = int(new_epoch())
        for before in (self.market.epoch_of(symbol), above):
            try:
                epoch = max(epoch, int(before) + 1)
            except ValueError:
                pass  # none, or an epoch given by the caller that is no number: now it is
        return str(epoch)

    async def _published_epoch(self, symbol: str) -> str:
        """The epoch the symbol's ticker was last published under, by whichever producer ("" when unknown)."""
        try:
            return (await self._store().head(self.market.names(symbol).ticker))[0]
        except Exception as exc:
            log.warning("could not read the epoch %s was last published under (%s); taking a new one from the clock", symbol, exc)
            return ""

    async def _regain(self, symbol: str) -> None:
        """Publish a symbol again (or for the first time) after another producer held it: its channels start over,
        under a new epoch above the other producer's (whose clock, on another machine, may be ahead of this one's)."""
        above = await self._published_epoch(symbol)
        self._store().forget(self.market.restart(symbol, epoch=self._fresh_epoch(symbol, above=above)))
        self._held.add(symbol)
        self.stats.lost.pop(symbol, None)

    def _lose(self, symbol: str, holder: str, *, in_flight: int = 0) -> None:
        """Stop publishing a symbol whose lease is gone; what it had not published yet is dropped and counted, with
        `in_flight` messages of a write that was fenced off. The renewal and a fenced write may both find the same
        loss (they run side by side): it is counted once."""
        dropped = self._unpublished.pop(symbol, [])
        self._unpublished_n -= len(dropped)
        count = len(dropped) + in_flight
        self.stats.lease_dropped += count
        if symbol not in self._held:
            if count:
                log.warning("%s: %d more messages dropped (its lease was lost)", symbol, count)
            return
        self._held.discard(symbol)
        # Its quote not stored yet, and its latest price, are older than what the new producer publishes: storing the
        # one, or valuing portfolios with the other (the minute hooks), would take the price back.
        self._unsaved.pop(symbol, None)
        self._latest.pop(symbol, None)
        self.stats.lost[symbol] = holder
        self.stats.lease_losses += 1
        if self.standby:
            self._waiting[symbol] = holder
        log.warning("lost the lease of %s to %s: no longer publishing it (%d messages dropped)", symbol, holder, count)

    # -- windows ------------------------------------------------------------------------------

    def _drain(self) -> None:
        updates = self.hub.drain()
        self._outbox.extend(updates)
        self._latest.update((u.symbol, u) for u in updates)
        for watcher in self.watchers:
            try:
                watcher.observe(updates)
            except Exception:
                log.exception("price watcher %s failed on %d updates", type(watcher).__qualname__, len(updates))

    def _close_minute(self, *, complete: bool) -> None:
        """Synchronous, so no tick of the next minute can slip in before the minute's prices are taken."""
        assert self._minute is not None
        # Drained first, so the updates the hooks get carry the minute's last prices.
        self._drain()
        candles = self.hub.take_minute(self._minute)
        if self.leases is not None:
            # A symbol lost since: its candle is the new producer's to store (this one's stops where the lease went).
            candles = [candle for candle in candles if candle.symbol in self._held]
        self.market.minute_closed(candles, self.hub, closed=complete)
        for candle in candles:
            self.references.observe(candle.symbol, candle.start, candle.close)
        self._closed.put_nowait(_ClosedMinute(self._minute, candles, MappingProxyType(dict(self._latest)), complete))

    async def _wait_for_recorder(self) -> None:
        """On event time, with MINUTE_BACKLOG closed minutes waiting: let the recorder take them before going on."""
        self._minutes_taken.clear()
        await self._minutes_taken.wait()

    async def _record_minutes(self) -> None:
        """Record the closed minutes in batches: all that closed while the previous batch was written (MINUTE_BATCH at most)."""
        while True:
            batch = [await self._closed.get()]
            while len(batch) < MINUTE_BATCH and not self._closed.empty():
                batch.append(self._closed.get_nowait())
            self._minutes_taken.set()
            last = batch[-1] is None  # the end: put after every minute
            closed = [c for c in batch if c is not None]
            if closed:
                await self._record(closed)
            if last:
                return

    async def _record(self, batch: Sequence[_ClosedMinute]) -> None:
        """Store a batch of minutes' candles in one call, prune old ones at most hourly, then run each hook once
        with the batch's complete minutes; nothing here raises."""
        minute = batch[-1].minute
        # Candles a failed write left behind go with this batch; those older than a restart could need are dropped.
        oldest = minute - LOOKBACK - MARGIN
        candles = [c for c in self._unsaved_candles if c.start >= oldest]
        for closed in batch:
            candles.extend(closed.candles)
        self._unsaved_candles = []
        if candles:
            try:
                await self._create_instruments()
                self.stats.candle_rows += await self.store_candles(candles)
            except DATABASE_DOWN as exc:
                self.db_outage.failed(exc, what=f"storing {len(candles)} candles")
                self._unsaved_candles = candles
            except Exception:
                log.exception("could not store %d candles; retrying with the next minute", len(candles))
                self._unsaved_candles = candles
        if self.retention is not None and (self._pruned_at is None or minute - self._pruned_at >= PRUNE_EVERY):
            self._pruned_at = minute
            try:
                await self.prune_candles(minute - self.retention)
            except Exception:
                log.exception("could not delete candles older than %s", minute - self.retention)
        minutes = [(closed.minute, closed.prices) for closed in batch if closed.complete]
        if not minutes:
            return
        for hook in self.minute_hooks:
            try:
                await hook(minutes)
            except DATABASE_DOWN as exc:
                self.db_outage.failed(exc, what=f"running {getattr(hook, '__qualname__', hook)} for {len(minutes)} minute(s)")
            except Exception:
                log.exception(
                    "minute hook %s failed for %d minute(s) %s to %s",
                    getattr(hook, "__qualname__", hook),
                    len(minutes),
                    minutes[0][0].isoformat(),
                    minutes[-1][0].isoformat(),
                )
        self.stats.minutes += len(minutes)

    def _window_after(self, ts: datetime) -> datetime:
        """The end of the event-time window holding `ts`: the next multiple of the conflation since the epoch."""
        us = (ts - EPOCH) // ONE_US
        return EPOCH + ONE_US * ((us // self._window_us + 1) * self._window_us)

    def _close_window_if_waiting(self) -> None:
        """On event time: close the open window once the feed waits for an event past its end (nothing more can come)."""
        waiting = getattr(self.feed, "waiting_until", None)
        if self._window_end is not None and waiting is not None and waiting >= self._window_end:
            self._close_window()
            self._window_end = None

    def _close_window(self) -> None:
        """Drain the hub and build the window's messages; synchronous, so no event can slip in between."""
        self._drain()
        batch, self._outbox = self._outbox, []
        self.stats.windows += 1
        window = self.market.build(self.hub, batch, minute=self._minute)
        # With leases: a symbol whose lease was lost since its events were applied is the new producer's to publish and
        # store; what this window holds of it is dropped (and counted).
        held = None if self.leases is None else self._held
        for update in batch:
            if held is not None and update.symbol not in held:
                continue
            self.stats.broadcasts += 1
            self.stats.symbols.add(update.symbol)
            self._unsaved[update.symbol] = update
        for symbol, messages in window.items():
            if held is not None and symbol not in held:
                self.stats.lease_dropped += len(messages)
                continue
            self._unpublished.setdefault(symbol, []).extend(messages)
            self._unpublished_n += len(messages)

    async def _publish(self) -> None:
        """Publish the closed windows' messages, tape their events, and store quotes when due."""
        async with self._publishing:
            await self._flush_tape()
            window, self._unpublished, self._unpublished_n = self._unpublished, {}, 0
            if window:
                started = time.perf_counter()
                await self._publish_market(window)
                self.metrics.publish_took(time.perf_counter() - started)
            if time.monotonic() - self._last_flush >= self.quote_flush:
                await self.flush_quotes()
            self.metrics.sync(self)

    async def flush_window(self) -> None:
        """End of a conflation window: publish one ticker (a price) per changed symbol, and tape its events."""
        self._close_window()
        await self._publish()

    async def _publish_market(self, window: dict[str, list[Message]]) -> None:
        """History first (one write for the window), then live: one payload per symbol, one round trip.

        With leases the history write is fenced: symbols another producer took over are dropped from the window.
        Redis unreachable: the window is dropped and counted, and tried again with capped backoff; once Redis is back
        every symbol is published afresh under a new epoch (`_redis_back`), so clients take a fresh snapshot."""
        outage = self.redis_outage
        if outage.down:
            if not outage.due() or not await self._redis_back():
                self._undelivered(window)
                return
            window = self._restate()
        try:
            await self._publish_window(window)
        except REDIS_DOWN as exc:
            outage.failed(exc, what=f"publishing {sum(map(len, window.values()))} market messages")
            self._undelivered(window)

    def _undelivered(self, window: Mapping[str, Sequence[Message]]) -> None:
        count = sum(map(len, window.values()))
        self.stats.undelivered += count
        self.redis_outage.drop(count)

    async def _redis_back(self) -> bool:
        """During an outage: whether Redis answers again (and the leases are renewed, or given up, before publishing)."""
        try:
            await streams.redis_ping()
            if self.leases is not None:
                await self._renew_leases()
        except REDIS_DOWN as exc:
            self.redis_outage.failed(exc, what="trying it again")
            return False
        self.redis_outage.recovered()
        return True

    def _restate(self) -> dict[str, list[Message]]:
        """Redis is back: every symbol this worker publishes starts over under a new epoch with its whole state (price,
        open candle, book), replacing what was dropped, so no client is left with a silent gap."""
        store = self._store()
        window: dict[str, list[Message]] = {}
        for symbol, update in self._latest.items():
            if self.leases is not None and symbol not in self._held:
                continue
            store.forget(self.market.restart(symbol, epoch=self._fresh_epoch(symbol)))
            window[symbol] = self.market.restate(self.hub, update, minute=self._minute)
        self.stats.restated += 1
        log.warning("publishing %d symbols afresh under new epochs after the Redis outage", len(window))
        return window

    async def _publish_window(self, window: dict[str, list[Message]]) -> None:
        store = self._store()
        leases = self.leases
        while True:
            if leases is not None:
                window = {symbol: messages for symbol, messages in window.items() if self._key(symbol) in leases.tokens}
            messages = [message for symbol_messages in window.values() for message in symbol_messages]
            try:
                await store.append(messages, fence=None if leases is None else leases.fence(map(self._key, window)))
            except Fenced as fenced:
                assert leases is not None
                leases.forget(fenced.keys)
                for key in fenced.keys:
                    symbol = self._symbol(key)
                    holder = await leases.holder_of(key) or "a producer whose lease has ended"
                    self._lose(symbol, holder, in_flight=len(window.get(symbol, ())))
                continue  # write the rest: each round drops at least one symbol
            except REDIS_DOWN:
                raise  # Redis is down: publishing would fail too
            except Exception:
                self.stats.market_store_errors += 1
                log.exception("could not write %d market messages to the history; publishing them all the same", len(messages))
            break
        if window:
            fences = None if leases is None else {symbol: leases.tokens[self._key(symbol)] for symbol in window}
            await streams.publish_market_window(window, fences, session=self.market.session)
            self.stats.market_messages += len(messages)
            self.metrics.published(window)

    async def flush_quotes(self) -> None:
        """Write the latest quote of every symbol that changed; the database down: kept (the newest per symbol), and
        tried again with capped backoff."""
        self._last_flush = time.monotonic()
        if not self._unsaved or not self.db_outage.due():
            return
        batch, self._unsaved = list(self._unsaved.values()), {}
        try:
            await self._create_instruments()
            self.stats.quote_rows += await self.store_quotes(batch)
            self.stats.quote_batches += 1
            self.db_outage.recovered()
        except Exception as exc:
            # Keep them for the next flush unless a newer price arrived meanwhile.
            self.stats.unstored_quotes += len(batch)
            if isinstance(exc, DATABASE_DOWN):
                self.db_outage.failed(exc, what=f"storing {len(batch)} quotes")
            else:
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
        if self.redis_outage.down:
            listening = False  # asked again once Redis is back
        else:
            try:
                listening = await streams.tape_wanted()
            except REDIS_DOWN as exc:
                self.redis_outage.failed(exc, what="asking whether a recorder listens")
                listening = False
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
            except REDIS_DOWN as exc:
                self.redis_outage.failed(exc, what=f"taping {len(events)} events (the recording has a gap)")
            except Exception:
                log.exception("could not tape %d events; the recording has a gap", len(events))
        await self._check_tape()
