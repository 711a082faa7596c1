"""Fan-out of the market channels inside one server process: one hub per process, one outbox per socket.

**The hub.** The feed worker publishes each symbol's messages of a window once, as one
orjson payload on the Redis pub/sub channel `{prefix}:live:{symbol}` (`streams.publish_market`).
In a server process, one `LocalHub` (per event loop, so one per daphne or uvicorn worker)
keeps ONE Redis connection. It subscribes to a symbol's channel while at least one local
sink (a `/ws/v1/market` connection) holds one of that symbol's market channels, reference
counted per (market channel, sink); when the last one goes it unsubscribes, and with no
symbol left it closes the connection. Its reader decodes each payload once and, for each
message that a local sink wants, encodes the client's `update` frame once (`encode_update`)
and hands the same (message, frame) to every such sink. It never awaits a sink: `deliver`
is synchronous and only queues the frame, so one slow socket cannot delay the others.

Without a Redis channel layer (tests, one process), `publish_local` feeds the same path.

Subscribing waits until Redis has confirmed the subscription (SUBSCRIBE's reply on the
hub's connection), so a consumer that reads the history after `subscribe` returns cannot
miss a message published in between: it arrives live, and the consumer drops it by seq if
the history had it already. A subscription Redis does not confirm within
SUBSCRIBE_TIMEOUT_SECONDS fails (the consumer answers `server_error`).

When the connection fails (an error, or no reply to a PING for 3 × PING_SECONDS), the hub
reconnects with backoff and subscribes again to every symbol still wanted. Messages
published meanwhile are lost to it: once each symbol is confirmed again, its sinks are told
(`missed`), and they catch up from the history (`marketdata.api.consumer`).

**The outbox.** Each connection's frames go to the ASGI server through its `Outbox`, in
order. While the server takes frames without waiting, `put` hands each one over at once
(no task switch per frame); once the server pushes back, frames wait in the outbox and the
connection's writer task takes over until it catches up. Whoever produces a frame (the
hub, a request, a timer) never waits for the socket. What a connection has not sent yet
is its outbox plus what the server holds for it, where the server lets us see that:

- daphne: `send` returns as soon as Twisted has buffered the frame, whatever the peer reads.
  `server_backlog` reads the socket's Twisted write buffer (and autobahn's queue), and the
  outbox hands daphne no more frames while it holds over SERVER_BUFFER_BYTES; the rest
  waits in the outbox. So unsent = outbox + Twisted's buffer, both seen.
- uvicorn (websockets-sansio, websockets, wsproto): `send` itself waits while the
  transport's buffer is over asyncio's high-water mark (64 KiB), so the outbox grows
  behind it. Unsent = outbox (seen) + up to 64 KiB and one frame in the transport (not seen).
- any other server: the outbox only.

The kernel's socket buffers come before all of these and are seen by no one.

A connection whose unsent data stays over `MARKET_WS_SEND_BUFFER_BYTES` for
`MARKET_WS_SLOW_SECONDS` (sampled every SAMPLE_SECONDS while it is over), or whose outbox
alone passes HARD_LIMIT_FACTOR × that bound, is a slow consumer: its outbox is dropped and
the consumer closes it with 4408. The close frame goes out after what the server already
buffered for the socket; a peer that is not reading at all never sees it, and the server
drops the TCP connection when its closing handshake times out (daphne: 1 s; uvicorn: when
its keepalive ping goes unanswered). Either way the client reconnects and resumes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis

from marketdata import groups
from marketdata.api.channels import channel_parse

log = logging.getLogger(__name__)

Message = dict[str, Any]

SUBSCRIBE_TIMEOUT_SECONDS = 5.0
PING_SECONDS = 5.0  # the hub pings Redis this often; no reply for three times as long and it reconnects
RECONNECT_SECONDS = (0.1, 5.0)  # backoff: first wait, longest wait
SERVER_BUFFER_BYTES = 65536  # under daphne, the writer waits while Twisted holds more than this for the socket
SAMPLE_SECONDS = 0.1  # how often a connection over its bound is looked at again
HARD_LIMIT_FACTOR = 4  # an outbox past this many times the bound is closed at once: memory stays bounded


def encode_update(message: Message) -> str:
    """The client's `update` frame for a market message: {"type": "update", "ch", "epoch", "seq", "ts", "data"[, "first_seq"]}."""
    return orjson.dumps({"type": "update", **message}).decode()


