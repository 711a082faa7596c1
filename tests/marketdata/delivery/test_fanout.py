"""The per-process market hub and the per-connection outbox (marketdata/delivery/fanout.py, outbox.py), through the seam and the real consumer.

- Reference counting: one Redis subscription per process per symbol, whatever the
  number of local sockets; subscribe, unsubscribe and disconnect leave no Redis
  subscription (PUBSUB NUMSUB on the real server) and no sink behind.
- `subscribe_market` returns only once Redis confirmed: a message published right
  after it returns is never lost.
- One encode per update, whatever the number of local sockets.
- Slow consumers: a socket whose server stopped taking frames is closed with 4408
  after MARKET_WS_SLOW_SECONDS over the bound (or at once past the hard limit), and
  a healthy socket beside it receives every update before the next is published.
  The "server" here behaves as uvicorn does: its `send` waits while the socket's
  transport is over its high-water mark (`GatedCommunicator`).
- A lost Redis connection is noticed, re-established, and the sockets catch up from
  the history without waiting for the next live message.

Throttling (`throttle_ms`) keeps its semantics on the hub path: tests/marketdata/api/test_consumer.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings

from config.asgi import application
from marketdata import groups
from marketdata.api.consumer import MarketConsumer
from marketdata.delivery import fanout, streams
from marketdata.delivery.history import market_store
from tests.conftest import until
from tests.marketdata.api.test_consumer import URL, Client, Feed, seqs

pytestmark = pytest.mark.django_db(transaction=True)

Frame = dict[str, Any]


class Sink:
    """A hub subscriber recording what it is handed."""

    def __init__(self) -> None:
        self.messages: list[Frame] = []
        self.frames: list[str] = []
        self.missed_channels: list[str] = []

    def deliver(self, update: fanout.Update) -> None:
        self.messages.append(update.message)
        self.frames.append(update.frame)

    def missed(self, channels: Sequence[str]) -> None:
        self.missed_channels.extend(channels)


@pytest.fixture
async def redis(redis_layer: dict[str, Any]) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_layer["CONFIG"]["hosts"][0]["address"])
    yield client
    await client.aclose()


async def numsub(redis: aioredis.Redis, prefix: str, symbol: str) -> int:
    [(_, count)] = await redis.pubsub_numsub(groups.live_channel(prefix, symbol))
    return int(count)


async def unsubscribed(redis: aioredis.Redis, prefix: str, symbol: str) -> bool:
    return await numsub(redis, prefix, symbol) == 0


async def connection_gone(redis: aioredis.Redis, connection_id: int | None) -> bool:
    """Whether Redis no longer knows the connection with this CLIENT ID."""
    assert connection_id is not None
    return connection_id not in {int(client["id"]) for client in await redis.client_list()}


# ------------------------------------------------------------------ reference counting


@pytest.mark.redis
async def test_one_redis_subscription_per_symbol_counted_over_sinks_and_channels(redis: aioredis.Redis, layer_prefix: str) -> None:
    hub = streams.market_hub()
    a, b, c = Sink(), Sink(), Sink()
    await streams.subscribe_market(a, ["ticker:BTC-USD", "book:BTC-USD@depth=10"])
    await streams.subscribe_market(b, ["ticker:BTC-USD"])
    await streams.subscribe_market(c, ["ticker:AAPL"])
    assert (await numsub(redis, layer_prefix, "BTC-USD"), await numsub(redis, layer_prefix, "AAPL")) == (1, 1)
    assert hub.symbols() == {"BTC-USD", "AAPL"}
    assert (hub.sinks("ticker:BTC-USD"), hub.sinks("book:BTC-USD@depth=10"), hub.sinks("ticker:AAPL")) == ({a, b}, {a}, {c})

    feed = Feed()
    ticker, book, trades = feed.tick("BTC-USD", "1"), feed.book("BTC-USD", [["1", "1"]], []), feed.make("trades:BTC-USD", {"trades": []})
    await streams.publish_market("BTC-USD", [ticker, book, trades])
    await until(lambda: len(a.messages) == 2 and len(b.messages) == 1, what="the BTC-USD messages")
    assert (a.messages, b.messages, c.messages) == ([ticker, book], [ticker], [])  # routed per channel; trades: nobody local

    streams.unsubscribe_market(a, ["ticker:BTC-USD"])
    streams.unsubscribe_market(b, ["ticker:BTC-USD", "ticker:MSFT"])  # one it never held is ignored
    assert hub.sinks("ticker:BTC-USD") == set() and hub.symbols() == {"BTC-USD", "AAPL"}  # a's book still holds BTC-USD
    assert await numsub(redis, layer_prefix, "BTC-USD") == 1
    streams.unsubscribe_market(a, ["book:BTC-USD@depth=10"])
    await until(lambda: unsubscribed(redis, layer_prefix, "BTC-USD"), what="BTC-USD unsubscribed in Redis")
    assert hub.symbols() == {"AAPL"} and await numsub(redis, layer_prefix, "AAPL") == 1

    connection = hub.connection_id
    streams.unsubscribe_market(c, ["ticker:AAPL"])
    # Nothing left: no symbol, no sink, no subscription, and no connection to Redis either.
    assert (hub.symbols(), hub.sinks()) == (set(), set())
    await until(lambda: unsubscribed(redis, layer_prefix, "AAPL"), what="AAPL unsubscribed in Redis")
    await until(lambda: connection_gone(redis, connection), what="the hub's connection closed")
    assert not hub.connected


@pytest.mark.redis
async def test_connections_coming_and_going_leave_no_subscription_and_no_sink_behind(
    instruments: Any, redis: aioredis.Redis, layer_prefix: str
) -> None:
    hub = streams.market_hub()
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect()) for _ in range(3)]
        for client in clients:
            await client.subscribe("ticker:BTC-USD", "book:BTC-USD@depth=1", "ticker:AAPL")
        connection = hub.connection_id
        consumers = hub.sinks()
        assert len(consumers) == 3 and all(isinstance(c, MarketConsumer) for c in consumers)
        assert (await numsub(redis, layer_prefix, "BTC-USD"), await numsub(redis, layer_prefix, "AAPL")) == (1, 1)

        reply = await clients[0].request({"op": "unsubscribe", "id": 2, "channels": ["ticker:BTC-USD", "book:BTC-USD@depth=1"]})
        assert reply["type"] == "unsubscribed"
        assert len(hub.sinks("ticker:BTC-USD")) == 2 and len(hub.sinks("ticker:AAPL")) == 3
        await clients[1].ws.disconnect()  # a socket going away
        await until(lambda: len(hub.sinks()) == 2, what="the disconnected socket leaving the hub")
        assert hub.sinks("ticker:BTC-USD") == hub.sinks("book:BTC-USD@depth=1") and len(hub.sinks("ticker:BTC-USD")) == 1

        feed = Feed()
        await feed.publish(feed.tick("BTC-USD", "1"))
        assert (await clients[2].recv(timeout=5))["seq"] == 1  # still flowing to the one left
        assert await clients[0].nothing()
    await until(lambda: not hub.sinks() and not hub.symbols(), what="the hub emptied")
    await until(lambda: unsubscribed(redis, layer_prefix, "BTC-USD"), what="BTC-USD unsubscribed in Redis")
    await until(lambda: unsubscribed(redis, layer_prefix, "AAPL"), what="AAPL unsubscribed in Redis")
    await until(lambda: connection_gone(redis, connection), what="the hub's connection closed")


@asynccontextmanager
async def connect(communicator: WebsocketCommunicator | None = None) -> AsyncIterator[Client]:
    """An anonymous bot connection through config.asgi.application (no Origin), always disconnected."""
    client = Client(communicator or WebsocketCommunicator(application, URL))
    try:
        connected, _ = await client.ws.connect(timeout=5)
        assert connected
        client.hello = await client.recv()
        yield client
    finally:
        await client.ws.disconnect()


@pytest.mark.redis
async def test_a_message_published_right_after_subscribe_returns_is_never_lost(redis: aioredis.Redis, layer_prefix: str) -> None:
    # Subscribing waits for Redis's confirmation: without it, a PUBLISH racing the SUBSCRIBE would go nowhere.
    feed = Feed()
    for n in range(20):
        symbol = f"SYM{n}"
        sink = Sink()
        await streams.subscribe_market(sink, [f"ticker:{symbol}"])
        await redis.publish(groups.live_channel(layer_prefix, symbol), fanout.encode_payload([feed.tick(symbol, "1")]))
        await until(lambda sink=sink: len(sink.messages) == 1, what=f"the message on {symbol}")
        streams.unsubscribe_market(sink, [f"ticker:{symbol}"])


@pytest.mark.redis
async def test_a_sink_that_fails_does_not_stop_the_others(redis_layer: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    class Broken(Sink):
        def deliver(self, update: fanout.Update) -> None:
            raise RuntimeError("broken sink")

    broken, healthy = Broken(), Sink()
    await streams.subscribe_market(broken, ["ticker:AAPL"])
    await streams.subscribe_market(healthy, ["ticker:AAPL"])
    await streams.publish_market("AAPL", [Feed().tick("AAPL", "1")])
    await until(lambda: len(healthy.messages) == 1, what="the healthy sink's message")
    assert any("a sink failed" in r.getMessage() for r in caplog.records)
    streams.unsubscribe_market(broken, ["ticker:AAPL"])
    streams.unsubscribe_market(healthy, ["ticker:AAPL"])


# ------------------------------------------------------------------ one encode per update


@pytest.mark.redis
async def test_each_update_is_encoded_once_for_fifty_local_sockets(
    instruments: Any, redis: aioredis.Redis, layer_prefix: str, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.MARKET_WS_ANONYMOUS_PER_ADDRESS = 50  # all fifty come from the test's one address
    encoded: list[Frame] = []
    encode = fanout.encode_update

    def counting(message: Frame) -> str:
        encoded.append(message)
        return encode(message)

    monkeypatch.setattr(fanout, "encode_update", counting)
    feed = Feed()
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(connect()) for _ in range(50)]
        for client in clients:
            await client.subscribe("ticker:BTC-USD")
        assert await numsub(redis, layer_prefix, "BTC-USD") == 1  # one subscription for the 50
        messages = [feed.tick("BTC-USD", str(v)) for v in range(1, 11)]
        for message in messages:
            await feed.publish(message)
        outputs = [[await client.ws.receive_output(timeout=5) for _ in messages] for client in clients]
    assert len(encoded) == len(messages) == 10  # not 500
    for n, message in enumerate(messages):
        texts = [output[n]["text"] for output in outputs]
        # Every socket was handed the very same string: serialised once, sent 50 times.
        assert len({id(text) for text in texts}) == 1
        assert json.loads(texts[0]) == {"type": "update", **message}


@pytest.mark.redis
async def test_the_tick_path_never_leaves_the_event_loop(
    instruments: Any, redis_layer: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Channels >= 4.2 hops to a thread on every channel-layer dispatch (to close old database connections);
    # live market messages reach the consumer from the hub, not through that dispatch.
    hops: list[object] = []
    call = SyncToAsync.__call__

    async def counting(self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any) -> Any:
        hops.append(self.func)
        return await call(self, *args, **kwargs)

    feed = Feed()
    async with connect() as ws, connect() as other:
        await ws.subscribe("ticker:BTC-USD", "book:BTC-USD@depth=10")
        await other.subscribe("ticker:BTC-USD", throttle_ms=50)
        monkeypatch.setattr(SyncToAsync, "__call__", counting)
        for v in range(10):
            await feed.publish(feed.tick("BTC-USD", str(v)), feed.book("BTC-USD", [[str(v), "1"]], []))
        assert seqs([await ws.recv(timeout=5) for _ in range(20)]) == [n for n in range(1, 11) for _ in (0, 1)]
        while (await other.recv(timeout=5))["seq"] < 10:
            pass
        assert hops == []
        await database_sync_to_async(lambda: None)()
        assert len(hops) == 1, "the spy sees a thread hop"


# ------------------------------------------------------------------ slow consumers


class GatedQueue(asyncio.Queue[Frame]):
    """A socket's way out that can stop taking frames, as a transport over its high-water mark does.

    uvicorn's `send` waits while its transport is paused (asyncio's `pause_writing`), so
    the application's writer blocks there and its own queue grows: that is what this
    models, with `writable` cleared.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writable = asyncio.Event()
        self.writable.set()

    async def put(self, item: Frame) -> None:
        await self.writable.wait()
        await super().put(item)


