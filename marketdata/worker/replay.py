"""Recorded files as a feed: merged in exchange-time order, cut to a time window, paced, looped, rebased.

`Replay` is a feed like any live one: the worker cannot tell the difference,
so a replayed session reaches browsers and bots exactly the way live data does.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from marketdata.events import MarketEvent, Trade

log = logging.getLogger(__name__)

# At --speed max, hand the event loop back this often so broadcasts and Ctrl-C are not starved.
YIELD_EVERY = 2_000
# A pause shorter than this is not slept: being a little early is cheaper than a timer per event.
MIN_SLEEP = 0.002
# Between the end of one pass of --loop and the start of the next, in recorded time.
LOOP_GAP = timedelta(seconds=1)


def _ts(event: MarketEvent) -> datetime:
    return event.ts


@dataclass
class ReplayStats:
    read: int = 0  # events read from the files, up to the end of the window
    before_window: int = 0  # of those, before --from
    passes: int = 0
    first: datetime | None = None  # recorded time of the first replayed event
    last: datetime | None = None


class Replay:
    name = "replay"

    def __init__(
        self,
        *,
        sources: Sequence[Iterable[MarketEvent]],
        speed: float | None = None,
        loop: bool = False,
        start: datetime | None = None,
        end: datetime | None = None,
        rebase: bool = False,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`sources` are iterables of events in time order, each iterable again for `loop`.
        `speed`: ×N recorded time, None for as fast as possible. `rebase`: shift the session so it starts now."""
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        if start is not None and end is not None and end <= start:
            raise ValueError("the end of the window must come after its start")
        self.sources = sources
        self.speed = speed
        self.loop = loop
        self.start = start
        self.end = end
        self.rebase = rebase
        self.now = now
        self.clock = clock
        self.sleep = sleep
        self.stats = ReplayStats()
        # While pacing: the (shifted) time of the event it sleeps for. Every earlier event has been handed out,
        # so a worker on event time may close the windows before it (`marketdata.worker.loop`).
        self.waiting_until: datetime | None = None

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        clock = self.clock or asyncio.get_running_loop().time
        stats = self.stats
        rebase = timedelta(0)  # added to every time with --rebase-time
        looped = timedelta(0)  # added on each further pass of --loop, so time keeps moving forward
        began = 0.0  # event-loop time of the first event
        end, start, speed = self.end, self.start, self.speed
        while True:
            stats.passes += 1
            first_of_pass: datetime | None = None
            last: datetime | None = None
            shift = rebase + looped
            # One file needs no merge (at --speed max the merge's per-event cost shows).
            merged = heapq.merge(*self.sources, key=_ts) if len(self.sources) != 1 else self.sources[0]
            for event in merged:
                if event.__class__ is Trade and event.backfill:
                    yield event  # from before the session: counted by the hub, never paced or windowed
                    continue
                ts = event.ts
                if end is not None and ts >= end:
                    break  # the merge is in time order: nothing later can be inside the window
                stats.read += 1
                if start is not None and ts < start:
                    stats.before_window += 1
                    continue
                if first_of_pass is None:
                    first_of_pass = ts
                if stats.first is None:
                    stats.first = ts
                    began = clock()
                    if self.rebase:
                        rebase = self.now() - ts
                        shift = rebase + looped
                stats.last = last = ts  # kept per event, so an interrupted replay still says how far it got
                if speed is not None:
                    delay = began + (ts + looped - stats.first).total_seconds() / speed - clock()
                    if delay >= MIN_SLEEP:
                        self.waiting_until = ts + shift
                        try:
                            await self.sleep(delay)
                        finally:
                            self.waiting_until = None
                elif stats.read % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                yield replace(event, ts=ts + shift) if shift else event
            if not self.loop or first_of_pass is None or last is None:
                return
            looped += last - first_of_pass + LOOP_GAP
            log.info("replay: pass %d done; starting again", stats.passes)
