"""`/ws/v1/market`: the market-data WebSocket API v1 (docs/websocket-api.md), the Channels side.

A thin adapter around the protocol session (`marketdata.api.session.Session`), which
holds the rules. This class does the I/O the session asks for: it accepts and closes
the socket, counts the user's connections, checks tokens and loads portfolio books
(the database), subscribes on the process's hub (`marketdata.delivery.fanout`: the
connection is one of its sinks, `deliver`/`missed`), reads the history
(`marketdata.delivery.history`: head, since, snapshot), and runs the timers
(heartbeat, throttles). Portfolio channels take their prices from the same hub: the
tickers of the held symbols, their prices decoded once per process.

To subscribe (or resume), the connection subscribes on the hub first (it returns once
Redis confirmed), then reads the history, so live messages arriving meanwhile wait in
the channel's buffer (the session's). A gap (a lost live message, a new epoch) is
filled from the history, or answered with a fresh snapshot when the history cannot
fill it; after the hub lost its Redis connection (`missed`) each live channel catches
up from the history at once.

Every frame goes out through the connection's outbox (`outbox.Outbox`), in order, so
nothing that produces frames — the hub least of all — waits for the socket. A
connection that stays behind is closed with 4408, and resyncs when it reconnects.

Inbound frames are checked for size and rate as they arrive, then handled one at a
time, in order, by the connection's worker task, so live updates keep flowing while a
subscribe waits on the history or the database. Nothing on the tick path queries the
database or leaves the event loop.

Bounded work (issue 13): at most MARKET_WS_MAX_QUEUED_REQUESTS requests wait per
connection (one more: `rate_limited`, closed with 4429); a `subscribe` naming a channel
held already is acked without a snapshot; anonymous connections take a slot per client
address and per process (config/capacity.py). Every task the connection starts is its
own (`_spawn`) and is cancelled on every way out: `disconnect`, or the server cancelling
the whole application (daphne does when it ran past `--application-close-timeout`), which
`__call__` catches to stop the tasks, leave the hub and undo the counts.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from config import capacity, lockout, metrics
from config.closecodes import CLOSE_TRY_AGAIN_LATER
from config.proxies import scope_client_address
from marketdata import services
from marketdata.api.channels import Channel, channel_parse
from marketdata.api.limits import Message, Request
from marketdata.api.session import (
    CLOSE_AUTH_FAILED,
    CLOSE_SLOW_CONSUMER,
    CLOSE_TOO_MANY_CONNECTIONS,
    SERVER_MESSAGE_TYPES,
    Frame,
    Limits,
    MarketSub,
    PortfolioSub,
    Refused,
    Session,
    Sub,
    now_ms,
)
from marketdata.delivery import history, outbox, streams
from marketdata.delivery.connections import connections
from marketdata.delivery.fanout import Update, encode_frame
from marketdata.delivery.history import market_store
from marketdata.delivery.outage import OUTAGE, ClosesOnOutage, clean_up_failed
from marketdata.models import Instrument
from marketdata.worker.outage import DATABASE_DOWN
from portfolio.consumers import LivePortfolios, ticker_channels

__all__ = ["SERVER_MESSAGE_TYPES", "MarketConsumer"]

log = logging.getLogger(__name__)

# daphne (autobahn) lets an application close only with 1000 or 3000-4999: 1009 is then sent as 4009.
CLOSE_MESSAGE_TOO_BIG_PRIVATE = 4009
# Clean-up left over when the server cancelled a connection (its counts in Redis, its group) gets this long.
DETACHED_CLEANUP_SECONDS = 10.0
# Attempts to close a gap from the history before settling on the latest snapshot.
RESYNC_ATTEMPTS = 4

Job = Callable[[], Awaitable[None]]


def _instrument_symbols() -> frozenset[str]:
    return frozenset(Instrument.objects.values_list("symbol", flat=True))


def _token_user(plaintext: Any) -> Any:
    return services.token_authenticate(plaintext=plaintext)


def limits_from_settings() -> Limits:
    return Limits(
        subscriptions=settings.MARKET_WS_MAX_SUBSCRIPTIONS,
        messages_per_second=settings.MARKET_WS_MESSAGES_PER_SECOND,
        burst=settings.MARKET_WS_BURST,
        message_bytes=settings.MARKET_WS_MAX_MESSAGE_BYTES,
        connections_per_user=settings.MARKET_WS_CONNECTIONS_PER_USER,
        heartbeat_seconds=float(settings.MARKET_WS_HEARTBEAT_SECONDS),
        anonymous=settings.MARKET_WS_ANONYMOUS,
    )


class MarketConsumer(ClosesOnOutage, AsyncWebsocketConsumer):
    """One `/ws/v1/market` connection; also a sink of its process's market hub (`fanout.Sink`)."""

    session: Session
    endpoint = "market"  # what its frames, subscriptions and closes are counted under (config/metrics.py)
    _closing: bool = False
    _counted: bool = False
    _tasks: set[asyncio.Task[None]] = frozenset()  # type: ignore[assignment]  # until connect makes the set
    _outbox: outbox.Outbox | None = None
    _anonymous: capacity.AnonymousSlot | None = None
    _reload_queued: bool = False
    _left: bool = False  # `disconnect` has run to its end
    connection_id: str = ""

    # -- lifecycle -------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except asyncio.CancelledError:
            if not self._left:
                log.warning("market connection %s was cancelled by the server before it closed: stopping its tasks", self._id)
            raise
        finally:
            # Whichever way the connection ends: `disconnect` has run, or the server cancelled the application
            # (daphne, past its application close timeout) and nothing else would stop what this connection started.
            self._release()

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels (4.2+) hops to its one database thread before every message, to close stale database connections.
        # A client frame needs no database here (what does goes through database_sync_to_async, which closes them
        # itself), and under a flood of frames those hops queue behind each other in that one thread: the server's
        # queue of frames for the connection grows, and its close waits behind them past the close timeout.
        if message["type"] == "websocket.receive":
            await self.websocket_receive(message)
        else:
            await super().dispatch(message)

    async def connect(self) -> None:
        self.connection_id = uuid.uuid4().hex[:16]
        user = self.scope.get("user")
        self._market_channels: set[str] = set()  # held on the hub: market subscriptions and the portfolio books' tickers
        self._price_channels: frozenset[str] = frozenset()  # the tickers the portfolio books need
        self._user_group: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        if (user is None or not user.is_authenticated) and not await self._admit_anonymous():
            return
        symbols = await database_sync_to_async(_instrument_symbols)()
        await self.accept()
        box = self._outbox = outbox.for_socket(self.base_send, close=self._close_socket, on_slow=self._slow, endpoint=self.endpoint)
        self.session = Session(
            send=box.put,
            limits=limits_from_settings(),
            symbols=symbols,
            connection_id=self.connection_id,
            user=user if user is not None and user.is_authenticated else None,
            behind=lambda: box.behind,
            throttle_timer=self._throttle_timer,
        )
        # Counted (and refused) before `hello`: a client that has its hello is already in the count.
        if self.session.user is not None and not await self._count_connection(self.session.user, None):
            return
        self.session.hello()
        self._spawn(self._work())
        self._spawn(self._heartbeat())

    async def disconnect(self, code: int) -> None:
        self._release(detach=False)
        await self._leave()
        self._left = True

    def _release(self, *, detach: bool = True) -> None:
        """Stop everything this connection started, at once (no waiting): its tasks, its outbox, its channels on
        the hub, its anonymous slot. What needs Redis (leaving the user's group, uncounting the connection) is left
        to `_leave`; with `detach`, `_leave` runs in a task of its own, as the connection's own are being cancelled."""
        self._closing = True
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        if self._outbox is not None:
            self._outbox.abandon()
        if self._anonymous is not None:
            self._anonymous.release()
        if not hasattr(self, "session"):
            return
        self.session.closed = True
        self.session.uninstall(list(self.session.subs.values()))
        market, self._market_channels = self._market_channels, set()
        streams.unsubscribe_market(self, market)
        if detach and not self._left and (self._user_group is not None or self._counted):
            outbox.close_detached(self._leave_within(DETACHED_CLEANUP_SECONDS))

    async def _leave_within(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._leave()
        except TimeoutError:
            log.error("market connection %s: clean-up did not finish in %s s", self.connection_id, seconds)

    async def _leave(self) -> None:
        """Out of the user's group and the user's connection count (both in Redis); each step done once."""
        if not hasattr(self, "session"):
            return
        try:
            await self._sync_groups()
        except OUTAGE as exc:  # a lost channel layer must not stop the rest of the clean-up
            clean_up_failed(f"leaving the groups of {self.channel_name}", exc)
        except Exception:
            log.exception("leaving the groups of %s", self.channel_name)
        if self._counted and self.session.user is not None:
            try:
                await connections().remove(self.session.user.pk, self.connection_id)
                self._counted = False
            except OUTAGE as exc:
                clean_up_failed(f"uncounting connection {self.connection_id}", exc)
            except Exception:
                log.exception("uncounting connection %s", self.connection_id)

    @property
    def _id(self) -> str:
        return self.connection_id or "(not yet connected)"

    @property
    def _connection_ttl(self) -> float:
        # Three missed heartbeats, and the entry of a connection whose process died has expired.
        return 3 * self.session.limits.heartbeat_seconds + 5

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        """A task of this connection's: cancelled when it goes (at once, when it is going already)."""
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._closing:
            task.cancel()
        return task

    def _stop(self) -> None:
        """Stop producing frames: no more requests, heartbeats, throttle timers or live messages."""
        self._closing = True
        self.session.closed = True
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for sub in self.session.subs.values():
            sub.cancel()
        # Out of the hub at once, so it hands nothing more to a connection that is going.
        market, self._market_channels = self._market_channels, set()
        streams.unsubscribe_market(self, market)

    def _close(self, code: int) -> None:
        """Close with `code` once the frames queued before it are sent."""
        if self._closing:
            return
        metrics.ws_closed_with(self.endpoint, code)
        self._stop()
        if self._outbox is not None:
            self._outbox.close(code)

    def _slow(self, reason: str) -> None:
        """The outbox found this connection slow (it has dropped its frames): close it with 4408."""
        log.warning("market connection %s is a slow consumer (%s): closing it with %d", self.connection_id, reason, CLOSE_SLOW_CONSUMER)
        self._stop()
        outbox.close_detached(self._close_socket(CLOSE_SLOW_CONSUMER))

    async def _close_socket(self, code: int) -> None:
        # daphne refuses 1009 from an application (only 1000, 1012, 1013 with config/closecodes.py, and 3000-4999): it goes out as 4009.
        await capacity.close_with(self.base_send, code)

    async def _admit_anonymous(self) -> bool:
        """Take an anonymous slot (per client address, per process); refused: accepted, told why, and closed."""
        address = scope_client_address(self.scope)
        slot = capacity.anonymous.admit(
            address, per_address=settings.MARKET_WS_ANONYMOUS_PER_ADDRESS, per_process=settings.MARKET_WS_ANONYMOUS_MAX
        )
        if isinstance(slot, capacity.AnonymousSlot):
            self._anonymous = slot
            return True
        if slot == "address":
            limit, code = settings.MARKET_WS_ANONYMOUS_PER_ADDRESS, CLOSE_TOO_MANY_CONNECTIONS
            message = f"{address} already has {limit} anonymous connections: authenticate, or close one first."
            capacity.refusals.note("anonymous address", f"{address} holds MARKET_WS_ANONYMOUS_PER_ADDRESS={limit}; closed with {code}")
            metrics.ws_closed(self.endpoint, "too_many_connections")
        else:
            limit, code = settings.MARKET_WS_ANONYMOUS_MAX, CLOSE_TRY_AGAIN_LATER
            message = f"The server holds its {limit} anonymous connections: try again later, or authenticate."
            capacity.refusals.note("anonymous process", f"MARKET_WS_ANONYMOUS_MAX={limit} reached; closed with {code}")
            metrics.ws_closed(self.endpoint, "capacity")
        self._closing = True
        await self.accept()
        await self.send(text_data=encode_frame({"type": "error", "code": "too_many_connections", "message": message}))
        await self._close_socket(code)
        return False

    # -- inbound ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closing:
            return
        admitted = self.session.admit(text_data, bytes_data, time.monotonic())
        if admitted is True and self._jobs.qsize() >= settings.MARKET_WS_MAX_QUEUED_REQUESTS:
            # Requests come faster than they are answered: a backlog would outlive the client, so it goes.
            admitted = self.session.queue_full(settings.MARKET_WS_MAX_QUEUED_REQUESTS, text_data)
        if admitted is True:
            self._jobs.put_nowait(lambda: self._handle(text_data, bytes_data))
        elif admitted is False:
            metrics.endpoint_tally(self.endpoint).dropped["rate_limited"] += 1
        else:
            self._close(admitted)

    async def _work(self) -> None:
        """Handles the connection's frames (and ledger reloads) one at a time, in order."""
        while not self._closing:
            job = await self._jobs.get()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("market connection %s", self.connection_id)
                self.session.error("server_error", "The server failed to handle this; try again.")

    async def _handle(self, text_data: str | None, bytes_data: bytes | None) -> None:
        request = self.session.parse(text_data, bytes_data)
        if request is None:
            return
        if request.batch is not None and self._outbox is not None and request.batch != self._outbox.batching:
            self._outbox.send_batch()  # what was joined so far goes out under the old choice
            self._outbox.batching = request.batch
        try:
            if request.op == "ping":
                self.session.reply(request, {"type": "pong"})
            elif request.op == "auth":
                await self._auth(request)
            elif request.op == "subscribe":
                await self._subscribe(request)
            elif request.op == "unsubscribe":
                names = self.session.unsubscribe(request)
                await self._sync_groups()
                self.session.reply(request, {"type": "unsubscribed", "channels": names})
            else:
                await self._resume(request)
        except Refused as exc:
            self.session.error(exc.code, exc.message, request.id)
        except asyncio.CancelledError:
            raise
        except OUTAGE as exc:
            # Redis or the database is down (or was, and this connection found out): try again later, on a new socket.
            log.warning(
                "%s on market connection %s: %s: %s; closing it with %d",
                request.op,
                self.connection_id,
                type(exc).__name__,
                exc,
                CLOSE_TRY_AGAIN_LATER,
            )
            self.session.error("server_error", f"The server failed to handle this {request.op}; try again.", request.id)
            self._close(CLOSE_TRY_AGAIN_LATER)
        except Exception:
            # Not the client's doing (the history or the database failed): the request was undone.
            log.exception("%s on market connection %s", request.op, self.connection_id)
            self.session.error("server_error", f"The server failed to handle this {request.op}; try again.", request.id)

    # -- auth ------------------------------------------------------------------------------

    async def _auth(self, request: Request) -> None:
        self.session.authenticating()
        # Under the login lockout (config/lockout.py): a bad token counts against the client's address.
        login = await database_sync_to_async(lockout.token_login)(scope=self.scope, plaintext=request.token, authenticate=_token_user)
        if login.locked_for is not None:
            self._close(self.session.auth_locked(request.id, login.locked_for))
            return
        user = login.user
        if user is None:
            self.session.error("auth_failed", "Unknown or revoked token.", request.id)
            self._close(CLOSE_AUTH_FAILED)
            return
        if not await self._count_connection(user, request.id):
            return
        if self._anonymous is not None:  # counted as the user's from now on
            self._anonymous.release()
        self.session.authenticated(request, user)

    async def _count_connection(self, user: Any, request_id: int | str | None) -> bool:
        """Count this connection against the user's limit; over it, say so and close (4409)."""
        registry = connections()
        count = await registry.add(user.pk, self.connection_id, self._connection_ttl)
        if count > self.session.limits.connections_per_user:
            await registry.remove(user.pk, self.connection_id)
            self._close(self.session.too_many_connections(user, request_id))
            return False
        self._counted = True
        return True

    # -- heartbeat -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.session.limits.heartbeat_seconds)
            self.session.heartbeat(now_ms())
            user = self.session.user
            if self._counted and user is not None:
                try:
                    await connections().renew(user.pk, self.connection_id, self._connection_ttl)
                except Exception:
                    log.exception("renewing connection %s", self.connection_id)

    # -- subscribe, resume -----------------------------------------------------------------

    async def _open_portfolios(self, channels: list[Channel], throttle_ms: int) -> dict[str, PortfolioSub]:
        """Load the portfolio channels' books; `forbidden` (refusing the request) when one is not the user's."""
        wanted = [channel for channel in channels if not channel.is_market]
        if not wanted:
            return {}
        # Join the user's group before reading the ledger, so no change between the two goes unseen.
        await self._join_user_group()
        interval = max(settings.PORTFOLIO_COALESCE_MS, throttle_ms) / 1000
        opened = {}
        for channel in wanted:
            live = await LivePortfolios.open(self.session.user, channel.portfolio_id)
            if live is None:
                await self._sync_groups()
                raise Refused("forbidden", f"{channel.name!r} is not one of your portfolios.")
            opened[channel.name] = PortfolioSub(channel, live, interval, self.session.flush_portfolio)
        return opened

    async def _install(self, request: Request, *, keep_held: bool = False) -> tuple[list[Sub], list[Sub]]:
        """The request's channels installed (new subscriptions), and with `keep_held` those held already, kept as they are."""
        channels = self.session.channels(request.channels)
        held = self.session.held(channels) if keep_held else []
        if held:
            names = {sub.name for sub in held}
            channels = [channel for channel in channels if channel.name not in names]
        portfolios = await self._open_portfolios(channels, request.throttle_ms)
        for sub in held:
            self._rethrottle(sub, request.throttle_ms)
        return self.session.install(channels, portfolios, request.throttle_ms), held

    def _rethrottle(self, sub: Sub, throttle_ms: int) -> None:
        if isinstance(sub, MarketSub):
            self.session.rethrottle(sub, throttle_ms)
            return
        interval = max(settings.PORTFOLIO_COALESCE_MS, throttle_ms) / 1000
        if interval != sub.interval:
            sub.cancel()  # out of the old interval's flusher
            sub.interval = interval
            if sub.ready:
                sub.mark()

    async def _subscribe(self, request: Request) -> None:
        # A channel held already is acked as held, without a snapshot: re-subscribing costs no reads.
        subs, held = await self._install(request, keep_held=True)
        store = market_store()
        try:
            # The hub first, the history second: what is published in between waits in each channel's buffer.
            await self._sync_groups()
            snapshots: dict[str, Frame] = {}
            for sub in subs:
                if isinstance(sub, MarketSub):
                    snapshots[sub.name] = {"type": "snapshot", **await store.snapshot(sub.name)}
                else:
                    snapshots[sub.name] = self.session.portfolio_snapshot(sub)
        except Exception:
            await self._uninstall(subs)
            raise
        for sub in self.session.subscribed(request, subs, snapshots, held):
            self._start(sub, self._resync)

    async def _resume(self, request: Request) -> None:
        subs, _ = await self._install(request)
        store = market_store()
        try:
            await self._sync_groups()
        except Exception:
            await self._uninstall(subs)
            raise
        positions = {channel_parse(name).name: position for name, position in request.positions.items()}
        for sub in subs:
            if self.session.subs.get(sub.name) is not sub:
                continue
            try:
                if isinstance(sub, PortfolioSub):
                    self.session.resumed_from_snapshot(request, sub, self.session.portfolio_snapshot(sub))
                    continue
                epoch, seq = positions[sub.name]
                missed = await self._missed(sub.name, epoch, seq)
                if missed is None:
                    whole = self.session.resumed_from_snapshot(request, sub, {"type": "snapshot", **await store.snapshot(sub.name)})
                else:
                    whole = self.session.resumed_from_history(request, sub, epoch, seq, missed)
                if not whole:
                    self._start(sub, self._resync)
            except Exception:
                await self._uninstall([sub])
                raise

    async def _missed(self, name: str, epoch: str, seq: int) -> list[Message] | None:
        """The messages after (epoch, seq) when the history still holds every one of them; None otherwise."""
        store = market_store()
        head_epoch, head_seq = await store.head(name)
        if epoch != head_epoch or seq > head_seq:
            return None
        missed = await store.since(name, epoch=epoch, seq=seq)
        if missed is None:
            return None
        # Only an unbroken run from seq + 1 counts as recovered.
        for offset, message in enumerate(missed, start=1):
            if message["epoch"] != epoch or message["seq"] != seq + offset:
                return None
        return missed

    async def _uninstall(self, subs: list[Sub]) -> None:
        self.session.uninstall(subs)
        await self._sync_groups()

    # -- the hub and the user's group ------------------------------------------------------

    async def _join_user_group(self) -> None:
        if self._user_group is None and self.session.user is not None:
            self._user_group = self.session.user.pk
            await streams.subscribe_user(self.channel_name, self.session.user.pk)

    async def _sync_groups(self) -> None:
        """Hold exactly what the subscriptions need on the hub (market channels, and the tickers of the portfolio books)
        and the user's group (ledger changes)."""
        subs = self.session.subs.values()
        market = {sub.name for sub in subs if isinstance(sub, MarketSub)}
        portfolios = self.session.portfolio_subs()
        prices = frozenset(ticker_channels(symbol for sub in portfolios for symbol in sub.live.book.symbols))
        new_prices = prices - self._price_channels
        self._price_channels = prices
        wanted = market | prices
        joined, left = wanted - self._market_channels, self._market_channels - wanted
        streams.unsubscribe_market(self, left)
        self._market_channels -= left
        if joined and not self._closing:
            # Counted as held before it is confirmed, so a failure (which undoes it) is cleaned up like a success.
            self._market_channels |= joined
            await streams.subscribe_market(self, joined)
        if new_prices:
            # After subscribing: a price published in between arrives live too, and the books drop the older one.
            for price in await history.latest_prices(channel.partition(":")[2] for channel in new_prices):
                self.session.portfolio_price(price)
        if not portfolios and self._user_group is not None:
            user_id, self._user_group = self._user_group, None
            await streams.unsubscribe_user(self.channel_name, user_id)

    # -- live messages (the hub's sink) ----------------------------------------------------

    def deliver(self, update: Update) -> None:
        """A live message of a channel this connection holds (its `update` frame and price are made once per process)."""
        if self._closing:
            return
        message = update.message
        try:
            channel = message["ch"]
            if channel in self._price_channels:
                self.session.portfolio_price(update.price)
            gap = self.session.deliver(message, update.frame) if channel in self.session.subs else None
        except (KeyError, TypeError, ValueError):
            log.warning("malformed market message dropped: %.200r", message)
            return
        if gap is not None:
            self._start(gap, self._resync)

    def missed(self, channels: Sequence[str]) -> None:
        """The hub may have lost live messages of these channels: catch up from the history."""
        if self._closing:
            return
        for sub in self.session.missed(channels):
            self._start(sub, self._catch_up)
        lost = [name.partition(":")[2] for name in channels if name in self._price_channels]
        if lost:
            self._spawn(self._portfolio_resync(lost))

    def _start(self, sub: MarketSub, work: Callable[[MarketSub], Awaitable[None]]) -> None:
        """Run `work(sub)` as the channel's one background task; a failing history unsubscribes the channel."""

        async def run() -> None:
            try:
                await work(sub)
            except asyncio.CancelledError:
                raise
            except OUTAGE as exc:
                # Redis (or the database) failed under the catch-up, as under a request: try again later, on a new
                # socket, whose subscribe starts from a snapshot. Seen with two Redis servers, one restarted: this
                # socket's channel-layer receive was on the other one, so nothing else closed it.
                log.warning(
                    "catching up %s on market connection %s: %s: %s; closing it with %d",
                    sub.name,
                    self.connection_id,
                    type(exc).__name__,
                    exc,
                    CLOSE_TRY_AGAIN_LATER,
                )
                (metrics.DATABASE_ERRORS if isinstance(exc, DATABASE_DOWN) else metrics.REDIS_ERRORS).labels("web").inc()
                self._close(CLOSE_TRY_AGAIN_LATER)
            except Exception:
                await self._lost_history(sub)
            finally:
                if sub.task is asyncio.current_task():
                    sub.task = None

        sub.task = self._spawn(run())

    async def _resync(self, sub: MarketSub) -> None:
        """Close a gap (lost messages, or a new epoch) from the history, or with a fresh snapshot when it cannot.

        The history may lag the live messages for a moment, so each round tries a few
        times. A message it never catches up with was published but not stored (its
        history write failed): the round gives up on it and keeps only the newest
        message that came meanwhile, which the history may hold; with none, the channel
        goes live again from the state the client has.
        """
        while True:
            oldest = sub.buffer[0]
            for attempt in range(RESYNC_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(0.05 * attempt)  # let the history catch up
                if not await self._fill(sub) or self.session.drained(sub):
                    return
            newest = sub.buffer[-1]
            if newest is oldest:
                sub.buffer.clear()
                sub.syncing = False
                return
            sub.buffer = [newest]

    async def _catch_up(self, sub: MarketSub) -> None:
        """After `missed`: send what the history holds past the client's state (or a snapshot past it), then go live."""
        missed = await self._missed(sub.name, sub.epoch, sub.seq)
        if self.session.subs.get(sub.name) is not sub:
            return
        if missed is None:
            snapshot = {"type": "snapshot", **await market_store().snapshot(sub.name)}
            if self.session.subs.get(sub.name) is not sub:
                return
            self.session.snapshot_past(sub, snapshot)
        else:
            self.session.caught_up(sub, missed)
        if not self.session.drained(sub):
            self._start(sub, self._resync)

    async def _lost_history(self, sub: MarketSub) -> None:
        log.exception("resync of %s on %s", sub.name, self.connection_id)
        if self.session.subs.get(sub.name) is sub:
            await self._uninstall([sub])
            self.session.error("server_error", f"{sub.name!r} lost its history and was unsubscribed; subscribe again.", channel=sub.name)

    async def _fill(self, sub: MarketSub) -> bool:
        """One try at what follows the client's state: the missed messages, else a snapshot past it. False: the channel is gone."""
        store = market_store()
        first, _ = sub.buffer[0]
        filled = False
        if first["epoch"] == sub.epoch or (sub.epoch == "" and sub.seq == 0):
            after = sub.seq if first["epoch"] == sub.epoch else 0
            missed = await store.since(sub.name, epoch=first["epoch"], seq=after)
            if self.session.subs.get(sub.name) is not sub:
                return False
            if missed and missed[0]["seq"] == after + 1:
                filled = True
                self.session.filled(sub, missed)
        if not filled or sub.verdict(sub.buffer[0][0]) == "gap":
            snapshot = {"type": "snapshot", **await store.snapshot(sub.name)}
            if self.session.subs.get(sub.name) is not sub:
                return False
            self.session.snapshot_past(sub, snapshot)
        return True

    def _throttle_timer(self, sub: MarketSub) -> None:
        sub.timer = self._spawn(self._flush_later(sub))

    async def _flush_later(self, sub: MarketSub) -> None:
        try:
            while (due := sub.throttle.due()) is not None:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if self.session.subs.get(sub.name) is not sub:
                    return
                self.session.throttled(sub, time.monotonic())
        finally:
            if sub.timer is asyncio.current_task():
                sub.timer = None

    # -- portfolio channels ----------------------------------------------------------------

    async def _portfolio_resync(self, symbols: list[str]) -> None:
        """After the hub lost prices: the newest from the history, then a fresh snapshot of every portfolio channel."""
        try:
            for price in await history.latest_prices(symbols, cached=False):
                self.session.portfolio_price(price)
        except Exception:
            log.exception("could not read the newest prices after a lost connection; snapshots hold what the books have")
        for sub in self.session.portfolio_subs():
            if sub.ready:
                self.session.send(self.session.portfolio_snapshot(sub))

    async def portfolio_reload(self, event: dict[str, Any]) -> None:
        # Through the worker, after any subscribe in progress: a book it is loading gets this reload too.
        # One waiting reload stands for any number (it reads the ledger as it is then), so they never fill the queue.
        if not self._reload_queued and not self._closing:
            self._reload_queued = True
            self._jobs.put_nowait(self._reload_portfolios)

    async def _reload_portfolios(self) -> None:
        self._reload_queued = False
        for sub in self.session.portfolio_subs():
            await sub.live.reload()
            if self.session.subs.get(sub.name) is not sub:
                continue
            await self._sync_groups()
            if sub.ready:
                self.session.send(self.session.portfolio_snapshot(sub))