class GatedCommunicator(WebsocketCommunicator):
    def __init__(self) -> None:
        super().__init__(application, URL)
        self.gate = GatedQueue()
        self._output_queue = self.gate


def trades(feed: Feed, symbol: str, n: int = 40) -> Frame:
    """A trades message of about 3 KB."""
    return feed.make(
        f"trades:{symbol}", {"trades": [{"price": "87648.2", "size": "0.015", "side": "buy", "ts": 1795262641000 + i} for i in range(n)]}
    )


@asynccontextmanager
async def slow_and_healthy(instruments: Any) -> AsyncIterator[tuple[GatedCommunicator, Client, MarketConsumer, Feed]]:
    """Two sockets on trades:BTC-USD: one whose server stops taking frames, one healthy; and the slow one's consumer."""
    feed = Feed()
    hub = streams.market_hub()
    gated = GatedCommunicator()
    async with connect(gated) as slow, connect() as healthy:
        await slow.subscribe("trades:BTC-USD")
        [consumer] = hub.sinks("trades:BTC-USD")
        await healthy.subscribe("trades:BTC-USD")
        assert isinstance(consumer, MarketConsumer)
        yield gated, healthy, consumer, feed


async def publish_in_step(feed: Feed, healthy: Client, count: int) -> list[Frame]:
    """Publish `count` trades messages, each received by the healthy socket before the next is published (lag 0, by count)."""
    sent = []
    for _ in range(count):
        message = trades(feed, "BTC-USD")
        await feed.publish(message)
        update = await healthy.recv(timeout=5)
        assert (update["type"], update["seq"]) == ("update", message["seq"])
        sent.append(message)
    return sent


