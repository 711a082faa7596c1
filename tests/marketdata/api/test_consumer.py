"""/ws/v1/market, the market-data API v1, through the full ASGI application (origin check, session auth, router).

Conformance with docs/websocket-api.md: every op, reply, error code and close
code; snapshots and updates with no duplicate and no gap; resume; throttle;
heartbeat; limits; access. The feed worker is stood in for by `Feed`, which
does what it does: append to the history (`market_store`), then publish live.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from config.asgi import application
from marketdata import services
from marketdata.api.channels import channel_parse
from marketdata.api.consumer import MarketConsumer
from marketdata.delivery import outbox, streams
from marketdata.delivery.fanout import Update
from marketdata.delivery.history import market_store
from marketdata.events import PriceUpdate
from marketdata.models import ApiToken, Instrument
from portfolio.models import Portfolio
from tests.conftest import T0, count_queries, publish_price, record, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/ws/v1/market"
ORIGIN = (b"origin", b"http://localhost:8000")
HOST = (b"host", b"localhost:8000")  # the page's own origin is its Host (config/origins.py)
EPOCH = "1795262640000"
Frame = dict[str, Any]


class Client:
    """One connection: JSON in, JSON out, with timeouts (never a bare sleep)."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator
        self.hello: Frame = {}

    async def send(self, frame: Any) -> None:
        await self.ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 3) -> Frame:  # noqa: ASYNC109
        frame: Frame = await self.ws.receive_json_from(timeout=timeout)
        return frame

    async def recv_skipping_heartbeats(self, timeout: float = 3) -> Frame:  # noqa: ASYNC109
        while True:
            frame = await self.recv(timeout)
            if frame["type"] != "heartbeat":
                return frame

    async def request(self, frame: Frame, timeout: float = 3) -> Frame:  # noqa: ASYNC109
        await self.send(frame)
        return await self.recv(timeout)

    async def closed_with(self, timeout: float = 3) -> int:  # noqa: ASYNC109
        output = await self.ws.receive_output(timeout=timeout)
        assert output["type"] == "websocket.close", output
        return int(output.get("code", 1000))

    async def nothing(self, timeout: float = 0.3) -> bool:  # noqa: ASYNC109
        return bool(await self.ws.receive_nothing(timeout=timeout))

    async def subscribe(self, *channels: str, request_id: int = 1, **options: Any) -> tuple[Frame, list[Frame]]:
        """Subscribe; the ack and one snapshot per channel not held already."""
        await self.send({"op": "subscribe", "id": request_id, "channels": list(channels), **options})
        ack = await self.recv()
        assert ack["type"] == "ack", ack
        snapshots = [await self.recv() for entry in ack["channels"] if not entry.get("held")]
        assert all(s["type"] == "snapshot" for s in snapshots), snapshots
        return ack, snapshots


@asynccontextmanager
async def connect(user: Any = None, *, origin: tuple[bytes, bytes] | None = ORIGIN, expect_hello: bool = True) -> AsyncIterator[Client]:
    """A connection through config.asgi.application (origin check, session auth, router); always disconnected."""
    headers = [HOST] if origin is None else [HOST, origin]
    if user is not None:
        headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
    communicator = WebsocketCommunicator(application, URL, headers=headers)
    client = Client(communicator)
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected, "handshake refused"
        if expect_hello:
            client.hello = await client.recv()
            assert client.hello["type"] == "hello", client.hello
        yield client
    finally:
        await communicator.disconnect()


class Feed:
    """Stands in for the feed worker: numbers each channel's messages, appends them to the history, publishes them live."""

    def __init__(self, epoch: str = EPOCH) -> None:
        self.epoch = epoch
        self.seqs: dict[str, int] = {}
        self.ts = 1795262641000

    def make(self, ch: str, data: dict[str, Any]) -> Frame:
        seq = self.seqs[ch] = self.seqs.get(ch, 0) + 1
        self.ts += 1
        return {"ch": ch, "epoch": self.epoch, "seq": seq, "ts": self.ts, "data": data}

    def tick(self, symbol: str, last: str) -> Frame:
        return self.make(
            f"ticker:{symbol}", {"last": last, "bid": None, "ask": None, "ref": None, "change": None, "change_pct": None, "replay": False}
        )

    def book(self, symbol: str, bids: list[list[str]], asks: list[list[str]], depth: int = 10) -> Frame:
        return self.make(f"book:{symbol}@depth={depth}", {"bids": bids, "asks": asks, "checksum": 0})

    async def store(self, *messages: Frame) -> None:
        """Into the history only (a message the channel layer then loses)."""
        await market_store().append(list(messages))

    async def live(self, *messages: Frame) -> None:
        """Live only (a duplicate, or one whose history write failed)."""
        for message in messages:
            channel = channel_parse(message["ch"])
            await streams.publish_market(channel.symbol, [message], session=channel.session)

    async def publish(self, *messages: Frame) -> None:
        """What the worker does: history first, then live."""
        await self.store(*messages)
        await self.live(*messages)


async def token_for(user: Any, name: str = "bot") -> str:
    _, plaintext = await database_sync_to_async(services.token_create)(user=user, name=name)
    return plaintext


async def revoke_all(user: Any) -> None:
    def revoke() -> None:
        for token in ApiToken.objects.filter(user=user):
            services.token_revoke(token=token)

    await database_sync_to_async(revoke)()


async def price(symbol: str, value: str, seq: int) -> None:
    ts = T0 + timedelta(minutes=1, milliseconds=seq)
    await publish_price(PriceUpdate(symbol, seq, "e1", Decimal(value), None, None, ts, "test", 1))


def seqs(frames: list[Frame]) -> list[int]:
    return [frame["seq"] for frame in frames]


# ------------------------------------------------------------------ hello, ping, auth


async def test_hello_states_version_heartbeat_user_and_limits(instruments: Any) -> None:
    async with connect(origin=None) as ws:
        assert ws.hello == {
            "type": "hello",
            "version": 1,
            "heartbeat_ms": 15000,
            "user": None,
            "features": ["batch"],
            "limits": {"subscriptions": 100, "messages_per_second": 20, "burst": 40, "message_bytes": 65536, "connections_per_user": 10},
        }


async def test_hello_names_the_signed_in_browser_user(alice: Any, instruments: Any) -> None:
    async with connect(alice) as ws:
        assert ws.hello["user"] == "alice"


