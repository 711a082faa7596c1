"""Fan-out of the market channels inside one server process: one hub per process, one outbox per socket.

**The hub.** The feed worker publishes each symbol's messages of a window once, as one
orjson payload on the Redis pub/sub channel `{prefix}:live:{key}` (`streams.publish_market`),
`key` being the stream's `groups.market_key`: the symbol, or `SYM?session=NAME` for a
replay session's channels (`replay_feed --sandbox`), which are a stream of their own.
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

Through Sentinel (`config.redis_hosts`), each connection goes to the master the sentinels name
at that moment; the hub also ends a session once they name another (`_follow`, every
MASTER_CHECK_SECONDS), and waits at most that long between tries. With several Redis servers,
`ShardedHub` holds one `LocalHub`, so one connection, per server.

Each connection's frames reach the ASGI server through its outbox (`marketdata.delivery.outbox`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from config import metrics
from config.redis_hosts import MASTER_CHECK_SECONDS, RedisServer, shard_index
from marketdata import groups
from marketdata.api.channels import channel_parse
from marketdata.events import PriceUpdate
from marketdata.worker.market import ticker_price

log = logging.getLogger(__name__)

Message = dict[str, Any]

SUBSCRIBE_TIMEOUT_SECONDS = 5.0
PING_SECONDS = 5.0  # the hub pings Redis this often; no reply for three times as long and it reconnects
RECONNECT_SECONDS = (0.1, 5.0)  # backoff: first wait, longest wait


def encode_frame(frame: Mapping[str, Any]) -> str:
    """Any frame a socket is sent, as compact JSON text (orjson: the one encoder of every frame)."""
    return orjson.dumps(frame).decode()


def encode_update(message: Message) -> str:
    """The client's `update` frame for a market message: {"type": "update", "ch", "epoch", "seq", "ts", "data"[, "first_seq"]}."""
    return orjson.dumps({"type": "update", **message}).decode()


def encode_payload(messages: Sequence[Message], fence: int | None = None, at: float | None = None) -> bytes:
    """What the worker publishes for one symbol and window: the messages, and the fencing token of the
    worker's lease on the symbol (`marketdata.worker.leases`; None without leases); `at`: when it was
    published (Unix time), for the fan-out lag the hubs report (config/metrics.py)."""
    if at is None:
        return orjson.dumps({"fence": fence, "messages": messages})
    return orjson.dumps({"fence": fence, "messages": messages, "at": at})


class Update:
    """One live message as the hub hands it to every local sink that wants it.

    Made once per message per process. Its `update` frame (for API sockets) and, for a
    ticker, its price (for portfolio books) are each made once, on first use, and then
    shared by every sink: nothing per sink but the call.
    """

    __slots__ = ("_frame", "_price", "_stats", "message")

    def __init__(self, message: Message, stats: HubStats) -> None:
        self.message = message
        self._stats = stats
        self._frame: str | None = None
        self._price: PriceUpdate | None = None

    @property
    def frame(self) -> str:
        if self._frame is None:
            self._frame = encode_update(self.message)
            self._stats.encodes += 1
        return self._frame

    @property
    def price(self) -> PriceUpdate:
        """The price a `ticker:SYM` message carries (ValueError for another channel or a malformed ticker)."""
        if self._price is None:
            self._price = ticker_price(self.message)
            self._stats.decodes += 1
        return self._price


class Sink(Protocol):
    """A local subscriber (a connection). Both methods are called on the hub's loop and must not block."""

    def deliver(self, update: Update) -> None:
        """A live message of a channel the sink subscribed to."""

    def missed(self, channels: Sequence[str]) -> None:
        """Live messages of these channels may have been lost (the hub's Redis connection failed): catch up from the history."""


@dataclass
class HubStats:
    payloads: int = 0  # payloads received (one per symbol per worker window)
    messages: int = 0  # messages in them
    encodes: int = 0  # update frames encoded (once per message some API socket wanted)
    decodes: int = 0  # ticker prices decoded (once per ticker message some portfolio book wanted)
    deliveries: int = 0  # updates handed to sinks
    malformed: int = 0  # payloads or messages dropped as malformed (logged)
    fenced: int = 0  # payloads dropped for a fencing token older than one heard: a producer that lost its lease (logged)
    reconnects: int = 0  # Redis connections lost


@dataclass(eq=False)
class _Topic:
    """One stream's Redis channel and the local sinks of each of its market channels."""

    symbol: str  # the stream's market key: the symbol, or SYM?session=NAME
    key: bytes
    routes: dict[str, dict[Sink, None]] = field(default_factory=dict)  # market channel → sinks (ordered set)
    ready: asyncio.Future[None] | None = None  # resolved when Redis confirmed the SUBSCRIBE; None: in-process
    ticker: Update | None = None  # the newest ticker message heard (the process's price cache)
    live: bool = False  # subscribed on the current connection
    stale: bool = False  # was live when a connection was lost: its sinks are told once it is live again
    fence: int = 0  # the newest fencing token heard: a payload with an older one is from a producer that was taken over