async def frames_then_close(gated: GatedCommunicator) -> tuple[list[Frame], int]:
    """Everything the slow socket's server got, once it takes frames again: the updates, then the close code."""
    gated.gate.writable.set()
    frames = []
    while True:
        output = await gated.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            return frames, int(output["code"])
        frames.append(json.loads(output["text"]))


async def test_a_slow_socket_is_closed_with_4408_after_the_slow_seconds_while_a_healthy_one_keeps_up(
    instruments: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.MARKET_WS_SEND_BUFFER_BYTES = 20_000
    settings.MARKET_WS_SLOW_SECONDS = 0.5
    hub = streams.market_hub()
    async with slow_and_healthy(instruments) as (gated, healthy, consumer, feed):
        outbox = consumer._outbox
        assert outbox is not None
        gated.gate.writable.clear()  # its server stops taking frames
        stopped = time.monotonic()
        sent = await publish_in_step(feed, healthy, 10)  # ~30 KB: over the bound, under the hard limit (80 KB)
        assert outbox.over_since is not None and outbox.unsent() > 20_000
        await until(lambda: consumer not in hub.sinks(), what="the slow socket leaving the hub")
        closed = time.monotonic()
        assert closed - stopped >= 0.5  # not before MARKET_WS_SLOW_SECONDS over the bound
        assert outbox.queued == 0 and outbox.peak <= outbox.hard_limit  # its frames dropped; memory stayed bounded
        # The healthy socket never noticed: still every update before the next is published.
        sent += await publish_in_step(feed, healthy, 5)
        frames, code = await frames_then_close(gated)
    assert code == 4408
    # What the slow socket got is a prefix of the stream with no gap, then the close: it resyncs on reconnect.
    assert seqs(frames) == seqs(sent[: len(frames)])
    assert any("slow consumer" in r.getMessage() for r in caplog.records)


async def test_a_socket_far_past_the_bound_is_closed_at_once(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_SEND_BUFFER_BYTES = 20_000
    settings.MARKET_WS_SLOW_SECONDS = 3600  # never reached: the hard limit closes it first
    hub = streams.market_hub()
    async with slow_and_healthy(instruments) as (gated, healthy, consumer, feed):
        outbox = consumer._outbox
        assert outbox is not None
        gated.gate.writable.clear()
        published = 0
        while consumer in hub.sinks():
            await publish_in_step(feed, healthy, 1)
            published += 1
            assert published < 40, "4 × 20 KB of 3 KB messages and it is still subscribed"
        assert outbox.peak <= outbox.hard_limit + 4000  # the frame that crossed it, at most
        frames, code = await frames_then_close(gated)
    assert code == 4408
    assert seqs(frames) == list(range(1, len(frames) + 1))


async def test_a_socket_behind_for_less_than_the_slow_seconds_keeps_everything(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_SEND_BUFFER_BYTES = 20_000
    settings.MARKET_WS_SLOW_SECONDS = 3600
    hub = streams.market_hub()
    async with slow_and_healthy(instruments) as (gated, healthy, consumer, feed):
        outbox = consumer._outbox
        assert outbox is not None
        gated.gate.writable.clear()
        sent = await publish_in_step(feed, healthy, 10)
        assert outbox.over_since is not None  # behind...
        gated.gate.writable.set()  # ...and catching up
        frames = [json.loads((await gated.receive_output(timeout=5))["text"]) for _ in sent]
        assert seqs(frames) == seqs(sent)
        await until(lambda: outbox.over_since is None, what="the outbox found back under its bound")
        assert consumer in hub.sinks()
        await feed.publish(message := trades(feed, "BTC-USD"))
        assert (await healthy.recv())["seq"] == (await Client(gated).recv())["seq"] == message["seq"]


# ------------------------------------------------------------------ a lost Redis connection


@pytest.mark.redis
async def test_after_a_lost_redis_connection_the_hub_resubscribes_and_sockets_catch_up_from_the_history(
    instruments: Any, redis: aioredis.Redis, layer_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    hub = streams.market_hub()
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "1"))
        assert (await ws.recv(timeout=5))["seq"] == 1
        # Published while the hub was away (in the history, never heard live): nothing shows it yet.
        await feed.store(feed.tick("BTC-USD", "2"))
        assert await ws.nothing(0.3)
        first = hub.connection_id
        await redis.client_kill_filter(_id=first)
        # The hub reconnects, subscribes again, and tells the socket, which catches up at once.
        update = await ws.recv(timeout=10)
        assert (update["type"], update["seq"], update["data"]["last"]) == ("update", 2, "2")
        assert hub.stats.reconnects == 1 and hub.connection_id not in (None, first)
        assert await numsub(redis, layer_prefix, "BTC-USD") == 1
        await feed.publish(feed.tick("BTC-USD", "3"))
        assert (await ws.recv(timeout=5))["seq"] == 3
        assert await ws.nothing()
    assert any("lost its Redis connection" in r.getMessage() for r in caplog.records)


@pytest.mark.redis
async def test_a_catch_up_whose_history_read_fails_on_a_redis_error_closes_the_socket_with_1013(
    instruments: Any, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under a request: the client tries again on a new socket (and subscribes from a snapshot). Seen with two Redis
    servers, one restarted: the history read used a connection the restart had broken, and nothing else closed the
    socket; the channel was unsubscribed with `server_error` instead, and its prices stopped."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    hub = streams.market_hub()
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "1"))
        assert (await ws.recv(timeout=5))["seq"] == 1
        store = type(market_store())

        async def broken(self: Any, channel: str, *, epoch: str, seq: int) -> Any:
            raise RedisConnectionError("Connection closed by server.")

        monkeypatch.setattr(store, "since", broken)
        await redis.client_kill_filter(_id=hub.connection_id)  # the hub reconnects and tells the socket to catch up
        assert await ws.closed_with(timeout=10) == 1013


@pytest.mark.redis
async def test_a_burst_of_requests_past_the_redis_pool_waits_instead_of_failing(redis_layer: dict[str, Any]) -> None:
    # A restarted server: every client reconnects and subscribes at once, each reading a snapshot.
    store = market_store()
    snapshots = await asyncio.gather(*(store.snapshot("ticker:BTC-USD") for _ in range(3 * settings.REDIS_MAX_CONNECTIONS)))
    assert {(s["epoch"], s["seq"]) for s in snapshots} == {("", 0)}
