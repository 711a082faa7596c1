"""The market-data API v1 of one connection as a plain object: frames and live messages in, frames out.

No I/O and no Channels, in the manner of a sans-IO protocol core: `Session` holds the
connection's channels and decides what each client frame and each live market message
means for them, and writes the frames that result through `send` (a callable taking a
frame's JSON text; the adapter hands it to the connection's outbox). What needs I/O —
the history, the hub, the database, timers, counting connections — belongs to the
adapter (`marketdata.api.consumer.MarketConsumer`), which calls back here with what it
read. So the protocol rules are tested directly (tests/marketdata/api/test_session.py).

How a market channel stays whole — no duplicate, no gap:
- While a channel (re)synchronises, live messages wait in its buffer (`deliver`); once
  the adapter has sent the snapshot or the replayed messages (`live`), the buffer is let
  through, those at or below the seq already sent dropped.
- Every live message is checked against the channel's (epoch, seq): a duplicate is
  dropped; a seq past the next one (a message lost on the way) or a new epoch (the worker
  restarted) makes `deliver` return the channel, for the adapter to fill from the history.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from marketdata.api.channels import Channel, ChannelError, channel_parse
from marketdata.api.limits import FrameError, Message, Request, Throttle, TokenBucket, parse_request, peek_id
from marketdata.delivery.fanout import encode_frame, encode_update
from marketdata.delivery.flusher import flusher
from marketdata.events import PriceUpdate, to_epoch_ms

Frame = dict[str, Any]

VERSION = 1
# Every `type` of frame the API sends (docs/asyncapi.yaml describes each: tests/test_asyncapi.py).
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
CLOSE_AUTH_FAILED = 4401
CLOSE_SLOW_CONSUMER = 4408
CLOSE_TOO_MANY_CONNECTIONS = 4409
CLOSE_AUTH_LOCKED = 4423  # as HTTP 423 Locked: too many failed logins from this address (config/lockout.py)
CLOSE_RATE_LIMITED = 4429
RATE_LIMITED_IN_A_ROW = 10

# A live message and its `update` frame when the hub encoded it (None: encode it when sent).
Pending = tuple[Message, str | None]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Limits:
    """What one connection may do (the MARKET_WS_* settings)."""

    subscriptions: int
    messages_per_second: float
    burst: int
    message_bytes: int
    connections_per_user: int
    heartbeat_seconds: float
    anonymous: bool  # market channels without a user


class Refused(Exception):
    """A request refused whole, with its API error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ------------------------------------------------------------------ channels


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
    timer: asyncio.Task[None] | None = None  # the throttle's pending flush (the adapter's)
    task: asyncio.Task[None] | None = None  # a running resync (the adapter's)

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
    """One portfolio channel on one connection: its book (`portfolio.consumers.LivePortfolios`), flushed by the
    process's flusher every `interval` seconds while it has changes."""

    channel: Channel
    live: Any
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


# ------------------------------------------------------------------ the session


