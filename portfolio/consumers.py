"""`/ws/portfolio/`: the logged-in user's portfolios, revalued live.

A protocol adapter: loads the user's books once (and again after a ledger change,
announced on the user's channel-layer group), and follows the `ticker:SYM`
channels of the held symbols and the FX pairs they convert through on its
process's hub (`marketdata.delivery.fanout`), like every other socket. The hub
decodes each ticker's price once per process and hands it to every dashboard
that holds the symbol; the dashboard revalues the rows it touches and marks
itself dirty with its process's flusher (`marketdata.delivery.flusher`), which
sends every dirty dashboard one frame per coalescing window
(PORTFOLIO_COALESCE_MS). No database access, channel-layer message, thread hop,
task or frame per price.

Nothing is lost silently: prices are latest values, so a dashboard that is
behind (its outbox over MARKET_WS_SEND_BUFFER_BYTES) just waits, and its next
frame carries every row that changed meanwhile; one that stays behind for
MARKET_WS_SLOW_SECONDS is closed with 4408 and gets a snapshot when it
reconnects. When the hub lost its Redis connection, the newest prices are read
from the history and the dashboard gets a fresh snapshot.

Every task a dashboard starts is its own (`_spawn`), cancelled on every way out:
`disconnect`, or the server cancelling the application (daphne does when it ran past
`--application-close-timeout`), which `__call__` catches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from config import metrics
from marketdata.delivery import history, outbox, streams
from marketdata.delivery.fanout import Update, encode_frame
from marketdata.delivery.flusher import flusher
from marketdata.delivery.outage import ClosesOnOutage
from portfolio import selectors
from portfolio.live import Frame, LiveBook
from portfolio.selectors import Market, PortfolioBook
from portfolio.watchlist import LiveWatchlist

log = logging.getLogger(__name__)

CLOSE_NOT_AUTHENTICATED = 4401
CLOSE_SLOW_CONSUMER = 4408
# Leaving the user's group after the server cancelled a dashboard gets this long.
DETACHED_CLEANUP_SECONDS = 10.0


def ticker_channels(symbols: Iterable[str]) -> set[str]:
    """The hub channels that carry these symbols' prices."""
    return {f"ticker:{symbol}" for symbol in symbols}


class LivePortfolios:
    """A user's portfolios as one LiveBook, loaded and reloaded from the database: all of them, or one.

    Shared by `/ws/portfolio/` (all of them) and the `portfolio` / `portfolio:ID`
    channels of `/ws/v1/market` (`marketdata.api.consumer`).
    """

    def __init__(self, user: Any, book: LiveBook, portfolio_id: int | None = None) -> None:
        self.user = user
        self.book = book
        self.portfolio_id = portfolio_id

    @classmethod
    async def open(cls, user: Any, portfolio_id: int | None = None) -> LivePortfolios | None:
        """The user's portfolios (or the one with `portfolio_id`); None when that one is not the user's."""
        books, market = await cls._load(user, portfolio_id)
        if portfolio_id is not None and not books:
            return None
        return cls(user, LiveBook(books, market), portfolio_id)

    async def reload(self) -> None:
        """After a ledger change: fresh books, keeping the newer prices (a deleted portfolio leaves the book empty)."""
        self.book.replace(*await self._load(self.user, self.portfolio_id))

    @staticmethod
    async def _load(user: Any, portfolio_id: int | None) -> tuple[list[PortfolioBook], Market]:
        # One portfolio (`portfolio:ID`) has no combined view: its loader reads no other ledger.
        return await database_sync_to_async(selectors.live_books_for_user)(user=user, portfolio_id=portfolio_id)


