"""Alerts in the feed worker: the index kept in memory, reloaded on change, firings written off the tick path.

A `PriceWatcher` of the worker (settings.MARKETDATA_PRICE_WATCHERS,
`marketdata.worker.loop`): `observe` gets each window's conflated prices — the
prices every dashboard is sent — and looks them up in the `AlertIndex`
(`portfolio.alerts`): no database, no task, no await; a crossing only goes
onto a queue. `run`, beside the worker's loop, does the rest:

- reload: once every ALERTS_CHECK_SECONDS it reads the alerts version (a Redis
  counter every alert change bumps after commit, `streams.alerts_changed_on_commit`);
  when it moved, it loads the active alerts (one query) and swaps the index in.
  The version is read before the rows, so a change committed meanwhile is seen
  at the next check.
- firing: each crossing is written through `services.alert_fire` /
  `alert_rearm` (conditional updates: a reload that read an alert before its
  firing was written fires it again in memory, and the database refuses the
  second one). The database down: retried with capped backoff, logged, never
  raised; the crossings wait in order.
- email: a fired alert with email on goes to `services.notification_email_send`
  in a thread, retried EMAIL_ATTEMPTS times with backoff, then logged and
  given up (the notification is recorded and was shown live either way).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async

from marketdata.delivery import streams
from marketdata.events import PriceUpdate
from marketdata.worker.outage import DATABASE_DOWN, REDIS_DOWN
from portfolio import selectors, services
from portfolio.alerts import AlertIndex, Crossing, Rule, portfolio_key
from portfolio.live import View, price_apply
from portfolio.selectors import Market, PortfolioBook

log = logging.getLogger(__name__)

ALERTS_CHECK_SECONDS = 1.0
RETRY_FIRST_SECONDS = 0.25
RETRY_CAP_SECONDS = 10.0
EMAIL_ATTEMPTS = 5
CLOSE_SECONDS = 10.0
OUTAGE = (*REDIS_DOWN, *DATABASE_DOWN)  # at the end of a run: how long queued firings get to be written


@dataclass
class AlertStats:
    reloads: int = 0
    fired: int = 0  # notifications recorded
    duplicates: int = 0  # firings the database refused (fired already, paused or deleted meanwhile)
    rearmed: int = 0
    emails: int = 0
    email_failures: int = 0  # emails given up after EMAIL_ATTEMPTS
    write_failures: int = 0  # failed attempts (each retried)


async def _load_rules() -> list[Rule]:
    return await database_sync_to_async(selectors.alert_rules_active)()


async def _load_portfolios(portfolio_ids: set[int]) -> tuple[list[PortfolioBook], Market]:
    return await database_sync_to_async(selectors.portfolio_views_load)(portfolio_ids=portfolio_ids)


PORTFOLIO_PREFIX = "@portfolio:"
# Rows left out of a total for these reasons make the total no measure of the portfolio: not evaluated then.
_NOT_VALUED = frozenset({"no_price", "no_rate"})


class PortfolioValues:
    """The portfolios that have alerts, revalued from the worker's own prices: per window, each portfolio a changed
    price touches gives its total value and day change (%) once — never per tick, never a query."""

    def __init__(self, books: list[PortfolioBook], market: Market) -> None:
        self.market = market
        self.views = [View(book, market) for book in books]
        self.by_symbol: dict[str, list[View]] = {}
        for view in self.views:
            for symbol in view.symbols:
                self.by_symbol.setdefault(symbol, []).append(view)

    def observe(self, updates: Sequence[PriceUpdate]) -> list[tuple[int, Decimal | None, Decimal | None, datetime]]:
        """(portfolio id, total value or None, day change % or None, time of the window's newest price) per touched portfolio."""
        touched: dict[int, View] = {}
        changed: set[str] = set()
        newest: datetime | None = None
        prices = self.market.prices
        by_symbol = self.by_symbol
        for update in updates:
            views = by_symbol.get(update.symbol)
            if views is not None and price_apply(prices, update):
                changed.add(update.symbol)
                newest = update.ts if newest is None or update.ts > newest else newest
                for view in views:
                    touched[int(view.id)] = view
        out = []
        for pid, view in touched.items():
            view.revalue(view.affected(changed))
            totals = view.totals()
            reasons = {reason for _, reason in totals.missing}
            value = None if reasons & _NOT_VALUED else totals.total_value
            day = None if reasons else totals.day_change_pct
            assert newest is not None
            out.append((pid, value, day, newest))
        return out


async def _fire(crossing: Crossing) -> int | None:
    """The notification's id when it was recorded and is to be emailed (0: recorded, no email); None: refused."""

    def fire() -> int | None:
        note = services.alert_fire(alert_id=crossing.alert_id, value=crossing.value, fired_at=crossing.ts)
        if note is None:
            return None
        return note.pk if note.alert is not None and note.alert.email else 0

    return await database_sync_to_async(fire)()


async def _rearm(crossing: Crossing) -> None:
    await database_sync_to_async(services.alert_rearm)(alert_id=crossing.alert_id)


async def _email(notification_id: int) -> bool:
    # Its own thread, not the database's one thread: a slow SMTP server must not hold up firings or minute hooks.
    return await sync_to_async(_email_sync, thread_sensitive=False)(notification_id)


def _email_sync(notification_id: int) -> bool:
    from django.db import close_old_connections

    try:
        return services.notification_email_send(notification_id=notification_id)
    finally:
        close_old_connections()


class AlertWatch:
    """The feed worker's alerts (one per worker run)."""

    def __init__(
        self,
        *,
        check_seconds: float = ALERTS_CHECK_SECONDS,
        load: Callable[[], Awaitable[list[Rule]]] = _load_rules,
        load_portfolios: Callable[[set[int]], Awaitable[tuple[list[PortfolioBook], Market]]] = _load_portfolios,
        version: Callable[[], Awaitable[str]] | None = None,
        fire: Callable[[Crossing], Awaitable[int | None]] = _fire,
        rearm: Callable[[Crossing], Awaitable[None]] = _rearm,
        email: Callable[[int], Awaitable[bool]] = _email,
        retry_first: float = RETRY_FIRST_SECONDS,
    ) -> None:
        self.check_seconds = check_seconds
        self.index = AlertIndex()
        self.portfolios: PortfolioValues | None = None  # the portfolios with alerts, while there are any
        self._load_portfolios = load_portfolios
        self.version: str | None = None
        self.loaded = asyncio.Event()
        self.stats = AlertStats()
        self._load, self._fire, self._rearm, self._email = load, fire, rearm, email
        self._version = version or self._read_version
        self._client: Any = None  # its own Redis client for the version (created on first use, in the worker's loop)
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._retry_first = retry_first
        self._crossings: asyncio.Queue[Crossing] = asyncio.Queue()
        self._emails: asyncio.Queue[int] = asyncio.Queue()
        self._complained_at = float("-inf")
        self._down = False  # in an outage of Redis or the database (logged once)

    # -- the tick path (once per window) -------------------------------------------------------

    def observe(self, updates: Sequence[PriceUpdate]) -> None:
        """A window's prices: the crossings they make go onto the queue (nothing else happens here)."""
        index = self.index
        if not index.symbols:
            return
        crossings = index.observe_updates(updates)
        portfolios = self.portfolios
        if portfolios is not None:
            for pid, value, day, ts in portfolios.observe(updates):
                if value is not None:
                    crossings.extend(index.observe(portfolio_key(pid, "value"), value, ts))
                if day is not None:
                    crossings.extend(index.observe(portfolio_key(pid, "day"), day, ts))
        for crossing in crossings:
            self._crossings.put_nowait(crossing)

    # -- beside the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.gather(self._watch(), self._write(), self._send())

    async def close(self) -> None:
        """The run ends: give the queued firings and emails CLOSE_SECONDS to be written and sent."""
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await self._crossings.join()
                await self._emails.join()
        except TimeoutError:
            log.error("alerts: %d firings and %d emails not written at shutdown", self._crossings.qsize(), self._emails.qsize())
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # closing only: nothing to do about it
                log.debug("alerts: closing the Redis client failed", exc_info=True)

    async def _read_version(self) -> str:
        target = streams.redis_target()
        loop = asyncio.get_running_loop()
        if target is not None and (self._client is None or self._client_loop is not loop):
            self._client, self._client_loop = streams.redis_client(target[0]), loop
        return await streams.alerts_version(self._client)

    async def reload_if_changed(self) -> bool:
        """Load the alerts again when their version moved; True when it did. Raises what Redis or the database raise."""
        version = await self._version()
        if version == self.version:
            return False
        rules = await self._load()
        ids = {int(rule.symbol.split(":")[1]) for rule in rules if rule.symbol.startswith(PORTFOLIO_PREFIX)}
        portfolios = PortfolioValues(*await self._load_portfolios(ids)) if ids else None
        # Swapped in together, between two windows (no await in between).
        self.index, self.portfolios = AlertIndex(rules), portfolios
        self.version = version
        self.stats.reloads += 1
        self.loaded.set()
        log.info("alerts: %d active alerts on %d symbols loaded (version %r)", len(rules), len(self.index.symbols), version)
        return True

    async def _watch(self) -> None:
        while True:
            try:
                await self.reload_if_changed()
                self._recovered()
            except OUTAGE as exc:
                # The worker logs the outage itself (`marketdata.worker.outage`): one line here, no traceback.
                self._outage(exc, "cannot reload the alerts")
            except Exception:
                self._complain("could not reload the alerts; evaluating the ones loaded before")
            await asyncio.sleep(self.check_seconds)

    async def _write(self) -> None:
        while True:
            crossing = await self._crossings.get()
            try:
                await self._retrying(partial(self._write_one, crossing), what=f"recording alert {crossing.alert_id}")
            finally:
                self._crossings.task_done()

    async def _write_one(self, crossing: Crossing) -> None:
        if not crossing.fired:
            await self._rearm(crossing)
            self.stats.rearmed += 1
            return
        emailed = await self._fire(crossing)
        if emailed is None:
            self.stats.duplicates += 1
            return
        self.stats.fired += 1
        if emailed:
            self._emails.put_nowait(emailed)

    async def _send(self) -> None:
        while True:
            notification_id = await self._emails.get()
            try:
                await self._send_one(notification_id)
            finally:
                self._emails.task_done()

    async def _send_one(self, notification_id: int) -> None:
        delay = self._retry_first
        for attempt in range(1, EMAIL_ATTEMPTS + 1):
            try:
                if await self._email(notification_id):
                    self.stats.emails += 1
                return
            except Exception as exc:
                log.warning("alerts: emailing notification %d failed (attempt %d of %d): %s", notification_id, attempt, EMAIL_ATTEMPTS, exc)
            if attempt < EMAIL_ATTEMPTS:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_CAP_SECONDS)
        self.stats.email_failures += 1
        log.error("alerts: gave up emailing notification %d after %d attempts", notification_id, EMAIL_ATTEMPTS)

    async def _retrying(self, write: Callable[[], Awaitable[None]], *, what: str) -> None:
        """Until it succeeds: a firing is recorded once the database is back (the queue keeps the order)."""
        delay = self._retry_first
        while True:
            try:
                await write()
                self._recovered()
                return
            except OUTAGE as exc:
                self.stats.write_failures += 1
                self._outage(exc, f"{what} failed; retrying")
            except Exception:
                self.stats.write_failures += 1
                self._complain(f"{what} failed; retrying in {delay:.2f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP_SECONDS)

    def _outage(self, exc: BaseException, what: str) -> None:
        """Redis or the database unreachable: a warning at the first failure of an outage, then quiet until it ends."""
        if not self._down:
            self._down = True
            log.warning("alerts: %s (%s: %s); trying again until it answers", what, type(exc).__name__, exc)

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.info("alerts: reading and writing alerts again")

    def _complain(self, message: str) -> None:
        """Logged with its traceback at most every 10 s (an outage is one story, not a line per retry)."""
        now = time.monotonic()
        if now - self._complained_at >= 10:
            self._complained_at = now
            log.exception("alerts: %s", message)
        else:
            log.warning("alerts: %s", message)