def encode_payload(messages: Sequence[Message]) -> bytes:
    """What the worker publishes for one symbol and window."""
    return orjson.dumps(messages)


class Sink(Protocol):
    """A local subscriber (a connection). Both methods are called on the hub's loop and must not block."""

    def deliver(self, message: Message, frame: str) -> None:
        """A live message of a channel the sink subscribed to, and its `update` frame, encoded once for every sink."""

    def missed(self, channels: Sequence[str]) -> None:
        """Live messages of these channels may have been lost (the hub's Redis connection failed): catch up from the history."""


@dataclass
class HubStats:
    payloads: int = 0  # payloads received (one per symbol per worker window)
    messages: int = 0  # messages in them
    encodes: int = 0  # update frames encoded (messages some local sink wanted)
    deliveries: int = 0  # (message, frame) handed to sinks
    reconnects: int = 0  # Redis connections lost


@dataclass(eq=False)
class _Topic:
    """One symbol's Redis channel and the local sinks of each of its market channels."""

    symbol: str
    key: bytes
    routes: dict[str, dict[Sink, None]] = field(default_factory=dict)  # market channel → sinks (ordered set)
    ready: asyncio.Future[None] | None = None  # resolved when Redis confirmed the SUBSCRIBE; None: in-process
    live: bool = False  # subscribed on the current connection
    stale: bool = False  # was live when a connection was lost: its sinks are told once it is live again


_IDLE = ("IDLE", b"", None)  # queued when the last topic went: the session ends if none came back meanwhile
_Command = tuple[str, bytes, "asyncio.Future[None] | None"]