class Session:
    """The protocol state of one connection (see the module docstring).

    `send` takes each outgoing frame's JSON text, in order. `user` is the signed-in or
    authenticated user (None: anonymous); `symbols` are the instruments' symbols.
    `behind()` says whether the connection's outbox is over its bound (portfolio
    frames wait meanwhile). `throttle_timer(sub)` asks for the channel's throttle to
    be flushed when it is due (`throttled`). `connection_id` is the epoch of the
    portfolio channels.
    """

    def __init__(
        self,
        *,
        send: Callable[[str], None],
        limits: Limits,
        symbols: frozenset[str],
        connection_id: str,
        user: Any = None,
        behind: Callable[[], bool] = lambda: False,
        throttle_timer: Callable[[MarketSub], None] = lambda sub: None,
        now: float | None = None,
    ) -> None:
        self._out = send
        self._throttle_timer = throttle_timer
        self.limits = limits
        self.symbols = symbols
        self.connection_id = connection_id
        self.user = user
        self.behind = behind
        self.subs: dict[str, Sub] = {}
        self.closed = False  # no more frames
        self._bucket = TokenBucket(limits.messages_per_second, limits.burst, time.monotonic() if now is None else now)
        self._limited_in_a_row = 0
        self._portfolio_seqs: dict[str, int] = {}

    # -- frames ----------------------------------------------------------------------------

    def send(self, frame: Frame) -> None:
        if not self.closed:
            self._out(encode_frame(frame))

    def error(self, code: str, message: str, request_id: int | str | None = None, *, channel: str | None = None) -> None:
        """An `error` frame: about a request (`request_id`), a channel the server dropped (`channel`), or the socket."""
        frame: Frame = {"type": "error", "code": code, "message": message}
        if request_id is not None:
            frame["id"] = request_id
        if channel is not None:
            frame["ch"] = channel
        self.send(frame)

    def reply(self, request: Request, frame: Frame) -> None:
        if request.id is not None:
            frame = {"type": frame["type"], "id": request.id, **{k: v for k, v in frame.items() if k != "type"}}
        self.send(frame)

    def hello(self) -> None:
        limits = self.limits
        self.send(
            {
                "type": "hello",
                "version": VERSION,
                "heartbeat_ms": int(limits.heartbeat_seconds * 1000),
                "user": self.user.get_username() if self.user is not None else None,
                "features": list(FEATURES),
                "limits": {
                    "subscriptions": limits.subscriptions,
                    "messages_per_second": limits.messages_per_second,
                    "burst": limits.burst,
                    "message_bytes": limits.message_bytes,
                    "connections_per_user": limits.connections_per_user,
                },
            }
        )

    def heartbeat(self, ts: int) -> None:
        """The last (epoch, seq) sent on every channel that has had its snapshot."""
        channels: dict[str, dict[str, Any]] = {}
        for name, sub in self.subs.items():
            if isinstance(sub, MarketSub) and sub.sent is not None:
                channels[name] = {"epoch": sub.sent[0], "seq": sub.sent[1]}
            elif isinstance(sub, PortfolioSub) and sub.ready:
                channels[name] = {"epoch": self.connection_id, "seq": sub.seq}
        self.send({"type": "heartbeat", "ts": ts, "channels": channels})

    def too_many_connections(self, user: Any, request_id: int | str | None) -> int:
        self.error(
            "too_many_connections", f"{user.get_username()!r} already has {self.limits.connections_per_user} open connections.", request_id
        )
        return CLOSE_TOO_MANY_CONNECTIONS

    def auth_locked(self, request_id: int | str | None, seconds: int) -> int:
        self.send(
            {
                "type": "error",
                **({} if request_id is None else {"id": request_id}),
                "code": "auth_locked",
                "message": f"Too many failed logins from your address: try again in {seconds} s.",
                "retry_after": seconds,
            }
        )
        return CLOSE_AUTH_LOCKED

    # -- client frames ---------------------------------------------------------------------

    def admit(self, text: str | None, data: bytes | None, now: float) -> bool | int:
        """As a frame arrives: True to handle it (in order, `parse`); False when it is dropped (rate limited);
        a close code when the connection must close (too big, rate limited too often)."""
        size = len(data) if data is not None else len(text.encode(errors="surrogatepass")) if text is not None else 0
        if size > self.limits.message_bytes:
            self.error("message_too_big", f"A frame may carry {self.limits.message_bytes} bytes; this one had {size}.")
            return CLOSE_MESSAGE_TOO_BIG
        if not self._bucket.take(now):
            self._limited_in_a_row += 1
            rate, burst = self.limits.messages_per_second, self.limits.burst
            self.error("rate_limited", f"More than {rate} frames a second (burst {burst}): frame dropped.", peek_id(text))
            return CLOSE_RATE_LIMITED if self._limited_in_a_row >= RATE_LIMITED_IN_A_ROW else False
        self._limited_in_a_row = 0
        return True

    def queue_full(self, limit: int, text: str | None) -> int:
        """An admitted frame that finds `limit` requests waiting already: refused, and the connection closes (4429)."""
        self.error("rate_limited", f"{limit} requests are waiting to be answered: send fewer, and wait for the answers.", peek_id(text))
        return CLOSE_RATE_LIMITED

    def parse(self, text: str | None, data: bytes | None) -> Request | None:
        """The request in an admitted frame; None when it is not one (the error is sent)."""
        try:
            return parse_request(text, data)
        except FrameError as exc:
            self.error(exc.code, exc.message, exc.request_id)
            return None

    def authenticating(self) -> None:
        """Before an `auth` is checked: a connection authenticates once."""
        if self.user is not None:
            raise Refused("bad_request", f"This connection is already authenticated as {self.user.get_username()!r}.")

    def authenticated(self, request: Request, user: Any) -> None:
        self.user = user
        self.reply(request, {"type": "authenticated", "user": user.get_username()})

    def channels(self, names: Iterable[str]) -> list[Channel]:
        """The channels named, checked whole: any bad one refuses the request."""
        channels: dict[str, Channel] = {}
        for name in names:
            try:
                channel = channel_parse(name)
            except ChannelError as exc:
                raise Refused(exc.code, str(exc)) from None
            if self.user is None and (not channel.is_market or not self.limits.anonymous):
                raise Refused("not_authenticated", f'{name!r} needs a user: authenticate first ({{"op": "auth", "token": ...}}).')
            if channel.is_market and channel.symbol not in self.symbols:
                raise Refused("unknown_symbol", f"No instrument has the symbol {channel.symbol!r}.")
            channels[channel.name] = channel  # `book:X@depth=010` is `book:X@depth=10`: once
        added = sum(1 for name in channels if name not in self.subs)
        limit = self.limits.subscriptions
        if len(self.subs) + added > limit:
            raise Refused("subscription_limit", f"A connection may hold {limit} channels; this would make {len(self.subs) + added}.")
        return list(channels.values())

    def held(self, channels: Iterable[Channel]) -> list[Sub]:
        """Those of `channels` the connection holds already: a `subscribe` keeps them as they are (`subscribed`)."""
        return [sub for channel in channels if (sub := self.subs.get(channel.name)) is not None]

    def rethrottle(self, sub: MarketSub, throttle_ms: int) -> None:
        """A held market channel named again in a `subscribe`: its new `throttle_ms` applies from now on (no snapshot)."""
        sub.throttle.interval = throttle_ms / 1000

    def install(self, channels: list[Channel], portfolios: dict[str, PortfolioSub], throttle_ms: int) -> list[Sub]:
        """Hold these channels (a channel held already starts over); live messages wait until each one's snapshot."""
        subs: list[Sub] = []
        for channel in channels:
            old = self.subs.pop(channel.name, None)
            if old is not None:
                old.cancel()
            sub: Sub = portfolios[channel.name] if not channel.is_market else MarketSub(channel, Throttle(channel.kind, throttle_ms / 1000))
            self.subs[channel.name] = sub
            subs.append(sub)
        return subs

    def uninstall(self, subs: Iterable[Sub]) -> None:
        for sub in subs:
            if self.subs.get(sub.name) is sub:
                del self.subs[sub.name]
            sub.cancel()

    def unsubscribe(self, request: Request) -> list[str]:
        """Let go of the channels named (held or not); their names, normalised, for `unsubscribed`."""
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
        return names

    def subscribed(self, request: Request, subs: Sequence[Sub], snapshots: dict[str, Frame], held: Sequence[Sub] = ()) -> list[MarketSub]:
        """Answer a subscribe: `ack`, then each new channel's snapshot. The market channels whose buffer shows a gap.

        A channel the connection held already is in the `ack` with `"held": true` and the position last sent on
        it, and gets no snapshot: the client has its state, and a re-subscribe costs the server no reads."""
        acked: list[Frame] = [{"ch": name, "epoch": frame["epoch"], "seq": frame["seq"]} for name, frame in snapshots.items()]
        for sub in held:
            epoch, seq = self.position(sub)
            acked.append({"ch": sub.name, "epoch": epoch, "seq": seq, "held": True})
        self.reply(request, {"type": "ack", "channels": acked})
        gaps = []
        for sub in subs:
            self.send(snapshots[sub.name])
            if not self.live(sub, snapshots[sub.name]):
                assert isinstance(sub, MarketSub)
                gaps.append(sub)
        return gaps

    def position(self, sub: Sub) -> tuple[str, int]:
        """The (epoch, seq) last sent on a channel (what `heartbeat` names)."""
        if isinstance(sub, PortfolioSub):
            return self.connection_id, sub.seq
        return sub.sent if sub.sent is not None else (sub.epoch, sub.seq)

    def resumed_from_snapshot(self, request: Request, sub: Sub, snapshot: Frame) -> bool:
        """`resumed` with `recovered: false`, then the snapshot; False when the market channel's buffer shows a gap."""
        resumed = {"type": "resumed", "ch": sub.name, "recovered": False, "epoch": snapshot["epoch"], "seq": snapshot["seq"]}
        self.reply(request, resumed)
        self.send(snapshot)
        return self.live(sub, snapshot)

    def resumed_from_history(self, request: Request, sub: MarketSub, epoch: str, seq: int, missed: Sequence[Message]) -> bool:
        """`resumed` with `recovered: true`, then exactly the missed messages, in order (never throttled);
        False when what waited meanwhile shows a gap."""
        last = missed[-1]["seq"] if missed else seq
        self.reply(request, {"type": "resumed", "ch": sub.name, "recovered": True, "epoch": epoch, "from_seq": seq + 1, "seq": last})
        sub.epoch, sub.seq, sub.sent = epoch, seq, (epoch, seq)
        for message in missed:
            sub.accept(message)
            self.send_update(sub, message, None)
        return self.drained(sub)

    def live(self, sub: Sub, snapshot: Frame) -> bool:
        """After a channel's snapshot: it runs live from there. False when its buffer shows a gap (resync it)."""
        if isinstance(sub, PortfolioSub):
            sub.ready = True
            sub.mark()  # prices that came after the snapshot was made
            return True
        sub.epoch, sub.seq = snapshot["epoch"], snapshot["seq"]
        sub.sent = (sub.epoch, sub.seq)
        return self.drained(sub)

    # -- live market messages --------------------------------------------------------------

    def deliver(self, message: Message, frame: str | None) -> MarketSub | None:
        """A live message of a market channel, with its `update` frame when the hub encoded it. The channel
        comes back when the message shows a gap: it is synchronising from then on (resync it)."""
        sub = self.subs.get(message["ch"])
        if not isinstance(sub, MarketSub) or self.closed:
            return None
        if sub.syncing:
            sub.buffer.append((message, frame))
            return None
        seq = message["seq"]
        if seq == sub.seq + 1 and message["epoch"] == sub.epoch and sub.throttle.interval <= 0 and frame is not None:
            # The common case, kept short: the next message of an unthrottled channel goes out as encoded.
            sub.seq = seq
            sub.sent = (sub.epoch, seq)
            self._out(frame)
            return None
        verdict = sub.verdict(message)
        if verdict == "next":
            sub.accept(message)
            self.emit(sub, message, frame)
        elif verdict == "gap":
            sub.syncing = True
            sub.buffer.append((message, frame))
            return sub
        return None

    def missed(self, channels: Sequence[str]) -> list[MarketSub]:
        """The hub may have lost live messages of these channels: those running live, to catch up from the history.

        One synchronising already is left alone: the next live message shows it any gap.
        """
        out = []
        for name in channels:
            sub = self.subs.get(name)
            if isinstance(sub, MarketSub) and not sub.syncing and not self.closed:
                sub.syncing = True
                out.append(sub)
        return out

    def drained(self, sub: MarketSub) -> bool:
        """Let through what waited while the channel synchronised. False when a gap among it needs a resync."""
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
                self.emit(sub, message, frame)
        sub.syncing = False
        return True

    def caught_up(self, sub: MarketSub, missed: Sequence[Message]) -> None:
        """Messages the history held past the client's state: those that follow go out, through the throttle."""
        for message in missed:
            if sub.verdict(message) == "next":
                sub.accept(message)
                self.emit(sub, message, None)

    def filled(self, sub: MarketSub, missed: Sequence[Message]) -> None:
        """A resync's messages from the history, in order, up to the first that does not follow."""
        for message in missed:
            verdict = sub.verdict(message)
            if verdict == "gap":
                break
            if verdict == "next":
                sub.accept(message)
                self.emit(sub, message, None)

    def snapshot_past(self, sub: MarketSub, snapshot: Frame) -> None:
        """Send `snapshot` only when it is past the client's state: the same one it has already, an older one would take it back."""
        epoch, seq = str(snapshot["epoch"]), int(snapshot["seq"])
        if epoch != sub.epoch or seq > sub.seq:
            sub.throttle.clear()
            if sub.timer is not None and sub.timer is not asyncio.current_task():
                sub.timer.cancel()
            sub.timer = None
            self.send(snapshot)
            sub.epoch, sub.seq = epoch, seq
            sub.sent = (epoch, seq)

    def emit(self, sub: MarketSub, message: Message, frame: str | None) -> None:
        """An accepted message through the channel's throttle; `frame` is its `update` frame, when the hub encoded it."""
        if sub.throttle.interval <= 0:
            self.send_update(sub, message, frame)
            return
        for out in sub.throttle.push(message, time.monotonic()):
            self.send_update(sub, out, frame if out is message else None)
        if sub.throttle.pending and sub.timer is None:
            self._throttle_timer(sub)

    def throttled(self, sub: MarketSub, now: float) -> None:
        """The throttle's interval is up: send what it merged (encoded for this connection)."""
        for out in sub.throttle.flush(now):
            self.send_update(sub, out, None)

    def send_update(self, sub: MarketSub, message: Message, frame: str | None) -> None:
        if self.closed:
            return
        sub.sent = (message["epoch"], message["seq"])
        self._out(frame if frame is not None else encode_update(message))

    # -- portfolio channels ----------------------------------------------------------------

    def portfolio_snapshot(self, sub: PortfolioSub) -> Frame:
        seq = self._portfolio_seqs[sub.name] = self._portfolio_seqs.get(sub.name, 0) + 1
        sub.seq, sub.ts = seq, 0
        data = sub.live.book.snapshot()
        del data["type"]
        prices = sub.live.book.market.prices.values()
        ts = max((to_epoch_ms(price.ts) for price in prices), default=now_ms())
        return {"type": "snapshot", "ch": sub.name, "epoch": self.connection_id, "seq": seq, "ts": ts, "data": data}

    def portfolio_price(self, price: PriceUpdate) -> None:
        for sub in self.subs.values():
            if isinstance(sub, PortfolioSub) and sub.live.book.apply(price):
                sub.ts = max(sub.ts, to_epoch_ms(price.ts))
                sub.mark()

    def flush_portfolio(self, sub: PortfolioSub) -> bool:
        """The flusher's tick: the channel's changes since its last frame, as one update. False: the connection is behind."""
        if self.closed or self.subs.get(sub.name) is not sub or not sub.ready:
            return True  # gone, or its snapshot (which holds the changes) is still to come
        if self.behind():
            return False  # merged into a later frame once the socket catches up
        data = sub.live.book.take_changes()
        if data is None:
            return True
        del data["type"]
        seq = self._portfolio_seqs[sub.name] = self._portfolio_seqs.get(sub.name, 0) + 1
        sub.seq = seq
        ts, sub.ts = sub.ts or now_ms(), 0
        self.send({"type": "update", "ch": sub.name, "epoch": self.connection_id, "seq": seq, "ts": ts, "data": data})
        return True

    def portfolio_subs(self) -> list[PortfolioSub]:
        return [sub for sub in self.subs.values() if isinstance(sub, PortfolioSub)]
