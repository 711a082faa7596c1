"""/ws/v1/market following a replay session (`?session=NAME` channels), fed by a real sandbox worker
(`replay_feed --sandbox`'s): snapshot, updates, resume, and nothing mixed with the live channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async

from marketdata.delivery.history import market_store
from marketdata.events import MarketEvent, Trade
from marketdata.management.base import worker_build
from marketdata.worker.loop import Worker
from tests.conftest import until
from tests.marketdata.api.test_consumer import Feed, connect

pytestmark = pytest.mark.django_db(transaction=True)

SESSION = "day1"
TICKER = f"ticker:BTC-USD?session={SESSION}"
CANDLES = f"candles:BTC-USD@1m?session={SESSION}"
DAY = datetime(2025, 11, 3, 9, 30, tzinfo=UTC)


class Pushed:
    """A feed the test pushes events into, one at a time; None ends it."""

    name = "pushed"

    def __init__(self) -> None:
        self.queue: asyncio.Queue[MarketEvent | None] = asyncio.Queue()
        self.n = 0
        self.waiting_until: datetime | None = None

    def trade(self, price: str) -> None:
        self.n += 1
        self.queue.put_nowait(Trade("BTC-USD", DAY + timedelta(seconds=self.n), Decimal(price), Decimal(1), "test", "buy"))

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        while True:
            # Waiting for the test, every event pushed so far is out: a worker on event time may close its window.
            self.waiting_until = datetime.max.replace(tzinfo=UTC) if self.queue.empty() else None
            event = await self.queue.get()
            self.waiting_until = None
            if event is None:
                return
            yield event


async def sandbox_worker(feed: Pushed) -> tuple[Worker, asyncio.Task[Any]]:
    worker = await database_sync_to_async(worker_build)(feed=feed, conflation_ms=5, command="test", replay=True, sandbox=SESSION)
    return worker, asyncio.create_task(worker.run(asyncio.Event()))


async def head_seq(channel: str) -> int:
    return (await market_store().head(channel))[1]


async def test_a_client_follows_a_sandbox_with_snapshot_updates_and_resume_and_never_sees_it_on_the_live_channel(
    instruments: Any,
) -> None:
    live = Feed()
    await live.publish(live.tick("BTC-USD", "60000"))  # the live market, meanwhile
    pushed = Pushed()
    worker, run = await sandbox_worker(pushed)
    try:
        async with connect() as ws:
            ack, snapshots = await ws.subscribe(TICKER, CANDLES, "ticker:BTC-USD", throttle_ms=0)
            # An unknown (or not yet started) session just has no data; the live channel has its price.
            assert [(c["ch"], c["seq"]) for c in ack["channels"]] == [(TICKER, 0), (CANDLES, 0), ("ticker:BTC-USD", 1)]
            assert snapshots[0] == {"type": "snapshot", "ch": TICKER, "epoch": "", "seq": 0, "ts": 0, "data": {}}
            assert snapshots[1]["data"] == {"candles": []}  # no live candle from the database either
            assert snapshots[2]["data"]["last"] == "60000"

            pushed.trade("100")
            frames = [await ws.recv(), await ws.recv()]
            by_channel = {frame["ch"]: frame for frame in frames}
            assert set(by_channel) == {TICKER, CANDLES}
            assert (by_channel[TICKER]["seq"], by_channel[TICKER]["data"]["last"], by_channel[TICKER]["data"]["replay"]) == (1, "100", True)
            assert by_channel[CANDLES]["data"]["candle"]["close"] == "100"
            epoch = by_channel[TICKER]["epoch"]
            assert epoch == worker.hub.epoch
        # Gone while the session moves on, one window per trade.
        for n, price in enumerate(("101", "102"), start=2):
            pushed.trade(price)
            await until(lambda n=n: _at(TICKER, n), what=f"the session's ticker {n} in its history")
        async with connect() as ws:
            resumed = await ws.request({"op": "resume", "id": 2, "channels": {TICKER: {"epoch": epoch, "seq": 1}}, "throttle_ms": 0})
            assert resumed == {"type": "resumed", "id": 2, "ch": TICKER, "recovered": True, "epoch": epoch, "from_seq": 2, "seq": 3}
            missed = [await ws.recv(), await ws.recv()]
            assert [(f["type"], f["seq"], f["data"]["last"]) for f in missed] == [("update", 2, "101"), ("update", 3, "102")]
            pushed.trade("103")
            update = await ws.recv()
            assert (update["ch"], update["seq"], update["data"]["last"]) == (TICKER, 4, "103")
            assert await ws.nothing()
        assert await head_seq("ticker:BTC-USD") == 1  # the live channel saw none of it
    finally:
        pushed.queue.put_nowait(None)
        await asyncio.wait_for(run, timeout=10)


async def _at(channel: str, seq: int) -> bool:
    return await head_seq(channel) >= seq


async def test_a_session_channel_follows_the_live_rules_of_access_and_symbols(instruments: Any, settings: Any) -> None:
    async with connect() as ws:
        error = await ws.request({"op": "subscribe", "id": 1, "channels": [f"ticker:NOPE?session={SESSION}"]})
        assert (error["code"], error["id"]) == ("unknown_symbol", 1)
        error = await ws.request({"op": "subscribe", "id": 2, "channels": ["ticker:BTC-USD?session=Bad!"]})
        assert error["code"] == "unknown_channel"
    settings.MARKET_WS_ANONYMOUS = False
    async with connect() as ws:
        error = await ws.request({"op": "subscribe", "id": 3, "channels": [TICKER]})
        assert error["code"] == "not_authenticated"