class LocalHub:
    """The market channels' live messages for the sinks of this process (see the module docstring).

    `redis`: (address, key prefix) of the server the worker publishes on, or None for the
    in-process fallback (`publish_local`).
    """

    def __init__(self, redis: tuple[str, str] | None = None, *, socket_timeout: float = 30) -> None:
        self.redis = redis
        self.socket_timeout = socket_timeout
        self.stats = HubStats()
        self._topics: dict[bytes, _Topic] = {}
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Command] = asyncio.Queue()
        self._confirms: dict[bytes, deque[asyncio.Future[None] | None]] = {}
        self._heard = 0.0
        self.connection_id: int | None = None  # Redis's CLIENT ID of the current connection

    # -- maps ---------------------------------------------------------------------------------

    def key(self, symbol: str) -> bytes:
        prefix = self.redis[1] if self.redis is not None else ""
        return groups.live_channel(prefix, symbol).encode()

    def symbols(self) -> set[str]:
        """The symbols this process is subscribed to (or subscribing to)."""
        return {topic.symbol for topic in self._topics.values()}

    def sinks(self, channel: str | None = None) -> set[Sink]:
        """Every sink of `channel` (None: of any channel)."""
        out: set[Sink] = set()
        for topic in self._topics.values():
            for name, sinks in topic.routes.items():
                if channel is None or name == channel:
                    out.update(sinks)
        return out

    @property
    def connected(self) -> bool:
        """Whether the hub holds a Redis connection (it does while any symbol is wanted)."""
        return self._task is not None

    # -- subscribing --------------------------------------------------------------------------

    async def subscribe(self, sink: Sink, channels: Iterable[str]) -> None:
        """Deliver these market channels' live messages to `sink`; returns once they flow (Redis confirmed).

        All or nothing: on failure (TimeoutError when Redis does not confirm in time) the sink holds none of them.
        """
        added: list[tuple[_Topic, str]] = []
        waits: set[asyncio.Future[None]] = set()
        for name, symbol in [(name, channel_parse(name).symbol) for name in channels]:  # all checked before any is taken
            topic = self._topic(symbol)
            sinks = topic.routes.setdefault(name, {})
            if sink not in sinks:
                sinks[sink] = None
                added.append((topic, name))
            if topic.ready is not None and not topic.ready.done():
                waits.add(topic.ready)
        if not waits:
            return
        try:
            _done, pending = await asyncio.wait(waits, timeout=SUBSCRIBE_TIMEOUT_SECONDS)
            if pending:
                raise TimeoutError(f"Redis did not confirm the market subscriptions within {SUBSCRIBE_TIMEOUT_SECONDS} s")
        except BaseException:
            for topic, name in added:
                self._drop(topic, name, sink)
            raise

    def unsubscribe(self, sink: Sink, channels: Iterable[str]) -> None:
        """Stop delivering these channels to `sink` (channels it does not hold are ignored). Never waits."""
        for name in channels:
            topic = self._topics.get(self.key(channel_parse(name).symbol))
            if topic is not None:
                self._drop(topic, name, sink)

    def _topic(self, symbol: str) -> _Topic:
        key = self.key(symbol)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = _Topic(symbol, key)
            if self.redis is not None:
                topic.ready = asyncio.get_running_loop().create_future()
                self._queue.put_nowait(("SUBSCRIBE", key, topic.ready))
                if self._task is None:
                    self._task = asyncio.ensure_future(self._run())
        return topic

    def _drop(self, topic: _Topic, name: str, sink: Sink) -> None:
        sinks = topic.routes.get(name)
        if sinks is None or sink not in sinks:
            return
        del sinks[sink]
        if not sinks:
            del topic.routes[name]
        if not topic.routes and self._topics.get(topic.key) is topic:
            del self._topics[topic.key]
            if self.redis is not None:
                self._queue.put_nowait(("UNSUBSCRIBE", topic.key, None))
                if not self._topics:
                    self._queue.put_nowait(_IDLE)

    # -- delivering ---------------------------------------------------------------------------

    def publish_local(self, symbol: str, payload: bytes) -> None:
        """The in-process fallback: a payload as the worker publishes it, delivered without Redis."""
        self._on_payload(self.key(symbol), payload)

    def _on_payload(self, key: bytes, payload: bytes) -> None:
        topic = self._topics.get(key)
        if topic is None:
            return
        try:
            messages = orjson.loads(payload)
            if not isinstance(messages, list):
                raise TypeError(f"a payload is a list of messages, not {type(messages).__name__}")
        except (orjson.JSONDecodeError, TypeError):
            log.warning("market hub: dropped a malformed payload on %r: %.200r", key, payload)
            return
        stats = self.stats
        stats.payloads += 1
        stats.messages += len(messages)
        for message in messages:
            try:
                sinks = topic.routes.get(message["ch"])
            except (KeyError, TypeError):
                log.warning("market hub: dropped a malformed message: %.200r", message)
                continue
            if not sinks:
                continue
            frame = encode_update(message)  # once, for every local sink
            stats.encodes += 1
            for sink in tuple(sinks):  # a sink may leave while it is handed the message
                stats.deliveries += 1
                try:
                    sink.deliver(message, frame)
                except Exception:
                    log.exception("market hub: a sink failed on %s", message.get("ch"))

    def _tell_missed(self, topic: _Topic) -> None:
        by_sink: dict[Sink, list[str]] = {}
        for name, sinks in topic.routes.items():
            for sink in sinks:
                by_sink.setdefault(sink, []).append(name)
        for sink, names in by_sink.items():
            try:
                sink.missed(names)
            except Exception:
                log.exception("market hub: a sink failed to catch up on %s", topic.symbol)

    # -- the Redis connection -----------------------------------------------------------------

    async def _run(self) -> None:
        """Keep a subscribed connection while any symbol is wanted; reconnect with backoff when it fails."""
        assert self.redis is not None
        delay = RECONNECT_SECONDS[0]
        try:
            while self._topics:
                try:
                    await self._session(self.redis[0])
                    delay = RECONNECT_SECONDS[0]
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.stats.reconnects += 1
                    for topic in self._topics.values():
                        topic.stale = topic.stale or topic.live
                        topic.live = False
                    log.warning("market hub: lost its Redis connection (%s: %s); reconnecting in %.1f s", type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_SECONDS[1])
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                self.connection_id = None

    async def _session(self, address: str) -> None:
        """One connection: subscribe to every wanted symbol, then read, write and ping until idle or broken."""
        # RESP2: messages arrive as plain replies, in order with SUBSCRIBE's confirmations (RESP3, redis-py 8's
        # default, would route them to a push handler instead).
        client = aioredis.Redis.from_url(
            address, protocol=2, socket_timeout=self.socket_timeout, socket_connect_timeout=self.socket_timeout
        )
        connection = client.connection_pool.make_connection()
        try:
            await connection.connect()
            await connection.send_command("CLIENT", "ID")
            self.connection_id = int(await connection.read_response())
            # What was queued was meant for a lost connection (or none): subscribe afresh to what is wanted now.
            self._queue = queue = asyncio.Queue[_Command]()
            self._confirms = {}
            if not self._topics:
                return
            loop = asyncio.get_running_loop()
            for topic in self._topics.values():
                if topic.ready is None or topic.ready.done():
                    topic.ready = loop.create_future()
                queue.put_nowait(("SUBSCRIBE", topic.key, topic.ready))
            self._heard = loop.time()
            tasks = [asyncio.ensure_future(job) for job in (self._write(connection, queue), self._read(connection), self._watch(queue))]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()  # the writer ends (returns) when idle; the others raise
        finally:
            self.connection_id = None
            await connection.disconnect(nowait=True)
            await client.aclose()

    async def _write(self, connection: Any, queue: asyncio.Queue[_Command]) -> None:
        while True:
            batch = [await queue.get()]
            while not queue.empty():
                batch.append(queue.get_nowait())
            commands = []
            for command, key, future in batch:
                if command == "IDLE":
                    if not self._topics:
                        return  # closing the connection drops whatever it is still subscribed to
                    continue
                if command == "SUBSCRIBE":
                    self._confirms.setdefault(key, deque()).append(future)
                commands.append((command, key) if key else (command,))
            if commands:
                await connection.send_packed_command(connection.pack_commands(commands))

    async def _read(self, connection: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            reply = await connection.read_response(timeout=math.inf, disconnect_on_error=False)
            self._heard = loop.time()
            if not isinstance(reply, list) or not reply:
                continue  # PONG when subscribed to nothing
            kind = reply[0]
            if kind == b"message":
                self._on_payload(reply[1], reply[2])
            elif kind == b"subscribe":
                self._on_subscribed(reply[1])

    def _on_subscribed(self, key: bytes) -> None:
        confirms = self._confirms.get(key)
        future = confirms.popleft() if confirms else None
        if not confirms:
            self._confirms.pop(key, None)
        if future is not None and not future.done():
            future.set_result(None)
        topic = self._topics.get(key)
        if topic is None or topic.ready is not future:
            return  # the confirmation of a subscription given up since
        topic.live = True
        if topic.stale:
            topic.stale = False
            self._tell_missed(topic)

    async def _watch(self, queue: asyncio.Queue[_Command]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PING_SECONDS)
            silent = loop.time() - self._heard
            if silent > 3 * PING_SECONDS:
                raise ConnectionError(f"Redis has not answered for {silent:.0f} s")
            queue.put_nowait(("PING", b"", None))


# ------------------------------------------------------------------ per connection


def server_send(send: Any) -> Any:
    """The ASGI server's own `send` beneath channels' session middleware.

    `InstanceSessionWrapper.send` saves the session and sets its cookie on HTTP
    responses only; a WebSocket frame passes straight through it. Frames go to the
    server's `send` directly, which saves a wrapper per frame and lets
    `server_backlog` find the socket.
    """
    for _ in range(8):
        inner = getattr(getattr(send, "__self__", None), "real_send", None)
        if inner is None:
            break
        send = inner
    return send


def server_backlog(send: Any) -> Callable[[], int] | None:
    """How many bytes the ASGI server holds unsent for the socket behind `send`, where it lets us see: daphne.

    daphne hands applications `functools.partial(server.handle_reply, protocol)`; the
    protocol is autobahn's, over a Twisted transport (TLS wraps a TCP one). Their unsent
    bytes are autobahn's send queue plus each Twisted buffer (`dataBuffer` from `offset`,
    and `_tempDataLen` not yet moved into it). None for any other server.
    """
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    transports = []
    transport = getattr(protocol, "transport", None)
    for _ in range(4):
        if transport is None:
            break
        if all(hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")):
            transports.append(transport)
        transport = getattr(transport, "transport", None)
    queue = getattr(protocol, "send_queue", None)
    if not transports or not isinstance(queue, deque):
        return None

    def backlog() -> int:
        total = sum(len(data) for data, _sync in queue) if queue else 0
        for buffered in transports:
            total += len(buffered.dataBuffer) - buffered.offset + buffered._tempDataLen
        return total

    return backlog


@dataclass(frozen=True, slots=True)
class _Close:
    code: int


class Outbox:
    """One connection's frames on their way to the ASGI server, in order and bounded (see the module docstring).

    `send` is the server's ASGI `send`; `close(code)` closes the socket. `on_slow(reason)`
    is called once, synchronously, when the connection is found slow: the outbox has
    dropped its frames by then, and the owner closes the socket (4408). `backlog` reports
    what the server holds unsent (`server_backlog`), when it can.

    A frame is handed to the server at once, from `put`, while the server takes frames
    without waiting (the server's `send` coroutine is run until it first suspends, as an
    eager task would be): no task switch per frame. Once the server pushes back (its
    `send` suspends, or under daphne it holds over SERVER_BUFFER_BYTES for the socket),
    frames queue here and the writer task takes over until the server catches up.
    """

    def __init__(
        self,
        *,
        send: Callable[[dict[str, Any]], Awaitable[None]],
        close: Callable[[int], Awaitable[None]],
        on_slow: Callable[[str], None],
        limit: int,
        slow_seconds: float,
        backlog: Callable[[], int] | None = None,
    ) -> None:
        self._send = send
        self._close = close
        self._on_slow = on_slow
        self.limit = limit
        self.hard_limit = HARD_LIMIT_FACTOR * limit
        self.slow_seconds = float(slow_seconds)
        self._backlog = backlog
        self._frames: deque[str | _Close] = deque()
        self.queued = 0  # characters of the frames queued (the bytes of ASCII JSON)
        self.peak = 0  # the most `unsent()` was seen to be
        self.over_since: float | None = None  # monotonic time unsent data went over the bound
        self.closed = False  # no more frames are taken
        self.finished = False  # the close was handed to the server, or the server refused a frame: nothing more goes out
        self._blocked: tuple[Coroutine[Any, Any, None], Any] | None = None  # a send the server suspended, and what it awaits
        self._holding = False  # daphne holds too much for the socket: the writer waits for it
        self._pumping = False
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None  # started the first time the server pushes back

    def _take_over(self) -> None:
        """The server pushes back: let the writer task carry on from here."""
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write())

    def unsent(self) -> int:
        """Characters not yet sent that we can see: the outbox, plus the server's buffer where visible."""
        return self.queued + (self._backlog() if self._backlog is not None else 0)

    def put(self, text: str) -> None:
        if self.closed:
            return
        backlog = self._backlog
        if not (self._frames or self._blocked is not None or self._holding or self._pumping) and (
            backlog is None or backlog() <= SERVER_BUFFER_BYTES
        ):
            # Nothing ahead of it and the server takes frames: straight to the server (the common case).
            if self._hand(text) and backlog is not None and self.over_since is None:
                self._check_over()
            return
        self._frames.append(text)
        self.queued += len(text)
        if self.queued > self.peak:
            self.peak = self.queued
        if self.queued > self.hard_limit:
            self._slow(f"{self.queued} characters queued, over the hard limit of {self.hard_limit}")
            return
        if self._blocked is None and not self._holding:
            self._pump()
        if self.over_since is None:
            self._check_over()

    def _check_over(self) -> None:
        unsent = self.unsent()
        if unsent > self.limit:
            self.peak = max(self.peak, unsent)
            self.over_since = time.monotonic()
            self._timer = asyncio.get_running_loop().call_later(SAMPLE_SECONDS, self._sample)

    def close(self, code: int) -> None:
        """Send what is queued, then close the socket with `code`; nothing more is taken."""
        if self.closed:
            return
        self.closed = True
        self._frames.append(_Close(code))
        if self._blocked is None and not self._holding:
            self._pump()

    def abandon(self) -> None:
        """Drop everything and stop writing (the socket is gone, or is being closed as slow)."""
        self.closed = self.finished = True
        self._frames.clear()
        self.queued = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        elif self._blocked is not None:
            self._blocked[0].close()
            self._blocked = None

    def _pump(self) -> None:
        """Hand the server queued frames for as long as it takes them without waiting; else wake the writer."""
        if self._pumping:
            return  # a send re-entered put: the loop below takes the frame
        self._pumping = True
        frames = self._frames
        try:
            while frames and not self.finished:
                if self._backlog is not None and self._backlog() > SERVER_BUFFER_BYTES:
                    self._holding = True  # daphne never pushes back: hold the frames here meanwhile
                    self._take_over()
                    return
                item = frames.popleft()
                if isinstance(item, str):
                    self.queued -= len(item)
                else:
                    self.finished = True
                if not self._hand(item):
                    return
        finally:
            self._pumping = False

    def _hand(self, item: str | _Close) -> bool:
        """Give the server a frame (or the close): True when it took it without waiting.

        Its coroutine runs here until it first suspends; if it does (the server pushes
        back), the writer task sees it through and queued frames wait behind it.
        """
        if isinstance(item, str):
            coroutine: Coroutine[Any, Any, None] = self._send({"type": "websocket.send", "text": item})  # type: ignore[assignment]
        else:
            coroutine = self._close(item.code)  # type: ignore[assignment]
        try:
            awaiting = coroutine.send(None)
        except StopIteration:
            return True
        except Exception as exc:
            self._refused(exc)
            return False
        self._blocked = (coroutine, awaiting)
        self._take_over()
        return False

    def _refused(self, exc: BaseException) -> None:
        # The server refused a frame: the socket is gone, and its disconnect follows.
        log.debug("outbox: the server refused a frame (%s); nothing more is sent", exc)
        self.closed = self.finished = True
        self._frames.clear()
        self.queued = 0

    async def _write(self) -> None:
        """Takes over while the server pushes back: finishes the suspended send, or waits for daphne's buffer to drain."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while not (self.finished and self._blocked is None):
                if self._blocked is not None:
                    coroutine, awaiting = self._blocked
                    try:
                        await _see_through(coroutine, awaiting)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        self._blocked = None
                        self._refused(exc)
                        break
                    self._blocked = None
                elif self._holding:
                    await asyncio.sleep(SAMPLE_SECONDS / 5)
                    self._holding = False
                else:
                    break
                self._pump()

    def _sample(self) -> None:
        self._timer = None
        if self.closed or self.over_since is None:
            return
        unsent = self.unsent()
        self.peak = max(self.peak, unsent)
        if unsent <= self.limit:
            self.over_since = None
            return
        behind = time.monotonic() - self.over_since
        if behind >= self.slow_seconds:
            self._slow(f"{unsent} characters unsent for {behind:.1f} s (bound {self.limit})")
            return
        self._timer = asyncio.get_running_loop().call_later(SAMPLE_SECONDS, self._sample)

    def _slow(self, reason: str) -> None:
        self.abandon()
        self._on_slow(reason)


async def _see_through(coroutine: Coroutine[Any, Any, None], awaiting: Any) -> None:
    """Run a coroutine that was started by hand (`coroutine.send(None)`) and suspended on `awaiting`, to its end.

    What a task does for its coroutine: wait for the future it yielded (a bare `yield`
    is one turn of the loop), then resume it, which reads the future's result or
    exception. Cancelled meanwhile, the coroutine is closed.
    """
    try:
        while True:
            if awaiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait([awaiting])
            awaiting = coroutine.send(None)
    except StopIteration:
        return
    except asyncio.CancelledError:
        coroutine.close()
        raise
