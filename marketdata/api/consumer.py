"""`/ws/v1/market`: the market-data WebSocket API v1 (docs/websocket-api.md).

A protocol adapter. Market channels come from the feed worker through two
seams: the history (`marketdata.delivery.history`: head, since, snapshot) and the
live messages (`marketdata.delivery.streams.subscribe_market`): the connection is a sink
of its process's hub (`marketdata.delivery.fanout`), which calls `deliver(message, frame)`
with the `update` frame already encoded, once for every connection. Portfolio
channels revalue the user's books in memory from `md.price` events (the
channel layer), as `/ws/portfolio/` does (`portfolio.consumers.LivePortfolios`).

How a channel stays whole — no duplicate, no gap:
- To subscribe (or resume), the connection subscribes to the channel first
  (the hub returns once Redis confirmed), then reads the history. Live
  messages arriving meanwhile wait in the channel's buffer and are let through
  after the snapshot (or replay), those at or below the seq already sent dropped.
- Every live message is checked against the channel's (epoch, seq): a
  duplicate is dropped; a seq past the next one (a message lost on the way)
  is filled from the history, or answered with a fresh snapshot when the
  history cannot fill it; so is a new epoch (the worker restarted). When the
  hub lost its Redis connection for a while (`missed`), each live channel
  catches up from the history at once, without waiting for its next message.

Every frame goes out through the connection's outbox (`outbox.Outbox`), in
order, so nothing that produces frames — the hub least of all — waits for the
socket. A live update on a channel without `throttle_ms` is sent as the hub
encoded it; a throttled channel's merged updates are encoded per connection. A
connection that stays behind (`MARKET_WS_SEND_BUFFER_BYTES` unsent for
`MARKET_WS_SLOW_SECONDS`) is closed with 4408, and resyncs when it reconnects.

Inbound frames are checked for size and rate as they arrive, then handled one
at a time, in order, by the connection's worker task, so live updates keep
flowing while a subscribe waits on the history or the database. Nothing on the
tick path queries the database or leaves the event loop: the instrument symbols
are read once on connect, and live market messages reach `deliver` straight
from the hub, not through the channel layer's per-message dispatch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from marketdata import services
from marketdata.api.channels import Channel, ChannelError, channel_parse
from marketdata.api.limits import FrameError, Message, Request, Throttle, TokenBucket, parse_request, peek_id
from marketdata.delivery import fanout, history, outbox, streams
from marketdata.delivery.connections import connections
from marketdata.delivery.fanout import Update
from marketdata.delivery.flusher import flusher
from marketdata.delivery.history import market_store
from marketdata.events import PriceUpdate, to_epoch_ms
from marketdata.models import Instrument
from marketdata.worker.market import ticker_price
from portfolio.consumers import LivePortfolios, ticker_channels
from portfolio.live import Frame

log = logging.getLogger(__name__)

VERSION = 1
# Every `type` of frame this consumer sends (docs/asyncapi.yaml describes each: tests/test_asyncapi.py).
SERVER_MESSAGE_TYPES = (
    "hello",
    "authenticated",
    "ack",
    "snapshot",
    "update",
    "resumed",
    "unsubscribed",
    "pong",
    "heartbeat",
    "error",
    "batch",
)
# What a client may opt in to: "batch" (`"batch": true` on subscribe or resume) joins the frames of one window into one.
FEATURES = ("batch",)
CLOSE_MESSAGE_TOO_BIG = 1009
# daphne (autobahn) lets an application close only with 1000 or 3000-4999: 1009 is then sent as 4009.
CLOSE_MESSAGE_TOO_BIG_PRIVATE = 4009
CLOSE_AUTH_FAILED = 4401
CLOSE_SLOW_CONSUMER = 4408
CLOSE_TOO_MANY_CONNECTIONS = 4409
CLOSE_RATE_LIMITED = 4429
RATE_LIMITED_IN_A_ROW = 10
# Attempts to close a gap from the history before settling on the latest snapshot.
RESYNC_ATTEMPTS = 4

Job = Callable[[], Awaitable[None]]
# A live message and its `update` frame when the hub encoded it (None: encode it when sent).
Pending = tuple[Message, str | None]


def _now_ms() -> int:
    return int(time.time() * 1000)


# Tasks that must outlive the connection's own (a slow consumer's close).
_detached: set[asyncio.Task[None]] = set()


def _instrument_symbols() -> frozenset[str]:
    return frozenset(Instrument.objects.values_list("symbol", flat=True))


# ------------------------------------------------------------------ subscriptions


@dataclass(eq=False)
class MarketSub:
    """One market channel on one connection: where it stands, and what waits while it (re)synchronises."""

    channel: Channel
    throttle: Throttle
    epoch: str = ""  # of the last message accepted
    seq: int = 0
    sent: tuple[str, int] | None = None  # (epoch, seq) of the last frame sent; None until the snapshot
    syncing: bool = True  # live messages wait in `buffer` while true
    buffer: list[Pending] = field(default_factory=list)
    timer: asyncio.Task[None] | None = None  # the throttle's pending flush
    task: asyncio.Task[None] | None = None  # a running resync

    @property
    def name(self) -> str:
        return self.channel.name

    def verdict(self, message: Message) -> str:
        """`dup` (already have it), `next` (follows what was accepted) or `gap`."""
        epoch, seq = message["epoch"], message["seq"]
        if epoch == self.epoch and seq <= self.seq:
            return "dup"
        if (epoch == self.epoch and seq == self.seq + 1) or (self.epoch == "" and self.seq == 0 and seq == 1):
            return "next"
        return "gap"

    def accept(self, message: Message) -> None:
        self.epoch, self.seq = message["epoch"], message["seq"]

    def cancel(self) -> None:
        for task in (self.timer, self.task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        self.timer = self.task = None


@dataclass(eq=False)
class PortfolioSub:
    """One portfolio channel on one connection: its book, flushed by the process's flusher for `interval`."""

    channel: Channel
    live: LivePortfolios
    interval: float  # seconds: PORTFOLIO_COALESCE_MS, or the channel's throttle when longer
    on_flush: Callable[[PortfolioSub], bool]  # sends the changes since the last frame; False: try again at the next tick
    seq: int = 0
    ready: bool = False  # its snapshot was sent
    ts: int = 0  # latest price time since the last frame

    @property
    def name(self) -> str:
        return self.channel.name

    def flush(self) -> bool:
        return self.on_flush(self)

    def mark(self) -> None:
        flusher(self.interval).mark(self)

    def cancel(self) -> None:
        flusher(self.interval).discard(self)