_IDLE = ("IDLE", b"", None)  # queued when the last topic went: the session ends if none came back meanwhile
_Command = tuple[str, bytes, "asyncio.Future[None] | None"]


class LocalHub:
    """The market channels' live messages for the sinks of this process (see the module docstring).

    `redis`: (server, key prefix) of the server the worker publishes on, or None for the
    in-process fallback (`publish_local`).
    """

    def __init__(self, redis: tuple[RedisServer, str] | None = None, *, socket_timeout: float = 30) -> None:
        self.redis = redis
        self.socket_timeout = socket_timeout
        self.stats = HubStats()
        self._topics: dict[bytes, _Topic] = {}
        self._task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Command] = asyncio.Queue()
        self._confirms: dict[bytes, deque[asyncio.Future[None] | None]] = {}
        self._heard = 0.0
        self.connection_id: int | None = None  # Redis's CLIENT ID of the current connection
        metrics.hub_created(self)  # its stats reach Prometheus once a second, not per message

    # -- maps ---------------------------------------------------------------------------------

    def key(self, stream: str) -> bytes:
        """The Redis channel of a stream (`groups.market_key`: a symbol, or a symbol in a replay session)."""
        prefix = self.redis[1] if self.redis is not None else ""
        return groups.live_channel(prefix, stream).encode()

    def symbols(self) -> set[str]:
        """The streams this process is subscribed to (or subscribing to): symbols, and SYM?session=NAME for sessions."""
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
        for name, stream in [(name, channel_parse(name).market_key) for name in channels]:  # all checked before any is taken
            topic = self._topic(stream)
            sinks = topic.routes.setdefault(name, {})
            if sink not in sinks:
                sinks[sink] = None
                added.append((topic, name))
                metrics.sink_tally(sink).subscriptions += 1
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
            topic = self._topics.get(self.key(channel_parse(name).market_key))
            if topic is not None:
                self._drop(topic, name, sink)

    def _topic(self, stream: str) -> _Topic:
        key = self.key(stream)
        topic = self._topics.get(key)
        if topic is None:
            topic = self._topics[key] = _Topic(stream, key)
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
        metrics.sink_tally(sink).subscriptions -= 1
        if not sinks:
            del topic.routes[name]
        if not topic.routes and self._topics.get(topic.key) is topic:
            del self._topics[topic.key]
            if self.redis is not None:
                self._queue.put_nowait(("UNSUBSCRIBE", topic.key, None))
                if not self._topics:
                    self._queue.put_nowait(_IDLE)

    # -- delivering ---------------------------------------------------------------------------

    def publish_local(self, stream: str, payload: bytes) -> None:
        """The in-process fallback: a payload as the worker publishes it (on a `groups.market_key`), delivered without Redis."""
        self._on_payload(self.key(stream), payload)

    def _on_payload(self, key: bytes, payload: bytes) -> None:
        topic = self._topics.get(key)
        if topic is None:
            return
        stats = self.stats
        try:
            decoded = orjson.loads(payload)
            messages, fence = decoded["messages"], decoded["fence"]
            if not isinstance(messages, list) or not (fence is None or isinstance(fence, int)):
                raise TypeError("a payload is {'fence': int or null, 'messages': [...]}")
        except (orjson.JSONDecodeError, TypeError, KeyError):
            stats.malformed += 1
            log.warning("market hub: dropped a malformed payload on %r: %.200r", key, payload)
            return
        if fence is not None:
            if fence < topic.fence:
                stats.fenced += 1
                if stats.fenced in (1, 10, 100) or stats.fenced % 1000 == 0:
                    log.warning(
                        "market hub: dropped a payload of %s from a producer that lost its lease (token %d < %d; %d so far)",
                        topic.symbol,
                        fence,
                        topic.fence,
                        stats.fenced,
                    )
                return
            topic.fence = fence
        at = decoded.get("at")
        if at.__class__ is float:
            metrics.lag_observed(time.time() - at)
        stats.payloads += 1
        stats.messages += len(messages)
        for message in messages:
            try:
                channel = message["ch"]
                sinks = topic.routes.get(channel)
            except (KeyError, TypeError):
                stats.malformed += 1
                log.warning("market hub: dropped a malformed message: %.200r", message)
                continue
            update = Update(message, stats)
            if channel.startswith("ticker:"):
                topic.ticker = update
            if not sinks:
                continue
            for sink in tuple(sinks):  # a sink may leave while it is handed the message
                stats.deliveries += 1
                try:
                    sink.deliver(update)
                except Exception:
                    log.exception("market hub: a sink failed on %s", channel)

    def latest_ticker(self, symbol: str) -> Message | None:
        """The newest `ticker:SYM` message this process heard while subscribed to `symbol` without a break; None if none."""
        topic = self._topics.get(self.key(symbol))
        if topic is None or topic.ticker is None or topic.stale or (topic.ready is not None and not topic.live):
            return None
        return topic.ticker.message

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
                        topic.ticker = None
                        # A Redis that restarted empty has lost its fence counters: the next producer's token may be
                        # lower than the last one heard (the history's fenced writes still refuse a stale producer).
                        topic.fence = 0
                    log.warning("market hub: lost its Redis connection (%s: %s); reconnecting in %.1f s", type(exc).__name__, exc, delay)
                    await asyncio.sleep(delay)
                    # Through Sentinel a failover names a new master within seconds: try again at least every
                    # MASTER_CHECK_SECONDS (each try asks the sentinels first), not after the 5 s of the longest wait.
                    delay = min(delay * 2, MASTER_CHECK_SECONDS if self.redis[0].master else RECONNECT_SECONDS[1])
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                self.connection_id = None

    async def _session(self, server: RedisServer) -> None:
        """One connection: subscribe to every wanted symbol, then read, write and ping until idle or broken."""
        # RESP2: messages arrive as plain replies, in order with SUBSCRIBE's confirmations (RESP3, redis-py 8's
        # default, would route them to a push handler instead). Through Sentinel: on the master named now; after a
        # failover the old one's connection breaks, or the sentinels name another (`_follow`), and the next session asks again.
        client = await server.connect_subscriber(socket_timeout=self.socket_timeout)
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
            jobs = [self._write(connection, queue), self._read(connection), self._watch(queue)]
            if server.master:
                jobs.append(self._follow(server, connection))
            tasks = [asyncio.ensure_future(job) for job in jobs]
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

    async def _follow(self, server: RedisServer, connection: Any) -> None:
        """Through Sentinel: end the session once the sentinels name another master. A planned failover leaves the
        old primary up, and its subscribers connected, for about 10 s, while the worker already publishes on the new
        one (config.redis_hosts, `_BlockingSentinelPool`); the sinks catch up from the history once subscribed again."""
        sentinel = server.sentinel()
        try:
            while True:
                await asyncio.sleep(MASTER_CHECK_SECONDS)
                try:
                    master = await sentinel.discover_master(server.master)
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    continue  # no sentinel answers: the connection held still reaches the master it reached
                if tuple(master) != (connection.host, connection.port):
                    raise ConnectionError(f"the sentinels name {master[0]}:{master[1]} as the master now")
        finally:
            await sentinel.aclose()

    async def _watch(self, queue: asyncio.Queue[_Command]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PING_SECONDS)
            silent = loop.time() - self._heard
            if silent > 3 * PING_SECONDS:
                raise ConnectionError(f"Redis has not answered for {silent:.0f} s")
            queue.put_nowait(("PING", b"", None))


