"""A dependency of the worker (Redis, the database) as the worker sees it: up, or down and retried with capped backoff.

The worker never exits because Redis or the database went away. While one is down it
keeps applying events (its hub, books and candles stay current), tries again after
MARKETDATA_RETRY_SECONDS, doubling up to MARKETDATA_RETRY_MAX_SECONDS, and drops what it
could not deliver meanwhile, counted. One warning when the outage starts and one when it
ends (with how long it lasted and what was dropped): never a line per tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.exceptions
from django.db import InterfaceError, OperationalError

log = logging.getLogger(__name__)

# What "Redis is unreachable" looks like from redis-py (a refused or broken connection, a timeout, a server still loading).
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, TimeoutError, OSError)
# What "the database is unreachable" looks like through Django.
DATABASE_DOWN: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)


class Outage:
    """Whether a dependency is down, since when, when to try it again, and what was dropped meanwhile."""

    def __init__(self, name: str, *, first: float, cap: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.first = first
        self.cap = max(cap, first)
        self.clock = clock
        self.since: float | None = None  # when the current outage started (monotonic); None while up
        self.delay = first
        self.next_try = 0.0
        self.outages = 0  # outages over the run
        self.failures = 0  # failed tries over the run (config/metrics.py counts them)
        self.dropped = 0  # items dropped during the current outage
        self.dropped_total = 0  # over the run
        self.last_seconds = 0.0  # how long the last outage lasted

    @property
    def down(self) -> bool:
        return self.since is not None

    def due(self) -> bool:
        """Whether to try the dependency now: always while it is up; during an outage, once the backoff has passed."""
        return self.since is None or self.clock() >= self.next_try

    def failed(self, exc: BaseException, *, what: str) -> None:
        """A try failed: start the outage (one warning), or back off further."""
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since = now
            self.outages += 1
            self.dropped = 0
            self.delay = self.first
            log.warning(
                "%s is unreachable (%s: %s) while %s: retrying every %.2f s up to %.1f s; "
                "what cannot be delivered meanwhile is dropped and counted",
                self.name,
                type(exc).__name__,
                exc,
                what,
                self.first,
                self.cap,
            )
        else:
            self.delay = min(self.delay * 2, self.cap)
        self.next_try = now + self.delay

    def drop(self, count: int) -> None:
        """`count` items could not be delivered (during an outage, or the try that found it)."""
        self.dropped += count
        self.dropped_total += count

    def recovered(self) -> bool:
        """A try succeeded: end the outage (one warning). True when there was one."""
        if self.since is None:
            return False
        self.last_seconds = self.clock() - self.since
        log.warning("%s is back after %.1f s; %d items were dropped meanwhile", self.name, self.last_seconds, self.dropped)
        self.since = None
        self.delay = self.first
        return True