Sub = MarketSub | PortfolioSub


class Refused(Exception):
    """A request refused whole, with its API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------ the consumer


class MarketConsumer(AsyncWebsocketConsumer):
    """One `/ws/v1/market` connection; also a sink of its process's market hub (`fanout.Sink`)."""

    subs: dict[str, Sub]
    _closing: bool = False
    _counted: bool = False
    _tasks: set[asyncio.Task[None]] = frozenset()  # type: ignore[assignment]  # until connect makes the set
    _outbox: outbox.Outbox | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> None:
        self.connection_id = uuid.uuid4().hex[:16]
        user = self.scope.get("user")
        self.user: Any = user if user is not None and user.is_authenticated else None
        self.subs = {}
        self._market_channels: set[str] = set()  # held on the hub: market subscriptions and the portfolio books' tickers
        self._price_channels: frozenset[str] = frozenset()  # the tickers the portfolio books need
        self._user_group: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._bucket = TokenBucket(settings.MARKET_WS_MESSAGES_PER_SECOND, settings.MARKET_WS_BURST, time.monotonic())
        self._limited_in_a_row = 0
        self._portfolio_seqs: dict[str, int] = {}
        self.symbols = await database_sync_to_async(_instrument_symbols)()
        await self.accept()
        self._server_send = outbox.server_send(self.base_send)
        self._outbox = outbox.Outbox(
            send=self._server_send,
            close=self._close_socket,
            on_slow=self._slow,
            limit=settings.MARKET_WS_SEND_BUFFER_BYTES,
            slow_seconds=settings.MARKET_WS_SLOW_SECONDS,
            backlog=outbox.server_backlog(self._server_send),
        )
        # Counted (and refused) before `hello`: a client that has its hello is already in the count.
        if self.user is not None and not await self._count_connection(self.user, None):
            return
        self._send(
            {
                "type": "hello",
                "version": VERSION,
                "heartbeat_ms": int(self._heartbeat_seconds * 1000),
                "user": self.user.get_username() if self.user is not None else None,
                "features": list(FEATURES),
                "limits": {
                    "subscriptions": settings.MARKET_WS_MAX_SUBSCRIPTIONS,
                    "messages_per_second": settings.MARKET_WS_MESSAGES_PER_SECOND,
                    "burst": settings.MARKET_WS_BURST,
                    "message_bytes": settings.MARKET_WS_MAX_MESSAGE_BYTES,
                    "connections_per_user": settings.MARKET_WS_CONNECTIONS_PER_USER,
                },
            }
        )
        self._spawn(self._work())
        self._spawn(self._heartbeat())

    async def disconnect(self, code: int) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._outbox is not None:
            self._outbox.abandon()
        if not hasattr(self, "subs"):
            return
        for sub in self.subs.values():
            sub.cancel()
        self.subs = {}
        try:
            await self._sync_groups()
        except Exception:  # a lost channel layer must not stop the rest of the clean-up
            log.exception("leaving the groups of %s", self.channel_name)
        if self._counted and self.user is not None:
            try:
                await connections().remove(self.user.pk, self.connection_id)
            except Exception:
                log.exception("uncounting connection %s", self.connection_id)

    @property
    def _heartbeat_seconds(self) -> float:
        return float(settings.MARKET_WS_HEARTBEAT_SECONDS)

    @property
    def _connection_ttl(self) -> float:
        # Three missed heartbeats, and the entry of a connection whose process died has expired.
        return 3 * self._heartbeat_seconds + 5

    def _spawn(self, coroutine: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _stop(self) -> None:
        """Stop producing frames: no more requests, heartbeats, throttle timers or live messages."""
        self._closing = True
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        for sub in self.subs.values():
            sub.cancel()
        # Out of the hub at once, so it hands nothing more to a connection that is going.
        market, self._market_channels = self._market_channels, set()
        streams.unsubscribe_market(self, market)

    def _close(self, code: int) -> None:
        """Close with `code` once the frames queued before it are sent."""
        if self._closing:
            return
        self._stop()
        if self._outbox is not None:
            self._outbox.close(code)

    def _slow(self, reason: str) -> None:
        """The outbox found this connection slow (it has dropped its frames): close it with 4408."""
        log.warning("market connection %s is a slow consumer (%s): closing it with %d", self.connection_id, reason, CLOSE_SLOW_CONSUMER)
        self._stop()
        # Past the outbox: the close frame follows only what the server already buffered for the socket.
        self._spawn_detached(self._close_socket(CLOSE_SLOW_CONSUMER))

    def _spawn_detached(self, coroutine: Awaitable[None]) -> None:
        """A task that outlives `_stop` (it cancels `_tasks`), kept referenced until done."""
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        _detached.add(task)
        task.add_done_callback(_detached.discard)

    async def _close_socket(self, code: int) -> None:
        try:
            await self.close(code=code)
        except Exception:
            # daphne refuses 1009 from an application (only 1000 and 3000-4999 may be sent).
            if code != CLOSE_MESSAGE_TOO_BIG:
                raise
            await self.close(code=CLOSE_MESSAGE_TOO_BIG_PRIVATE)

    # -- sending ---------------------------------------------------------------------------

    def _send(self, frame: Frame) -> None:
        if not self._closing and self._outbox is not None:
            self._outbox.put(json.dumps(frame, separators=(",", ":")))

    def _error(self, code: str, message: str, request_id: int | str | None = None) -> None:
        frame: Frame = {"type": "error", "code": code, "message": message}
        if request_id is not None:
            frame["id"] = request_id
        self._send(frame)

    def _reply(self, request: Request, frame: Frame) -> None:
        if request.id is not None:
            frame = {"type": frame["type"], "id": request.id, **{k: v for k, v in frame.items() if k != "type"}}
        self._send(frame)

    # -- inbound ---------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closing:
            return
        size = len(bytes_data) if bytes_data is not None else len(text_data.encode(errors="surrogatepass")) if text_data is not None else 0
        if size > settings.MARKET_WS_MAX_MESSAGE_BYTES:
            self._error("message_too_big", f"A frame may carry {settings.MARKET_WS_MAX_MESSAGE_BYTES} bytes; this one had {size}.")
            self._close(CLOSE_MESSAGE_TOO_BIG)
            return
        if not self._bucket.take(time.monotonic()):
            self._limited_in_a_row += 1
            rate, burst = settings.MARKET_WS_MESSAGES_PER_SECOND, settings.MARKET_WS_BURST
            self._error("rate_limited", f"More than {rate} frames a second (burst {burst}): frame dropped.", peek_id(text_data))
            if self._limited_in_a_row >= RATE_LIMITED_IN_A_ROW:
                self._close(CLOSE_RATE_LIMITED)
            return
        self._limited_in_a_row = 0
        self._jobs.put_nowait(lambda: self._handle(text_data, bytes_data))

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
                self._error("server_error", "The server failed to handle this; try again.")

    async def _handle(self, text_data: str | None, bytes_data: bytes | None) -> None:
        try:
            request = parse_request(text_data, bytes_data)
        except FrameError as exc:
            self._error(exc.code, exc.message, exc.request_id)
            return
        if request.batch is not None and self._outbox is not None and request.batch != self._outbox.batching:
            self._outbox.send_batch()  # what was joined so far goes out under the old choice
            self._outbox.batching = request.batch
        try:
            if request.op == "ping":
                self._reply(request, {"type": "pong"})
            elif request.op == "auth":
                await self._auth(request)
            elif request.op == "subscribe":
                await self._subscribe(request)
            elif request.op == "unsubscribe":
                await self._unsubscribe(request)
            else:
                await self._resume(request)
        except Refused as exc:
            self._error(exc.code, exc.message, request.id)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not the client's doing (the history or the database failed): the request was undone.
            log.exception("%s on market connection %s", request.op, self.connection_id)
            self._error("server_error", f"The server failed to handle this {request.op}; try again.", request.id)

    # -- auth ------------------------------------------------------------------------------

    async def _auth(self, request: Request) -> None:
        if self.user is not None:
            raise Refused("bad_request", f"This connection is already authenticated as {self.user.get_username()!r}.")
        user = await database_sync_to_async(services.token_authenticate)(plaintext=request.token)
        if user is None:
            self._error("auth_failed", "Unknown or revoked token.", request.id)
            self._close(CLOSE_AUTH_FAILED)
            return
        if not await self._count_connection(user, request.id):
            return
        self.user = user
        self._reply(request, {"type": "authenticated", "user": user.get_username()})

    async def _count_connection(self, user: Any, request_id: int | str | None) -> bool:
        """Count this connection against the user's limit; over it, say so and close (4409)."""
        registry = connections()
        count = await registry.add(user.pk, self.connection_id, self._connection_ttl)
        limit = settings.MARKET_WS_CONNECTIONS_PER_USER
        if count > limit:
            await registry.remove(user.pk, self.connection_id)
            self._error("too_many_connections", f"{user.get_username()!r} already has {limit} open connections.", request_id)
            self._close(CLOSE_TOO_MANY_CONNECTIONS)
            return False
        self._counted = True
        return True

    # -- heartbeat -------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._heartbeat_seconds)
            channels: dict[str, dict[str, Any]] = {}
            for name, sub in self.subs.items():
                if isinstance(sub, MarketSub) and sub.sent is not None:
                    channels[name] = {"epoch": sub.sent[0], "seq": sub.sent[1]}
                elif isinstance(sub, PortfolioSub) and sub.ready:
                    channels[name] = {"epoch": self.connection_id, "seq": sub.seq}
            self._send({"type": "heartbeat", "ts": _now_ms(), "channels": channels})
            if self._counted and self.user is not None:
                try:
                    await connections().renew(self.user.pk, self.connection_id, self._connection_ttl)
                except Exception:
                    log.exception("renewing connection %s", self.connection_id)

    # -- subscribe, unsubscribe, resume ----------------------------------------------------

    def _channels(self, names: Iterable[str]) -> list[Channel]:
        """The channels named, checked whole: any bad one refuses the request."""
        channels: dict[str, Channel] = {}
        for name in names:
            try:
                channel = channel_parse(name)
            except ChannelError as exc:
                raise Refused(exc.code, str(exc)) from None
            if self.user is None and (not channel.is_market or not settings.MARKET_WS_ANONYMOUS):
                raise Refused("not_authenticated", f'{name!r} needs a user: authenticate first ({{"op": "auth", "token": ...}}).')
            if channel.is_market and channel.symbol not in self.symbols:
                raise Refused("unknown_symbol", f"No instrument has the symbol {channel.symbol!r}.")
            channels[channel.name] = channel  # `book:X@depth=010` is `book:X@depth=10`: once
        added = sum(1 for name in channels if name not in self.subs)
        limit = settings.MARKET_WS_MAX_SUBSCRIPTIONS
        if len(self.subs) + added > limit:
            raise Refused("subscription_limit", f"A connection may hold {limit} channels; this would make {len(self.subs) + added}.")
        return list(channels.values())

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
            live = await LivePortfolios.open(self.user, channel.portfolio_id)
            if live is None:
                await self._sync_groups()
                raise Refused("forbidden", f"{channel.name!r} is not one of your portfolios.")
            opened[channel.name] = PortfolioSub(channel, live, interval, self._flush_portfolio)
        return opened

    def _install(self, channels: list[Channel], portfolios: dict[str, PortfolioSub], throttle_ms: int) -> list[Sub]:
        subs: list[Sub] = []
        for channel in channels:
            old = self.subs.pop(channel.name, None)
            if old is not None:
                old.cancel()
            sub: Sub = portfolios[channel.name] if not channel.is_market else MarketSub(channel, Throttle(channel.kind, throttle_ms / 1000))
            self.subs[channel.name] = sub
            subs.append(sub)
        return subs

    async def _subscribe(self, request: Request) -> None:
        channels = self._channels(request.channels)
        portfolios = await self._open_portfolios(channels, request.throttle_ms)
        subs = self._install(channels, portfolios, request.throttle_ms)
        store = market_store()
        try:
            # Groups first, history second: what is published in between waits in each channel's buffer.
            await self._sync_groups()
            snapshots: dict[str, Frame] = {}
            for sub in subs:
                if isinstance(sub, MarketSub):
                    snapshots[sub.name] = {"type": "snapshot", **await store.snapshot(sub.name)}
                else:
                    snapshots[sub.name] = self._portfolio_snapshot(sub)
        except Exception:
            await self._uninstall(subs)
            raise
        acked = [{"ch": name, "epoch": frame["epoch"], "seq": frame["seq"]} for name, frame in snapshots.items()]
        self._reply(request, {"type": "ack", "channels": acked})
        for sub in subs:
            self._send(snapshots[sub.name])
            self._live(sub, snapshots[sub.name])

    async def _resume(self, request: Request) -> None:
        channels = self._channels(request.channels)
        portfolios = await self._open_portfolios(channels, request.throttle_ms)
        subs = self._install(channels, portfolios, request.throttle_ms)
        store = market_store()
        try:
            await self._sync_groups()
        except Exception:
            await self._uninstall(subs)
            raise
        positions = {channel_parse(name).name: position for name, position in request.positions.items()}
        for sub in subs:
            if self.subs.get(sub.name) is not sub:
                continue
            try:
                if isinstance(sub, PortfolioSub):
                    snapshot = self._portfolio_snapshot(sub)
                    self._reply(
                        request, {"type": "resumed", "ch": sub.name, "recovered": False, "epoch": snapshot["epoch"], "seq": snapshot["seq"]}
                    )
                    self._send(snapshot)
                    self._live(sub, snapshot)
                    continue
                epoch, seq = positions[sub.name]
                missed = await self._missed(sub.name, epoch, seq)
                if missed is None:
                    snapshot = {"type": "snapshot", **await store.snapshot(sub.name)}
                    self._reply(
                        request, {"type": "resumed", "ch": sub.name, "recovered": False, "epoch": snapshot["epoch"], "seq": snapshot["seq"]}
                    )
                    self._send(snapshot)
                    self._live(sub, snapshot)
                    continue
                last = missed[-1]["seq"] if missed else seq
                resumed = {"type": "resumed", "ch": sub.name, "recovered": True, "epoch": epoch, "from_seq": seq + 1, "seq": last}
                self._reply(request, resumed)
                sub.epoch, sub.seq, sub.sent = epoch, seq, (epoch, seq)
                for message in missed:  # exactly the missed messages, in order: never throttled
                    sub.accept(message)
                    self._send_update(sub, message, None)
                self._drain(sub)
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

    async def _unsubscribe(self, request: Request) -> None:
        names = []
        for name in request.channels:
            try:
                names.append(channel_parse(name).name)
            except ChannelError as exc:
                raise Refused(exc.code, str(exc)) from None
        for name in names:
            sub = self.subs.pop(name, None)
            if sub is not None:
                sub.cancel()
        await self._sync_groups()
        self._reply(request, {"type": "unsubscribed", "channels": names})

    async def _uninstall(self, subs: list[Sub]) -> None:
        for sub in subs:
            if self.subs.get(sub.name) is sub:
                del self.subs[sub.name]
            sub.cancel()
        await self._sync_groups()

    def _live(self, sub: Sub, snapshot: Frame) -> None:
        """After a channel's snapshot: let it run live from there."""
        if isinstance(sub, PortfolioSub):
            sub.ready = True
            sub.mark()  # prices that came after the snapshot was made
            return
        sub.epoch, sub.seq = snapshot["epoch"], snapshot["seq"]  # type: ignore[assignment]
        sub.sent = (sub.epoch, sub.seq)
        self._drain(sub)

    # -- groups ----------------------------------------------------------------------------

    async def _join_user_group(self) -> None:
        if self._user_group is None and self.user is not None:
            self._user_group = self.user.pk
            await streams.subscribe_user(self.channel_name, self.user.pk)

    async def _sync_groups(self) -> None:
        """Hold exactly what the subscriptions need on the hub (market channels, and the tickers of the portfolio books)
        and the user's group (ledger changes)."""
        market = {sub.name for sub in self.subs.values() if isinstance(sub, MarketSub)}
        portfolios = [sub for sub in self.subs.values() if isinstance(sub, PortfolioSub)]
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
            for message in await history.latest_tickers(channel.partition(":")[2] for channel in new_prices):
                self._portfolio_price(ticker_price(message))
        if not portfolios and self._user_group is not None:
            user_id, self._user_group = self._user_group, None
            await streams.unsubscribe_user(self.channel_name, user_id)

    # -- market channels: live (the hub's sink) --------------------------------------------

    def deliver(self, update: Update) -> None:
        """A live message of a channel this connection holds (its `update` frame and price are made once per process)."""
        message = update.message
        name = message["ch"]
        if self._closing:
            return
        if name in self._price_channels:
            try:
                self._portfolio_price(update.price)
            except ValueError:
                log.warning("malformed ticker dropped: %.200r", message)
        sub = self.subs.get(name)
        if not isinstance(sub, MarketSub):
            return
        try:
            if sub.syncing:
                sub.buffer.append((message, update.frame))
                return
            seq = message["seq"]
            if seq == sub.seq + 1 and message["epoch"] == sub.epoch and sub.throttle.interval <= 0 and self._outbox is not None:
                # The common case, kept short: the next message of an unthrottled channel goes out as encoded.
                sub.seq = seq
                sub.sent = (sub.epoch, seq)
                self._outbox.put(update.frame)
                return
            verdict = sub.verdict(message)
            if verdict == "next":
                sub.accept(message)
                self._emit(sub, message, update.frame)
            elif verdict == "gap":
                sub.syncing = True
                sub.buffer.append((message, update.frame))
                self._start(sub, self._resync)
        except (KeyError, TypeError):
            log.warning("malformed market message dropped: %.200r", message)

    def missed(self, channels: Sequence[str]) -> None:
        """The hub may have lost live messages of these channels: each one running live catches up from the history.

        One synchronising already is left alone: the next live message shows it any gap.
        """
        for name in channels:
            sub = self.subs.get(name)
            if isinstance(sub, MarketSub) and not sub.syncing and not self._closing:
                sub.syncing = True
                self._start(sub, self._catch_up)
        lost = [name.partition(":")[2] for name in channels if name in self._price_channels]
        if lost and not self._closing:
            self._spawn(self._portfolio_resync(lost))

    def _drain(self, sub: MarketSub) -> None:
        """Let through what waited while the channel synchronised; a gap among it starts a resync."""
        if not self._drained(sub):
            self._start(sub, self._resync)

    def _drained(self, sub: MarketSub) -> bool:
        while sub.buffer:
            if self.subs.get(sub.name) is not sub:
                return True
            message, frame = sub.buffer[0]
            verdict = sub.verdict(message)
            if verdict == "gap":
                return False
            sub.buffer.pop(0)
            if verdict == "next":
                sub.accept(message)
                self._emit(sub, message, frame)
        sub.syncing = False  # no await since the buffer was found empty: nothing slips past it
        return True

    def _start(self, sub: MarketSub, work: Callable[[MarketSub], Awaitable[None]]) -> None:
        """Run `work(sub)` as the channel's one background task; a failing history unsubscribes the channel."""

        async def run() -> None:
            try:
                await work(sub)
            except asyncio.CancelledError:
                raise
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
                if not await self._fill(sub) or self._drained(sub):
                    return
            newest = sub.buffer[-1]
            if newest is oldest:
                sub.buffer.clear()
                sub.syncing = False
                return
            sub.buffer = [newest]

    async def _catch_up(self, sub: MarketSub) -> None:
        """After `missed`: send what the history holds past the client's state (or a snapshot past it), then go live."""
        store = market_store()
        missed = await self._missed(sub.name, sub.epoch, sub.seq)
        if self.subs.get(sub.name) is not sub:
            return
        if missed is None:
            snapshot = {"type": "snapshot", **await store.snapshot(sub.name)}
            if self.subs.get(sub.name) is not sub:
                return
            self._send_snapshot_past(sub, snapshot)
        else:
            for message in missed:
                if sub.verdict(message) == "next":
                    sub.accept(message)
                    self._emit(sub, message, None)
        if not self._drained(sub):
            self._start(sub, self._resync)

    async def _lost_history(self, sub: MarketSub) -> None:
        log.exception("resync of %s on %s", sub.name, self.connection_id)
        if self.subs.get(sub.name) is sub:
            await self._uninstall([sub])
            self._error("server_error", f"{sub.name!r} lost its history and was unsubscribed; subscribe again.")

    async def _fill(self, sub: MarketSub) -> bool:
        """One try at what follows the client's state: the missed messages, else a snapshot past it. False: the channel is gone."""
        store = market_store()
        first, _ = sub.buffer[0]
        filled = False
        if first["epoch"] == sub.epoch or (sub.epoch == "" and sub.seq == 0):
            after = sub.seq if first["epoch"] == sub.epoch else 0
            missed = await store.since(sub.name, epoch=first["epoch"], seq=after)
            if self.subs.get(sub.name) is not sub:
                return False
            if missed and missed[0]["seq"] == after + 1:
                filled = True
                for message in missed:
                    verdict = sub.verdict(message)
                    if verdict == "gap":
                        break
                    if verdict == "next":
                        sub.accept(message)
                        self._emit(sub, message, None)
        if not filled or sub.verdict(sub.buffer[0][0]) == "gap":
            snapshot = {"type": "snapshot", **await store.snapshot(sub.name)}
            if self.subs.get(sub.name) is not sub:
                return False
            self._send_snapshot_past(sub, snapshot)
        return True

    def _send_snapshot_past(self, sub: MarketSub, snapshot: Frame) -> None:
        """Send `snapshot` only when it is past the client's state: the same one it has already, an older one would take it back."""
        epoch, seq = str(snapshot["epoch"]), int(snapshot["seq"])  # type: ignore[call-overload]
        if epoch != sub.epoch or seq > sub.seq:
            self._drop_pending(sub)
            self._send(snapshot)
            sub.epoch, sub.seq = epoch, seq
            sub.sent = (epoch, seq)

    def _drop_pending(self, sub: MarketSub) -> None:
        sub.throttle.clear()
        if sub.timer is not None and sub.timer is not asyncio.current_task():
            sub.timer.cancel()
        sub.timer = None

    def _emit(self, sub: MarketSub, message: Message, frame: str | None) -> None:
        """An accepted message through the channel's throttle; `frame` is its `update` frame, when the hub encoded it."""
        if sub.throttle.interval <= 0:
            self._send_update(sub, message, frame)
            return
        for out in sub.throttle.push(message, time.monotonic()):
            self._send_update(sub, out, frame if out is message else None)
        if sub.throttle.pending and sub.timer is None:
            sub.timer = self._spawn(self._flush_later(sub))

    async def _flush_later(self, sub: MarketSub) -> None:
        try:
            while (due := sub.throttle.due()) is not None:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if self.subs.get(sub.name) is not sub:
                    return
                for out in sub.throttle.flush(time.monotonic()):
                    self._send_update(sub, out, None)  # merged on this connection: encoded for it
        finally:
            if sub.timer is asyncio.current_task():
                sub.timer = None

    def _send_update(self, sub: MarketSub, message: Message, frame: str | None) -> None:
        if self._closing or self._outbox is None:
            return
        sub.sent = (message["epoch"], message["seq"])
        self._outbox.put(frame if frame is not None else fanout.encode_update(message))

    # -- portfolio channels ----------------------------------------------------------------

    def _portfolio_snapshot(self, sub: PortfolioSub) -> Frame:
        seq = self._portfolio_seqs[sub.name] = self._portfolio_seqs.get(sub.name, 0) + 1
        sub.seq, sub.ts = seq, 0
        data = sub.live.book.snapshot()
        del data["type"]
        prices = sub.live.book.market.prices.values()
        ts = max((to_epoch_ms(price.ts) for price in prices), default=_now_ms())
        return {"type": "snapshot", "ch": sub.name, "epoch": self.connection_id, "seq": seq, "ts": ts, "data": data}

    def _portfolio_price(self, price: PriceUpdate) -> None:
        for sub in self.subs.values():
            if isinstance(sub, PortfolioSub) and sub.live.book.apply(price):
                sub.ts = max(sub.ts, to_epoch_ms(price.ts))
                sub.mark()

    def _flush_portfolio(self, sub: PortfolioSub) -> bool:
        """The flusher's tick: the channel's changes since its last frame, as one update."""
        if self._closing or self.subs.get(sub.name) is not sub or not sub.ready or self._outbox is None:
            return True  # gone, or its snapshot (which holds the changes) is still to come
        if self._outbox.behind:
            return False  # merged into a later frame once the socket catches up
        data = sub.live.book.take_changes()
        if data is None:
            return True
        del data["type"]
        seq = self._portfolio_seqs[sub.name] = self._portfolio_seqs.get(sub.name, 0) + 1
        sub.seq = seq
        ts, sub.ts = sub.ts or _now_ms(), 0
        self._send({"type": "update", "ch": sub.name, "epoch": self.connection_id, "seq": seq, "ts": ts, "data": data})
        return True

    async def _portfolio_resync(self, symbols: list[str]) -> None:
        """After the hub lost prices: the newest from the history, then a fresh snapshot of every portfolio channel."""
        try:
            for message in (await market_store().tickers(symbols)).values():
                self._portfolio_price(ticker_price(message))
        except Exception:
            log.exception("could not read the newest prices after a lost connection; snapshots hold what the books have")
        for sub in [sub for sub in self.subs.values() if isinstance(sub, PortfolioSub) and sub.ready]:
            self._send(self._portfolio_snapshot(sub))

    async def portfolio_reload(self, event: dict[str, Any]) -> None:
        # Through the worker, after any subscribe in progress: a book it is loading gets this reload too.
        self._jobs.put_nowait(self._reload_portfolios)

    async def _reload_portfolios(self) -> None:
        for sub in [sub for sub in self.subs.values() if isinstance(sub, PortfolioSub)]:
            await sub.live.reload()
            if self.subs.get(sub.name) is not sub:
                continue
            await self._sync_groups()
            if sub.ready:
                self._send(self._portfolio_snapshot(sub))