class ShardedHub:
    """The hub over several Redis servers (shards): one `LocalHub`, so one subscription connection, per server; each
    symbol's channels go to the hub of the server that holds it (`streams.shard_of`), where the worker publishes it."""

    def __init__(self, servers: Sequence[RedisServer], prefix: str, *, socket_timeout: float = 30) -> None:
        self.servers = tuple(servers)
        self.prefix = prefix
        self.shards = [LocalHub((server, prefix), socket_timeout=socket_timeout) for server in self.servers]

    def _hub(self, stream: str) -> LocalHub:
        return self.shards[shard_index(stream.partition("?")[0], len(self.shards))]

    def _split(self, channels: Iterable[str]) -> dict[int, list[str]]:
        """Channels by shard; every name checked first (ChannelError for a bad one, before any is taken)."""
        by_hub: dict[int, list[str]] = {}
        for name in channels:
            index = shard_index(channel_parse(name).symbol, len(self.shards))
            by_hub.setdefault(index, []).append(name)
        return by_hub

    async def subscribe(self, sink: Sink, channels: Iterable[str]) -> None:
        """As `LocalHub.subscribe`, on every shard concerned at once; all or nothing across them."""
        parts = list(self._split(channels).items())
        outcomes = await asyncio.gather(*(self.shards[i].subscribe(sink, names) for i, names in parts), return_exceptions=True)
        failed = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failed:
            for (i, names), outcome in zip(parts, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    self.shards[i].unsubscribe(sink, names)
            raise failed[0]

    def unsubscribe(self, sink: Sink, channels: Iterable[str]) -> None:
        for i, names in self._split(channels).items():
            self.shards[i].unsubscribe(sink, names)

    def latest_ticker(self, symbol: str) -> Message | None:
        return self._hub(symbol).latest_ticker(symbol)

    def publish_local(self, stream: str, payload: bytes) -> None:
        self._hub(stream).publish_local(stream, payload)

    def symbols(self) -> set[str]:
        return set().union(*(hub.symbols() for hub in self.shards))

    def sinks(self, channel: str | None = None) -> set[Sink]:
        return set().union(*(hub.sinks(channel) for hub in self.shards))

    @property
    def connected(self) -> bool:
        return any(hub.connected for hub in self.shards)