async def test_ping_gets_pong_echoing_the_id(instruments: Any) -> None:
    async with connect() as ws:
        assert await ws.request({"op": "ping", "id": 4}) == {"type": "pong", "id": 4}
        assert await ws.request({"op": "ping", "id": "abc"}) == {"type": "pong", "id": "abc"}
        assert await ws.request({"op": "ping"}) == {"type": "pong"}


async def test_a_bot_authenticates_with_a_token_in_an_auth_frame(alice: Any, instruments: Any) -> None:
    token = await token_for(alice)
    async with connect(origin=None) as ws:
        assert ws.hello["user"] is None
        assert await ws.request({"op": "auth", "id": 1, "token": token}) == {"type": "authenticated", "id": 1, "user": "alice"}
        # ...and may now read portfolios.
        _ack, [snapshot] = await ws.subscribe("portfolio")
        assert snapshot["data"]["portfolios"] == []


@pytest.mark.parametrize("kind", ["unknown", "revoked", "malformed"])
async def test_an_unknown_or_revoked_token_is_refused_with_auth_failed_then_4401(alice: Any, instruments: Any, kind: str) -> None:
    token = await token_for(alice)
    if kind == "revoked":
        await revoke_all(alice)
    elif kind == "unknown":
        token = "lf_" + "A" * 43
    else:
        token = "not a token"
    async with connect(origin=None) as ws:
        error = await ws.request({"op": "auth", "id": 7, "token": token})
        assert (error["type"], error["id"], error["code"]) == ("error", 7, "auth_failed")
        assert await ws.closed_with() == 4401


async def test_a_second_auth_is_a_bad_request(alice: Any, bob: Any, instruments: Any) -> None:
    token = await token_for(bob)
    async with connect(alice) as ws:
        error = await ws.request({"op": "auth", "id": 2, "token": token})
        assert (error["code"], error["id"]) == ("bad_request", 2)
        assert await ws.request({"op": "ping", "id": 3}) == {"type": "pong", "id": 3}


# ------------------------------------------------------------------ subscribe, updates, unsubscribe


async def test_subscribe_answers_ack_then_snapshot_then_updates_from_seq_plus_one(instruments: Any) -> None:
    feed = Feed()
    await feed.publish(*(feed.tick("BTC-USD", str(v)) for v in (100, 101, 102)))
    async with connect(origin=None) as ws:
        ack, [snapshot] = await ws.subscribe("ticker:BTC-USD", request_id=2)
        assert ack == {"type": "ack", "id": 2, "channels": [{"ch": "ticker:BTC-USD", "epoch": EPOCH, "seq": 3}]}
        assert {k: snapshot[k] for k in ("type", "ch", "epoch", "seq")} == {
            "type": "snapshot",
            "ch": "ticker:BTC-USD",
            "epoch": EPOCH,
            "seq": 3,
        }
        assert snapshot["data"]["last"] == "102" and isinstance(snapshot["ts"], int)
        message = feed.tick("BTC-USD", "103")
        await feed.publish(message)
        assert await ws.recv() == {"type": "update", **message}


async def test_a_channel_without_data_has_an_empty_epoch_seq_0_and_an_empty_snapshot(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        ack, [ticker, book] = await ws.subscribe("ticker:AAPL", "book:AAPL@depth=10")
        assert [(c["epoch"], c["seq"]) for c in ack["channels"]] == [("", 0), ("", 0)]
        assert (ticker["epoch"], ticker["seq"], ticker["data"]) == ("", 0, {})
        assert (book["data"]["bids"], book["data"]["asks"]) == ([], [])
        first = feed.tick("AAPL", "201")
        await feed.publish(first)
        assert await ws.recv() == {"type": "update", **first}  # seq 1 of the first epoch follows seq 0


async def test_every_channel_kind_subscribes(instruments: Any) -> None:
    feed = Feed()
    await feed.publish(feed.make("trades:BTC-USD", {"trades": [{"price": "1", "size": "2", "side": "buy", "ts": 5}]}))
    await feed.publish(feed.book("BTC-USD", [["100", "1"]], [["101", "2"]], depth=1))
    async with connect() as ws:
        names = [
            "ticker:BTC-USD",
            "trades:BTC-USD",
            "candles:BTC-USD@1m",
            "book:BTC-USD@depth=1",
            "book:BTC-USD@depth=10",
            "book:BTC-USD@depth=50",
        ]
        ack, snapshots = await ws.subscribe(*names)
        assert [c["ch"] for c in ack["channels"]] == names == [s["ch"] for s in snapshots]
        assert snapshots[1]["data"]["trades"] == [{"price": "1", "size": "2", "side": "buy", "ts": 5}]
        assert snapshots[2]["data"] == {"candles": []}
        assert (snapshots[3]["data"]["bids"], snapshots[3]["data"]["asks"]) == ([["100", "1"]], [["101", "2"]])


async def test_subscribing_again_to_a_held_channel_answers_ack_held_without_a_snapshot(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "1"), feed.tick("BTC-USD", "2"))
        assert seqs([await ws.recv(), await ws.recv()]) == [1, 2]
        ack, [snapshot] = await ws.subscribe("ticker:BTC-USD", "ticker:AAPL", request_id=9)
        # The new channel gets its snapshot; the held one is named as held, at the position last sent, and nothing more.
        assert ack == {
            "type": "ack",
            "id": 9,
            "channels": [{"ch": "ticker:AAPL", "epoch": "", "seq": 0}, {"ch": "ticker:BTC-USD", "epoch": EPOCH, "seq": 2, "held": True}],
        }
        assert snapshot["ch"] == "ticker:AAPL"
        await feed.publish(feed.tick("BTC-USD", "3"))
        assert (await ws.recv())["seq"] == 3
        assert await ws.nothing()


