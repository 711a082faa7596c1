"""Coalesced frames: one timer per process (per event loop and interval) for every connection it serves.

A portfolio book is revalued when a price arrives, but its frame waits: the connection
is marked dirty here, and at the next tick of the process's timer every dirty
connection is flushed once (`Flushable.flush`), however many prices it took meanwhile.
So a price costs a dictionary insert per connection, never a task, a timer or a frame
of its own; the timer runs only while some connection is dirty.

A connection that cannot take a frame now (its outbox is over its bound) answers
`flush() -> False` and stays dirty: its changes keep accumulating as the latest values,
and go out in one frame once it has caught up. Nothing is dropped on the way.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


class Flushable(Protocol):
    def flush(self) -> bool:
        """Send what changed since the last flush, as one frame; False to be flushed again at the next tick."""


@dataclass
class FlusherStats:
    ticks: int = 0  # timer firings
    flushes: int = 0  # connections flushed
    deferred: int = 0  # flushes put off because the connection was behind


class Flusher:
    """Flushes every connection marked since its last tick, `interval` seconds after the first mark."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stats = FlusherStats()
        self._dirty: dict[Flushable, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    def mark(self, target: Flushable) -> None:
        self._dirty[target] = None
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def discard(self, target: Flushable) -> None:
        self._dirty.pop(target, None)

    def __contains__(self, target: Flushable) -> bool:
        return target in self._dirty

    def _tick(self) -> None:
        self._timer = None
        dirty, self._dirty = self._dirty, {}
        self.stats.ticks += 1
        for target in dirty:
            try:
                done = target.flush()
            except Exception:
                log.exception("flushing %r failed; its next change is flushed as usual", target)
                continue
            if done:
                self.stats.flushes += 1
            else:
                self.stats.deferred += 1
                self.mark(target)


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Flusher]] = weakref.WeakKeyDictionary()


def flusher(interval: float) -> Flusher:
    """This event loop's flusher for `interval` seconds (one per distinct interval)."""
    by_interval = _flushers.setdefault(asyncio.get_running_loop(), {})
    found = by_interval.get(interval)
    if found is None:
        found = by_interval[interval] = Flusher(interval)
    return found