class PortfolioConsumer(ClosesOnOutage, AsyncWebsocketConsumer):
    """One dashboard: a sink of its process's hub (`fanout.Sink`) and a client of its flusher (`flusher.Flushable`)."""

    live: LivePortfolios
    book: LiveBook
    endpoint = "portfolio"  # what its frames, subscriptions and closes are counted under (config/metrics.py)
    watchlist: LiveWatchlist
    _outbox: outbox.Outbox | None = None
    _tickers: frozenset[str] = frozenset()  # the hub channels followed
    _closing: bool = False
    _in_group: bool = False  # in the user's group (ledger changes), to leave on disconnect

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            log.warning("dashboard of %s was cancelled by the server before it closed: stopping its tasks", getattr(self, "user", None))
            raise
        finally:
            # Whichever way it ends: after `disconnect` this finds nothing left; after the server cancelled the
            # application, nothing else would take it out of the hub, the flusher and the user's group.
            self._stop()
            if self._outbox is not None:
                self._outbox.abandon()
            if self._in_group:
                outbox.close_detached(self._leave_group_within(DETACHED_CLEANUP_SECONDS))

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels (4.2+) hops to its one database thread before every message, to close stale database connections.
        # A client frame needs no database here (what does goes through database_sync_to_async, which closes them
        # itself), and under a flood of frames those hops queue behind each other in that one thread: the server's
        # queue of frames for the connection grows, and its close waits behind them past the close timeout.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def _leave_group_within(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._leave_group()
        except TimeoutError:
            log.error("dashboard of %s: leaving the user's group did not finish in %s s", self.user, seconds)

    async def _leave_group(self) -> None:
        if self._in_group:
            await streams.unsubscribe_user(self.channel_name, self.user.pk)
            self._in_group = False

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        if self.user is None or not self.user.is_authenticated:
            # Accept first so the browser sees the reason (a refused handshake is only 1006).
            await self.accept()
            await self.close(code=CLOSE_NOT_AUTHENTICATED)
            metrics.ws_closed(self.endpoint, "auth_failed")
            return
        self._tasks: set[asyncio.Task[None]] = set()
        self._lost: set[str] = set()  # symbols whose prices the hub may have lost, for the pending resync
        self._flusher = flusher(settings.PORTFOLIO_COALESCE_MS / 1000)
        # The user's group before the ledger is read, so no change between the two goes unseen.
        await streams.subscribe_user(self.channel_name, self.user.pk)
        self._in_group = True
        live = await LivePortfolios.open(self.user)
        assert live is not None  # all of a user's portfolios: never refused
        self.live, self.book = live, live.book
        self.watchlist = await self._load_watchlist()
        await self._follow()
        await self.accept()
        self._outbox = outbox.for_socket(self.base_send, close=self._close_socket, on_slow=self._slow, endpoint=self.endpoint)
        self._put(self._snapshot())

    async def disconnect(self, code: int) -> None:
        self._stop()
        if self._outbox is not None:
            self._outbox.abandon()
        await self._leave_group()

    def _stop(self) -> None:
        """No more frames: out of the hub and the flusher, background work cancelled."""
        self._closing = True
        streams.unsubscribe_market(self, self._tickers)
        self._tickers = frozenset()
        if hasattr(self, "_flusher"):
            self._flusher.discard(self)
        for task in list(getattr(self, "_tasks", ())):
            if task is not asyncio.current_task():
                task.cancel()

    # -- prices ----------------------------------------------------------------------------

    async def _follow(self) -> None:
        """Follow exactly the prices the book needs: subscribe first, then take the newest price of each new symbol,
        so none published in between is missed (a price seen twice is dropped by the book)."""
        wanted = frozenset(ticker_channels(self.book.symbols | self.watchlist.symbols))
        old, self._tickers = self._tickers, wanted
        streams.unsubscribe_market(self, old - wanted)
        added = wanted - old
        if added:
            await streams.subscribe_market(self, added)
            for price in await history.latest_prices(channel.partition(":")[2] for channel in added):
                self.book.apply(price)
                self.watchlist.apply(price)

    def deliver(self, update: Update) -> None:
        """A live ticker of a held symbol (the hub decoded its price once for every dashboard)."""
        try:
            price = update.price
        except ValueError:
            log.warning("dashboard: dropped a malformed ticker: %.200r", update.message)
            return
        # Both, always: a symbol may be held and watched.
        if (self.book.apply(price) | self.watchlist.apply(price)) and not self._closing:
            self._flusher.mark(self)

    def missed(self, channels: Sequence[str]) -> None:
        """The hub may have lost prices of these channels: read the newest from the history, then send a fresh snapshot.

        The hub tells each symbol as Redis confirms it again: symbols told while a read is
        pending join it, so a reconnect costs one snapshot, not one per symbol."""
        if self._closing:
            return
        pending = bool(self._lost)
        self._lost.update(channel.partition(":")[2] for channel in channels)
        if not pending:
            self._spawn(self._resync())

    async def _resync(self) -> None:
        await asyncio.sleep(0)  # let the other symbols of this reconnect join
        symbols, self._lost = list(self._lost), set()
        try:
            for price in await history.latest_prices(symbols, cached=False):
                self.book.apply(price)
                self.watchlist.apply(price)
        except Exception:
            log.exception("dashboard: could not read the newest prices after a lost connection; sending what it holds")
        self._put(self._snapshot())

    def flush(self) -> bool:
        """The flusher's tick: the rows changed since the last frame, with fresh totals, as one frame."""
        box = self._outbox
        if box is None or box.closed:
            return True  # not yet sent its snapshot (which will hold the changes), or going
        if box.behind:
            return False  # merged into a later frame once the socket catches up
        frame = self.book.take_changes()
        watched = self.watchlist.take_changes()
        if watched:
            frame = frame or {"type": "update", "portfolios": []}
            frame["watchlist"] = watched
        if frame is not None:
            box.put(encode_frame(frame))
        return True

    # -- requests and ledger changes -------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # A read-only stream: a client may only ping, or pick the combined view's currency.
        try:
            message = orjson.loads(text_data) if text_data is not None else None
        except orjson.JSONDecodeError as exc:
            self._put({"type": "error", "code": "bad_json", "message": f"Frame is not JSON: {exc}."})
            return
        if not isinstance(message, dict):
            message = {}
        kind = message.get("type")
        if kind == "ping":
            self._put({"type": "pong"})
        elif kind == "view":
            await self._view(message.get("currency"))
        else:
            self._put(
                {"type": "error", "code": "unknown_message", "message": 'Send {"type": "ping"} or {"type": "view", "currency": "EUR"}.'}
            )

    async def _view(self, currency: object) -> None:
        if currency not in self.book.currencies:
            offered = ", ".join(self.book.currencies)
            self._put({"type": "error", "code": "unknown_currency", "message": f"Choose one of {offered}, not {currency!r}."})
            return
        self.book.set_currency(str(currency))
        await self._follow()
        self._put(self._snapshot())

    async def portfolio_reload(self, event: dict[str, Any]) -> None:
        """The ledger or the watchlist changed: both are read again (either change is rare)."""
        await self.live.reload()
        self.watchlist = await self._load_watchlist()
        await self._follow()
        self._put(self._snapshot())

    async def alert_fired(self, event: dict[str, Any]) -> None:
        """One of the user's alerts fired (recorded by the feed worker, `portfolio.services.alert_fire`)."""
        self._put({"type": "alert", "notification": event["notification"]})

    async def _load_watchlist(self) -> LiveWatchlist:
        instruments, prices = await database_sync_to_async(selectors.watchlist_live_load)(user=self.user)
        watchlist = LiveWatchlist.from_instruments(instruments, prices)
        # A symbol held as well was followed already: its live price is the book's (newer than the stored quote).
        watchlist.take_newer(self.book.market.prices)
        return watchlist

    def _snapshot(self) -> Frame:
        frame = self.book.snapshot()
        frame["watchlist"] = self.watchlist.snapshot()
        return frame

    # -- sending ---------------------------------------------------------------------------

    def _put(self, frame: Frame) -> None:
        if self._outbox is not None and not self._closing:
            self._outbox.put(encode_frame(frame))

    def _spawn(self, coroutine: Any) -> None:
        """A task of this dashboard's: cancelled when it goes (at once, when it is going already)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._closing:
            task.cancel()

    def _slow(self, reason: str) -> None:
        log.warning("dashboard of %s is a slow consumer (%s): closing it with %d", self.user, reason, CLOSE_SLOW_CONSUMER)
        self._stop()
        outbox.close_detached(self._close_socket(CLOSE_SLOW_CONSUMER))

    async def _close_socket(self, code: int) -> None:
        await self.close(code=code)