async def test_a_held_channel_subscribed_again_takes_the_new_throttle(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        ack, snapshots = await ws.subscribe("ticker:BTC-USD", request_id=2, throttle_ms=60_000)
        assert (ack["channels"][0]["held"], snapshots) == (True, [])
        await feed.publish(feed.tick("BTC-USD", "1"), feed.tick("BTC-USD", "2"), feed.tick("BTC-USD", "3"))
        assert (await ws.recv())["seq"] == 1  # the first of the interval goes out; the rest wait a minute
        assert await ws.nothing()


async def test_unsubscribe_answers_unsubscribed_and_stops_the_updates(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD", "ticker:AAPL")
        reply = await ws.request({"op": "unsubscribe", "id": 3, "channels": ["ticker:BTC-USD"]})
        assert reply == {"type": "unsubscribed", "id": 3, "channels": ["ticker:BTC-USD"]}
        await feed.publish(feed.tick("BTC-USD", "1"))
        aapl = feed.tick("AAPL", "2")
        await feed.publish(aapl)
        assert await ws.recv() == {"type": "update", **aapl}  # AAPL only: BTC-USD's went nowhere
        assert await ws.nothing()


async def test_a_symbols_other_channels_do_not_leak_into_a_subscription(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("book:BTC-USD@depth=10")
        await feed.publish(feed.tick("BTC-USD", "1"), feed.book("BTC-USD", [["1", "1"]], [], depth=50))
        book = feed.book("BTC-USD", [["1", "1"]], [])
        await feed.publish(book)
        assert await ws.recv() == {"type": "update", **book}
        assert await ws.nothing()


# ------------------------------------------------------------------ no duplicate, no gap


async def test_messages_published_while_subscribing_arrive_once_each_with_no_gap(instruments: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    feed = Feed()
    await feed.publish(feed.tick("BTC-USD", "1"))
    store = market_store()
    read = store.snapshot
    handled: dict[int, asyncio.Event] = {seq: asyncio.Event() for seq in (2, 3, 4)}
    deliver = MarketConsumer.deliver

    def spied_deliver(self: MarketConsumer, update: Update) -> None:
        deliver(self, update)
        handled[update.message["seq"]].set()

    async def racing_snapshot(channel: str) -> Frame:
        # The worker is busy while the history is read: a message lands before the read (so it is in the
        # snapshot and live), two more after it (live only). The consumer handles all three live messages
        # before its snapshot goes out.
        await feed.publish(feed.tick("BTC-USD", "2"))
        snapshot = await read(channel)
        await feed.publish(feed.tick("BTC-USD", "3"), feed.tick("BTC-USD", "4"))
        for event in handled.values():
            await asyncio.wait_for(event.wait(), 3)
        return snapshot

    monkeypatch.setattr(MarketConsumer, "deliver", spied_deliver)
    monkeypatch.setattr(store, "snapshot", racing_snapshot)
    async with connect() as ws:
        ack, [snapshot] = await ws.subscribe("ticker:BTC-USD")
        assert snapshot["seq"] == ack["channels"][0]["seq"] == 2
        updates = [await ws.recv(), await ws.recv()]
        assert seqs(updates) == [3, 4] and [u["data"]["last"] for u in updates] == ["3", "4"]
        assert await ws.nothing()


async def test_a_duplicate_live_message_is_dropped(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        message = feed.tick("BTC-USD", "1")
        await feed.publish(message)
        await feed.live(message)
        assert seqs([await ws.recv()]) == [1]
        assert await ws.nothing()


async def test_a_message_the_channel_layer_lost_is_filled_from_the_history(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "1"))
        assert (await ws.recv())["seq"] == 1
        await feed.store(feed.tick("BTC-USD", "2"), feed.tick("BTC-USD", "3"))  # never arrive live
        await feed.publish(feed.tick("BTC-USD", "4"))
        updates = [await ws.recv() for _ in range(3)]
        assert [(u["type"], u["seq"], u["data"]["last"]) for u in updates] == [("update", 2, "2"), ("update", 3, "3"), ("update", 4, "4")]
        assert await ws.nothing()


async def test_a_gap_the_history_no_longer_holds_gets_a_fresh_snapshot(instruments: Any, settings: Any) -> None:
    settings.MARKET_HISTORY_LENGTH = 10
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "1"))
        assert (await ws.recv())["seq"] == 1
        await feed.store(*(feed.tick("BTC-USD", str(v)) for v in range(2, 15)))  # 13 lost: more than the history keeps
        await feed.publish(feed.tick("BTC-USD", "15"))
        snapshot = await ws.recv()
        assert (snapshot["type"], snapshot["epoch"], snapshot["seq"], snapshot["data"]["last"]) == ("snapshot", EPOCH, 15, "15")
        await feed.publish(feed.tick("BTC-USD", "16"))
        assert ((await ws.recv())["type"], await ws.nothing()) == ("update", True)


async def test_a_gap_neither_live_nor_the_history_can_fill_is_never_crossed_silently(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "1"))
        assert (await ws.recv())["seq"] == 1
        feed.tick("BTC-USD", "2")  # lost everywhere: never stored, never published
        await feed.live(feed.tick("BTC-USD", "3"))  # live only (its history write failed)
        # Not 3 as an update after 1, and no snapshot either: the history has nothing past what the client holds.
        assert await ws.nothing()
        await feed.publish(feed.tick("BTC-USD", "4"))  # the history has 1 and 4, a hole: so a snapshot at 4
        snapshot = await ws.recv()
        assert (snapshot["type"], snapshot["seq"], snapshot["data"]["last"]) == ("snapshot", 4, "4")
        await feed.publish(feed.tick("BTC-USD", "5"))
        assert ((await ws.recv())["type"], await ws.nothing()) == ("update", True)


async def test_a_channel_whose_catch_up_fails_is_dropped_with_an_error_that_names_it(
    instruments: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not an outage (that closes the socket, 1013) but a bug or a corrupt history entry: the channel is unsubscribed,
    and the error says which one, so a client with several channels knows what to subscribe again."""

    async def broken(self: Any, sub: Any) -> None:
        raise ValueError("a corrupt history entry")

    monkeypatch.setattr(MarketConsumer, "_resync", broken)
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "1"))
        assert (await ws.recv())["seq"] == 1
        feed.tick("BTC-USD", "2")  # lost: the next one is a gap, and its catch-up fails
        await feed.publish(feed.tick("BTC-USD", "3"))
        error = await ws.recv()
        assert (error["type"], error["code"], error.get("ch")) == ("error", "server_error", "ticker:BTC-USD")
        await feed.publish(feed.tick("BTC-USD", "4"))
        assert await ws.nothing()  # unsubscribed: nothing more on it


async def test_clean_ups_that_fail_on_a_redis_outage_are_one_warning_not_a_traceback_per_socket(
    alice: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Uncounting a connection needs Redis: during an outage every closing socket fails it (the soak saw ~250
    tracebacks per Redis restart). The entry expires on its own; the process says so once, not once per socket."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from marketdata.api import consumer

    registry = consumer.connections()

    class Down:
        async def add(self, *args: Any) -> int:
            return await registry.add(*args)

        async def renew(self, *args: Any) -> None:
            await registry.renew(*args)

        async def remove(self, *args: Any) -> None:
            raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(consumer, "connections", Down)
    with caplog.at_level(logging.WARNING, logger="marketdata"):
        for _ in range(3):
            async with connect(alice):
                pass
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    assert len([r for r in caplog.records if "uncounting" in r.getMessage()]) <= 1, caplog.text


async def test_symbols_are_read_once_on_connect_and_never_per_subscribe(instruments: Any) -> None:
    with count_queries() as queries:
        async with connect() as ws:
            connected = list(queries)
            await ws.subscribe("ticker:BTC-USD", "book:AAPL@depth=1", "trades:EUR/USD")
            error = await ws.request({"op": "subscribe", "id": 2, "channels": ["ticker:NOPE"]})
            assert error["code"] == "unknown_symbol"
            assert queries == connected
    assert len(connected) == 1 and "marketdata_instrument" in connected[0]


async def test_a_new_epoch_on_a_live_channel_gets_a_fresh_snapshot(instruments: Any) -> None:
    old, new = Feed(), Feed(epoch="1795262700000")
    async with connect() as ws:
        await ws.subscribe("book:BTC-USD@depth=10")
        await old.publish(old.book("BTC-USD", [["100", "1"]], [["101", "1"]]))
        assert (await ws.recv())["seq"] == 1
        # The worker restarted: its first message of the new epoch is no delta against what the client holds.
        await new.publish(new.book("BTC-USD", [["99", "3"]], [["102", "1"]]))
        snapshot = await ws.recv()
        assert (snapshot["type"], snapshot["epoch"], snapshot["seq"]) == ("snapshot", new.epoch, 1)
        assert (snapshot["data"]["bids"], snapshot["data"]["asks"]) == ([["99", "3"]], [["102", "1"]])
        await new.publish(new.book("BTC-USD", [["99", "0"]], []))
        update = await ws.recv()
        assert (update["type"], update["epoch"], update["seq"]) == ("update", new.epoch, 2)


async def test_a_market_tick_costs_no_database_query(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD", "book:BTC-USD@depth=10", "trades:BTC-USD")
        with count_queries() as queries:
            for v in range(5):
                await feed.publish(feed.tick("BTC-USD", str(v)), feed.book("BTC-USD", [[str(v), "1"]], []))
            received = [await ws.recv() for _ in range(10)]
        assert queries == []
    assert len(received) == 10


# ------------------------------------------------------------------ heartbeat


async def test_the_heartbeat_names_the_last_epoch_and_seq_sent_per_channel(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_HEARTBEAT_SECONDS = 0.2
    feed = Feed()
    await feed.publish(feed.tick("AAPL", "1"))
    async with connect() as ws:
        assert ws.hello["heartbeat_ms"] == 200
        await ws.subscribe("ticker:BTC-USD", "ticker:AAPL", "ticker:MSFT")
        await feed.publish(feed.tick("BTC-USD", "1"), feed.tick("BTC-USD", "2"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            frame = await ws.recv()
            if frame["type"] == "heartbeat" and frame["channels"]["ticker:BTC-USD"]["seq"] == 2:
                break
        else:
            pytest.fail("no heartbeat with the updates sent")
        assert isinstance(frame["ts"], int)
        assert frame["channels"] == {
            "ticker:BTC-USD": {"epoch": EPOCH, "seq": 2},
            "ticker:AAPL": {"epoch": EPOCH, "seq": 1},
            "ticker:MSFT": {"epoch": "", "seq": 0},
        }


# ------------------------------------------------------------------ throttle


async def test_a_throttled_channel_sends_at_most_one_update_per_interval_and_always_the_last(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD", throttle_ms=500)
        started = time.monotonic()

        async def worker() -> None:
            for v in range(1, 21):  # 20 updates over about 2 s
                await feed.publish(feed.tick("BTC-USD", str(v)))
                await asyncio.sleep(0.1)

        publishing = asyncio.create_task(worker())
        updates = []
        while not updates or updates[-1]["seq"] < 20:
            updates.append(await ws.recv(timeout=5))
        elapsed = time.monotonic() - started
        await publishing
        assert await ws.nothing(0.7)
    # At most one per 0.5 s interval (plus the first, sent at once), and the last value arrived.
    assert len(updates) <= elapsed / 0.5 + 1
    assert len(updates) < 20
    assert updates[-1]["data"]["last"] == "20"
    # Together they stand for every message: each starts where the one before ended.
    covered = [(u.get("first_seq", u["seq"]), u["seq"]) for u in updates]
    assert covered[0][0] == 1 and all(prev[1] + 1 == cur[0] for prev, cur in itertools.pairwise(covered))


async def test_a_throttled_book_merges_level_changes_naming_first_seq_to_seq(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("book:BTC-USD@depth=10", throttle_ms=300)
        await feed.publish(feed.book("BTC-USD", [["100", "1"], ["99", "1"]], [["101", "1"]]))
        first = await ws.recv()
        assert (first["seq"], "first_seq" in first) == (1, False)
        await feed.publish(feed.book("BTC-USD", [["100", "2"]], []))
        await feed.publish(feed.book("BTC-USD", [["99", "0"], ["100", "3"]], [["101", "0"], ["102", "5"]]))
        merged = await ws.recv()
        assert (merged["first_seq"], merged["seq"]) == (2, 3)
        assert merged["data"]["bids"] == [["100", "3"], ["99", "0"]]
        assert merged["data"]["asks"] == [["101", "0"], ["102", "5"]]


async def test_trades_throttled_carry_every_trade_of_the_interval(instruments: Any) -> None:
    feed = Feed()
    async with connect() as ws:
        await ws.subscribe("trades:BTC-USD", throttle_ms=300)
        for n in range(1, 5):
            await feed.publish(feed.make("trades:BTC-USD", {"trades": [{"price": str(n), "size": "1", "side": None, "ts": n}]}))
        updates = [await ws.recv(), await ws.recv()]
    assert [t["price"] for u in updates for t in u["data"]["trades"]] == ["1", "2", "3", "4"]


# ------------------------------------------------------------------ resume


async def _subscribed_then_gone(feed: Feed, sent: int = 3) -> tuple[str, int]:
    """A client that saw `sent` updates, then lost its connection; where it stood."""
    async with connect() as ws:
        await ws.subscribe("ticker:BTC-USD")
        await feed.publish(*(feed.tick("BTC-USD", str(v)) for v in range(1, sent + 1)))
        last = [await ws.recv() for _ in range(sent)][-1]
    return last["epoch"], last["seq"]


async def test_resume_replays_exactly_the_missed_messages_in_order_then_continues_live(instruments: Any) -> None:
    feed = Feed()
    epoch, seq = await _subscribed_then_gone(feed)
    missed = [feed.tick("BTC-USD", str(v)) for v in range(4, 9)]  # N = 5 while disconnected
    await feed.publish(*missed)
    async with connect() as ws:
        resumed = await ws.request(
            {"op": "resume", "id": 5, "channels": {"ticker:BTC-USD": {"epoch": epoch, "seq": seq}}, "throttle_ms": 0}
        )
        assert resumed == {"type": "resumed", "id": 5, "ch": "ticker:BTC-USD", "recovered": True, "epoch": EPOCH, "from_seq": 4, "seq": 8}
        replayed = [await ws.recv() for _ in missed]
        assert replayed == [{"type": "update", **m} for m in missed]
        live = feed.tick("BTC-USD", "9")
        await feed.publish(live)
        assert await ws.recv() == {"type": "update", **live}
        assert await ws.nothing()


async def test_resume_with_nothing_missed_is_recovered_with_nothing_to_replay(instruments: Any) -> None:
    feed = Feed()
    epoch, seq = await _subscribed_then_gone(feed)
    async with connect() as ws:
        resumed = await ws.request({"op": "resume", "id": 1, "channels": {"ticker:BTC-USD": {"epoch": epoch, "seq": seq}}})
        assert (resumed["recovered"], resumed["from_seq"], resumed["seq"]) == (True, 4, 3)
        assert await ws.nothing()


async def test_resume_beyond_the_history_is_not_recovered_and_sends_a_snapshot(instruments: Any, settings: Any) -> None:
    settings.MARKET_HISTORY_LENGTH = 10
    feed = Feed()
    epoch, seq = await _subscribed_then_gone(feed)
    await feed.publish(*(feed.tick("BTC-USD", str(v)) for v in range(4, 19)))  # 15 more: the history keeps 9..18
    async with connect() as ws:
        resumed = await ws.request({"op": "resume", "id": 5, "channels": {"ticker:BTC-USD": {"epoch": epoch, "seq": seq}}})
        assert resumed == {"type": "resumed", "id": 5, "ch": "ticker:BTC-USD", "recovered": False, "epoch": EPOCH, "seq": 18}
        snapshot = await ws.recv()
        assert (snapshot["type"], snapshot["seq"], snapshot["data"]["last"]) == ("snapshot", 18, "18")
        await feed.publish(feed.tick("BTC-USD", "19"))
        assert (await ws.recv())["seq"] == 19


async def test_resume_across_an_epoch_is_not_recovered_and_sends_a_snapshot(instruments: Any) -> None:
    epoch, seq = await _subscribed_then_gone(Feed())
    restarted = Feed(epoch="1795262700000")
    await restarted.publish(restarted.tick("BTC-USD", "50"), restarted.tick("BTC-USD", "51"))
    async with connect() as ws:
        resumed = await ws.request({"op": "resume", "id": 5, "channels": {"ticker:BTC-USD": {"epoch": epoch, "seq": seq}}})
        assert (resumed["recovered"], resumed["epoch"], resumed["seq"]) == (False, restarted.epoch, 2)
        snapshot = await ws.recv()
        assert (snapshot["type"], snapshot["epoch"], snapshot["seq"], snapshot["data"]["last"]) == ("snapshot", restarted.epoch, 2, "51")


async def test_resume_of_a_seq_beyond_the_head_is_not_recovered(instruments: Any) -> None:
    feed = Feed()
    epoch, _ = await _subscribed_then_gone(feed)
    async with connect() as ws:
        resumed = await ws.request({"op": "resume", "id": 1, "channels": {"ticker:BTC-USD": {"epoch": epoch, "seq": 99}}})
        assert (resumed["recovered"], resumed["seq"]) == (False, 3)
        assert (await ws.recv())["type"] == "snapshot"


async def test_resume_answers_each_channel_and_applies_its_throttle(instruments: Any) -> None:
    feed = Feed()
    epoch, seq = await _subscribed_then_gone(feed)
    await feed.publish(feed.tick("BTC-USD", "4"))
    async with connect() as ws:
        await ws.send(
            {
                "op": "resume",
                "id": 6,
                "channels": {"ticker:BTC-USD": {"epoch": epoch, "seq": seq}, "ticker:AAPL": {"epoch": "", "seq": 0}},
                "throttle_ms": 400,
            }
        )
        frames = [await ws.recv() for _ in range(3)]
        assert [(f["type"], f.get("ch"), f.get("recovered")) for f in frames] == [
            ("resumed", "ticker:BTC-USD", True),
            ("update", "ticker:BTC-USD", None),
            ("resumed", "ticker:AAPL", True),  # no data yet, none missed
        ]
        for v in range(5, 9):
            await feed.publish(feed.tick("BTC-USD", str(v)))
        first = await ws.recv()
        merged = await ws.recv()
        assert (first["seq"], merged["first_seq"], merged["seq"]) == (5, 6, 8)


async def test_resume_of_a_portfolio_is_never_recovered_and_sends_a_snapshot(alice: Any, alice_portfolio: Portfolio) -> None:
    async with connect(alice) as ws:
        resumed = await ws.request({"op": "resume", "id": 2, "channels": {"portfolio": {"epoch": "old-connection", "seq": 12}}})
        assert (resumed["type"], resumed["ch"], resumed["recovered"], resumed["seq"]) == ("resumed", "portfolio", False, 1)
        assert resumed["epoch"] != "old-connection"
        snapshot = await ws.recv()
        assert (snapshot["type"], snapshot["epoch"], snapshot["seq"]) == ("snapshot", resumed["epoch"], 1)
        assert [p["id"] for p in snapshot["data"]["portfolios"]] == [alice_portfolio.pk]


# ------------------------------------------------------------------ portfolio channels


async def test_the_portfolio_channel_snapshots_the_views_then_sends_coalesced_updates(alice: Any, alice_portfolio: Portfolio) -> None:
    async with connect(alice) as ws:
        ack, [snapshot] = await ws.subscribe("portfolio")
        [entry] = ack["channels"]
        assert (entry["ch"], entry["seq"], snapshot["epoch"], snapshot["seq"]) == ("portfolio", 1, entry["epoch"], 1)
        assert set(snapshot["data"]) == {"view_currencies", "combined_currency", "portfolios", "combined"}
        [view] = snapshot["data"]["portfolios"]
        assert (view["id"], view["totals"]["total_value"]) == (alice_portfolio.pk, "35499.00")
        with count_queries() as queries:
            for seq in range(1, 6):
                await price("AAPL", str(205 + seq), seq)
            update = await ws.recv()
        assert queries == []
        assert (update["type"], update["ch"], update["epoch"], update["seq"]) == ("update", "portfolio", entry["epoch"], 2)
        [changed] = update["data"]["portfolios"]
        assert [(r["key"], r["price"]) for r in changed["rows"]] == [("AAPL", "210")]  # five prices, one frame
        assert await ws.nothing(0.4)


async def test_portfolio_id_carries_that_portfolio_only(alice: Any, alice_portfolio: Portfolio) -> None:
    other = await database_sync_to_async(Portfolio.objects.create)(owner=alice, name="Alice other")
    async with connect(alice) as ws:
        _ack, [snapshot] = await ws.subscribe(f"portfolio:{alice_portfolio.pk}")
        assert [p["id"] for p in snapshot["data"]["portfolios"]] == [alice_portfolio.pk]
        assert other.pk != alice_portfolio.pk


async def test_bob_cannot_subscribe_to_alices_portfolio(alice: Any, bob: Any, alice_portfolio: Portfolio, bob_portfolio: Portfolio) -> None:
    async with connect(bob) as ws:
        error = await ws.request({"op": "subscribe", "id": 8, "channels": ["ticker:AAPL", f"portfolio:{alice_portfolio.pk}"]})
        assert (error["type"], error["id"], error["code"]) == ("error", 8, "forbidden")
        error = await ws.request({"op": "subscribe", "id": 9, "channels": ["portfolio:999999"]})
        assert error["code"] == "forbidden"  # one that does not exist is not told apart
        # Refused whole: not even the ticker was subscribed.
        await Feed().publish(Feed().tick("AAPL", "1"))
        assert await ws.nothing()
        _ack, [snapshot] = await ws.subscribe(f"portfolio:{bob_portfolio.pk}")
        assert [p["id"] for p in snapshot["data"]["portfolios"]] == [bob_portfolio.pk]


async def test_a_ledger_change_sends_a_fresh_snapshot_on_the_portfolio_channel(alice: Any, alice_portfolio: Portfolio) -> None:
    async with connect(alice) as ws:
        await ws.subscribe(f"portfolio:{alice_portfolio.pk}")
        msft = await database_sync_to_async(Instrument.objects.get)(symbol="MSFT")
        await database_sync_to_async(record)(alice_portfolio, "buy", "2", msft, price="350", executed_at=T0 - timedelta(days=30))
        snapshot = await ws.recv()
        assert (snapshot["type"], snapshot["ch"], snapshot["seq"]) == ("snapshot", f"portfolio:{alice_portfolio.pk}", 2)
        rows = {r["key"]: r for r in snapshot["data"]["portfolios"][0]["rows"]}
        assert rows["MSFT"]["market_value"] == "800.00"
        await price("MSFT", "410", 1)  # the channel now follows the new holding
        update = await ws.recv()
        assert (update["seq"], update["data"]["portfolios"][0]["rows"][0]["market_value"]) == (3, "820.00")


async def test_portfolio_channels_need_a_user(alice_portfolio: Portfolio) -> None:
    async with connect() as ws:
        for channels in (["portfolio"], [f"portfolio:{alice_portfolio.pk}"]):
            error = await ws.request({"op": "subscribe", "id": 1, "channels": channels})
            assert error["code"] == "not_authenticated"
        error = await ws.request({"op": "resume", "id": 2, "channels": {"portfolio": {"epoch": "x", "seq": 1}}})
        assert error["code"] == "not_authenticated"


# ------------------------------------------------------------------ access


@pytest.mark.parametrize("anonymous", [True, False])
async def test_anonymous_access_to_market_channels_follows_the_setting(
    alice: Any, instruments: Any, settings: Any, anonymous: bool
) -> None:
    settings.MARKET_WS_ANONYMOUS = anonymous
    async with connect(origin=None) as ws:
        reply = await ws.request({"op": "subscribe", "id": 1, "channels": ["ticker:BTC-USD"]})
        assert (reply["type"], reply.get("code")) == (("ack", None) if anonymous else ("error", "not_authenticated"))
        if anonymous:
            await ws.recv()  # the snapshot
        reply = await ws.request({"op": "resume", "id": 2, "channels": {"ticker:AAPL": {"epoch": "", "seq": 0}}})
        assert (reply["type"], reply.get("code")) == (("resumed", None) if anonymous else ("error", "not_authenticated"))
        if not anonymous:
            # A user may, whatever the setting.
            await ws.request({"op": "auth", "id": 3, "token": await token_for(alice)})
            ack, _ = await ws.subscribe("ticker:BTC-USD")
            assert ack["channels"][0]["ch"] == "ticker:BTC-USD"


async def test_a_browser_from_a_foreign_origin_is_refused_at_the_handshake(alice: Any, instruments: Any) -> None:
    headers = [(b"origin", b"https://evil.example"), (b"cookie", await database_sync_to_async(session_cookie)(alice))]
    communicator = WebsocketCommunicator(application, URL, headers=headers)
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert not connected
    finally:
        await communicator.disconnect()


async def test_a_bot_without_origin_and_a_page_of_ours_are_let_in(alice: Any, instruments: Any) -> None:
    async with connect(origin=None) as bot:
        assert bot.hello["user"] is None
    async with connect(alice, origin=ORIGIN) as page:
        assert page.hello["user"] == "alice"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2, 3]", "bad_json"),
        ('{"id": 1}', "bad_request"),
        ('{"op": "subscribe", "id": 1, "channels": "ticker:BTC-USD"}', "bad_request"),
        ('{"op": "subscribe", "id": 1, "channels": ["ticker:BTC-USD"], "throttle_ms": 60001}', "bad_request"),
        ('{"op": "resume", "id": 1, "channels": {"ticker:BTC-USD": {"seq": 1}}}', "bad_request"),
        ('{"op": "auth", "id": 1}', "bad_request"),
        ('{"op": "publish", "id": 1}', "unknown_op"),
        ('{"op": "subscribe", "id": 1, "channels": ["tickr:BTC-USD"]}', "unknown_channel"),
        ('{"op": "subscribe", "id": 1, "channels": ["book:BTC-USD@depth=5"]}', "unknown_channel"),
        ('{"op": "unsubscribe", "id": 1, "channels": ["nonsense"]}', "unknown_channel"),
        ('{"op": "subscribe", "id": 1, "channels": ["ticker:NOPE"]}', "unknown_symbol"),
        ('{"op": "resume", "id": 1, "channels": {"trades:NOPE": {"epoch": "", "seq": 0}}}', "unknown_symbol"),
        ('{"op": "subscribe", "id": 1, "channels": ["portfolio"]}', "not_authenticated"),
    ],
)
async def test_each_error_code_answers_its_frame_and_the_connection_stays_open(instruments: Any, frame: str, code: str) -> None:
    async with connect() as ws:
        error = await ws.request(frame)
        assert (error["type"], error["code"]) == ("error", code)
        assert isinstance(error["message"], str) and error["message"]
        if code not in ("bad_json",) and '"id": 1' in frame and "id" in error:
            assert error["id"] == 1
        assert await ws.request({"op": "ping", "id": 2}) == {"type": "pong", "id": 2}


async def test_a_binary_frame_is_bad_json(instruments: Any) -> None:
    async with connect() as ws:
        await ws.ws.send_to(bytes_data=b'{"op": "ping"}')
        assert (await ws.recv())["code"] == "bad_json"


async def test_more_channels_than_the_limit_are_refused_whole(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_MAX_SUBSCRIPTIONS = 3
    async with connect() as ws:
        assert ws.hello["limits"]["subscriptions"] == 3
        await ws.subscribe("ticker:BTC-USD", "ticker:AAPL")
        error = await ws.request({"op": "subscribe", "id": 4, "channels": ["ticker:BTC-USD", "ticker:MSFT", "ticker:SAP"]})
        assert (error["code"], error["id"]) == ("subscription_limit", 4)
        heartbeat_free = await ws.request({"op": "unsubscribe", "id": 5, "channels": ["ticker:AAPL"]})
        assert heartbeat_free["type"] == "unsubscribed"
        ack, _ = await ws.subscribe("ticker:BTC-USD", "ticker:MSFT", "ticker:SAP")  # one already held: three in all
        assert len(ack["channels"]) == 3


async def test_frames_over_the_rate_are_dropped_and_ten_in_a_row_close_with_4429(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_MESSAGES_PER_SECOND = 1
    settings.MARKET_WS_BURST = 2
    async with connect() as ws:
        for n in range(12):
            await ws.send({"op": "ping", "id": n})
        replies = [await ws.recv() for _ in range(12)]
        assert replies[:2] == [{"type": "pong", "id": 0}, {"type": "pong", "id": 1}]
        assert all((r["type"], r["code"], r["id"]) == ("error", "rate_limited", n) for n, r in enumerate(replies[2:], start=2))
        assert await ws.closed_with() == 4429


async def test_a_frame_over_the_size_limit_gets_message_too_big_then_1009(instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_MAX_MESSAGE_BYTES = 1024
    async with connect() as ws:
        assert await ws.request({"op": "ping", "id": "x" * 100}) == {"type": "pong", "id": "x" * 100}
        error = await ws.request({"op": "ping", "pad": "é" * 600})  # 1200 bytes in UTF-8, 600 characters
        assert (error["type"], error["code"]) == ("error", "message_too_big")
        assert await ws.closed_with() == 1009


async def test_too_many_connections_for_one_user_get_too_many_connections_then_4409(alice: Any, instruments: Any, settings: Any) -> None:
    settings.MARKET_WS_CONNECTIONS_PER_USER = 2
    token = await token_for(alice)
    async with connect(alice) as first, connect(origin=None) as second:
        assert (await second.request({"op": "auth", "id": 1, "token": token}))["type"] == "authenticated"
        async with connect(alice, expect_hello=False) as third:  # a browser tab: refused before its hello
            error = await third.recv()
            assert (error["type"], error["code"]) == ("error", "too_many_connections")
            assert await third.closed_with() == 4409
        async with connect(origin=None) as fourth:  # a bot
            error = await fourth.request({"op": "auth", "id": 2, "token": token})
            assert (error["code"], error["id"]) == ("too_many_connections", 2)
            assert await fourth.closed_with() == 4409
        assert await first.request({"op": "ping"}) == {"type": "pong"}
    # Closed connections no longer count.
    async with connect(alice) as again:
        assert await again.request({"op": "ping"}) == {"type": "pong"}


# ------------------------------------------------------------------ the real Redis layer


@pytest.mark.redis
async def test_the_main_flows_on_the_real_redis_layer(
    alice: Any, alice_portfolio: Portfolio, redis_layer: dict[str, Any], settings: Any
) -> None:
    settings.MARKET_WS_CONNECTIONS_PER_USER = 1
    feed = Feed()
    await feed.publish(feed.tick("BTC-USD", "1"))
    async with connect(alice) as ws:
        ack, snapshots = await ws.subscribe("ticker:BTC-USD", "portfolio")
        assert [(c["ch"], c["seq"]) for c in ack["channels"]] == [("ticker:BTC-USD", 1), ("portfolio", 1)]
        assert snapshots[0]["data"]["last"] == "1"
        await feed.publish(feed.tick("BTC-USD", "2"))
        assert (await ws.recv(timeout=5))["seq"] == 2
        # A lost live message is filled from the Redis history.
        await feed.store(feed.tick("BTC-USD", "3"))
        await feed.publish(feed.tick("BTC-USD", "4"))
        assert seqs([await ws.recv(timeout=5), await ws.recv(timeout=5)]) == [3, 4]
        await price("AAPL", "250", 1)
        update = await ws.recv(timeout=5)
        assert (update["ch"], update["seq"]) == ("portfolio", 2)
        # Counted in Redis: a second connection of alice's is one too many.
        async with connect(alice, expect_hello=False) as second:
            assert (await second.recv(timeout=5))["code"] == "too_many_connections"
            assert await second.closed_with(timeout=5) == 4409
    await feed.publish(*(feed.tick("BTC-USD", str(v)) for v in (5, 6)))
    async with connect(alice) as ws:
        resumed = await ws.request({"op": "resume", "id": 1, "channels": {"ticker:BTC-USD": {"epoch": EPOCH, "seq": 4}}}, timeout=5)
        assert (resumed["recovered"], resumed["from_seq"], resumed["seq"]) == (True, 5, 6)
        assert seqs([await ws.recv(timeout=5), await ws.recv(timeout=5)]) == [5, 6]


@pytest.mark.redis
async def test_on_redis_a_users_connections_are_a_key_the_heartbeat_renews(
    alice: Any, instruments: Any, redis_layer: dict[str, Any], layer_prefix: str, settings: Any
) -> None:
    settings.MARKET_WS_HEARTBEAT_SECONDS = 0.3
    redis = streams.redis_client(redis_layer["CONFIG"]["hosts"][0]["address"])
    key = f"{layer_prefix}:ws:connections:{alice.pk}"
    try:
        async with connect(alice) as ws:
            [(_, expires)] = await redis.zrange(key, 0, -1, withscores=True)
            assert 0 < await redis.ttl(key) <= 6  # three heartbeats and some: a dead process's entry goes soon
            assert (await ws.recv(timeout=5))["type"] == "heartbeat"
            deadline = time.monotonic() + 5
            while (await redis.zrange(key, 0, -1, withscores=True))[0][1] <= expires:
                assert time.monotonic() < deadline, "the heartbeat did not renew the entry"
                await asyncio.sleep(0.05)
        assert await redis.zcard(key) == 0  # gone with the connection
    finally:
        await redis.aclose()


# ------------------------------------------------------------------ batches


async def test_a_client_that_opts_in_gets_a_windows_frames_as_one_batch(instruments: Any) -> None:
    feed = Feed()
    channels = ["ticker:BTC-USD", "ticker:AAPL", "book:BTC-USD@depth=10"]
    async with connect(origin=None) as ws:
        await ws.send({"op": "subscribe", "id": 1, "channels": channels, "batch": True})
        # The ack and the three snapshots were made in one turn: one frame.
        first = await ws.recv()
        assert first["type"] == "batch"
        assert [m["type"] for m in first["messages"]] == ["ack", "snapshot", "snapshot", "snapshot"]
        assert first["messages"][0]["id"] == 1
        # A window of the worker: one payload per symbol, read in one go, sent as one frame.
        window = {"BTC-USD": [feed.tick("BTC-USD", "1"), feed.book("BTC-USD", [["1", "1"]], [])], "AAPL": [feed.tick("AAPL", "2")]}
        await market_store().append([m for messages in window.values() for m in messages])
        await streams.publish_market_window(window)
        batch = await ws.recv()
        assert batch["type"] == "batch"
        assert sorted((m["ch"], m["seq"]) for m in batch["messages"]) == [
            ("book:BTC-USD@depth=10", 1),
            ("ticker:AAPL", 1),
            ("ticker:BTC-USD", 1),
        ]
        assert all(m["type"] == "update" for m in batch["messages"])
        # One frame alone is never wrapped.
        await feed.publish(feed.tick("AAPL", "3"))
        assert (await ws.recv())["type"] == "update"
        # And a client can opt out again.
        await ws.send({"op": "subscribe", "id": 2, "channels": ["trades:AAPL"], "batch": False})
        assert [(await ws.recv())["type"] for _ in range(2)] == ["ack", "snapshot"]
        assert await ws.nothing()


async def test_without_opting_in_every_frame_goes_alone(instruments: Any) -> None:
    feed = Feed()
    async with connect(origin=None) as ws:
        await ws.subscribe("ticker:BTC-USD", "ticker:AAPL")
        window = {"BTC-USD": [feed.tick("BTC-USD", "1")], "AAPL": [feed.tick("AAPL", "2")]}
        await market_store().append([m for messages in window.values() for m in messages])
        await streams.publish_market_window(window)
        assert sorted([(await ws.recv())["ch"] for _ in range(2)]) == ["ticker:AAPL", "ticker:BTC-USD"]


@pytest.mark.parametrize("batch", ["yes", 1, None])
async def test_batch_is_true_or_false(instruments: Any, batch: Any) -> None:
    async with connect(origin=None) as ws:
        frame = {"op": "subscribe", "id": 1, "channels": ["ticker:AAPL"], "batch": batch}
        if batch is None:
            assert (await ws.request(frame))["type"] == "ack"  # null: left as it was
        else:
            error = await ws.request(frame)
            assert (error["type"], error["code"], error["id"]) == ("error", "bad_request", 1)
            assert "'batch' is true or false" in error["message"]


async def test_a_batch_never_grows_past_its_bound(instruments: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "BATCH_CHARACTERS", 400)
    feed = Feed()
    async with connect(origin=None) as ws:
        await ws.send({"op": "subscribe", "id": 1, "channels": ["ticker:AAPL"], "batch": True})
        assert [m["type"] for m in (await ws.recv())["messages"]] == ["ack", "snapshot"]
        messages = [feed.tick("AAPL", str(n)) for n in range(1, 9)]
        await market_store().append(messages)
        await streams.publish_market("AAPL", messages)
        updates: list[Frame] = []
        while len(updates) < 8:
            frame = await ws.recv()
            assert frame["type"] == "batch"  # 8 frames of ~150 characters: never alone, never all in one
            assert 1 < len(frame["messages"]) < 8
            # The frames joined before the last one stayed within the bound.
            assert sum(len(json.dumps(m, separators=(",", ":"))) for m in frame["messages"][:-1]) <= 400
            updates.extend(frame["messages"])
        assert seqs(updates) == list(range(1, 9))
