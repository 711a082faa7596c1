"""One producer per symbol: leases in Redis with fencing tokens, refused, taken over, and freed by a killed holder."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError

from marketdata.delivery import fanout, streams
from marketdata.delivery.history import Fenced, RedisMarketStore, market_store
from marketdata.events import BookDelta, BookSnapshot, Candle, MarketEvent, PriceUpdate, Trade
from marketdata.feeds import native
from marketdata.models import Instrument
from marketdata.worker.leases import LeaseRefused, Leases
from marketdata.worker.loop import Worker
from tests.conftest import Tap, until

pytestmark = pytest.mark.redis

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Leases of the workers in these tests: renewed every 0.5 s, so a loaded machine does not let one lapse by accident.
TTL = 1.5
ROOT = Path(__file__).resolve().parents[3]


def leases(holder: str, ttl: float = 5) -> Leases:
    return Leases(holder=holder, ttl=ttl)


class Ticking:
    """A live feed: a BTC-USD trade every 5 ms, its price counting up from `base`, until stopped."""

    name = "ticking"

    def __init__(self, base: int) -> None:
        self.base = base

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        i = 0
        while True:
            i += 1
            yield Trade("BTC-USD", T0 + timedelta(milliseconds=i), Decimal(self.base + i), Decimal(1), "test")
            await asyncio.sleep(0.005)


async def no_store(updates: Iterable[PriceUpdate]) -> int:
    return 0


async def no_candles(candles: Sequence[Candle]) -> int:
    return 0


def worker(feed: Any, holder: Leases, **options: Any) -> Worker:
    """A worker as `run_feeds` makes one, with a history writer of its own, as in a process of its own."""
    target = streams.redis_target()
    assert target is not None
    own = RedisMarketStore(streams.redis_client(target[0]), target[1])
    return Worker(
        **{
            "feed": feed,
            "conflation": 0.02,
            "quote_flush": 60,
            "store_quotes": no_store,
            "store_candles": no_candles,
            "leases": holder,
            "market_history": own,
            **options,
        }
    )


async def test_a_second_producer_is_refused_with_the_holders_name_and_a_takeover_gets_a_higher_token(redis_layer: Any) -> None:
    first, second = leases("run_feeds (pid 1 on a)"), leases("replay_feed (pid 2 on b)")
    assert await first.acquire(["BTC-USD"]) == {}
    assert await second.acquire(["BTC-USD", "ETH-USD"]) == {"BTC-USD": "run_feeds (pid 1 on a)"}
    assert set(second.tokens) == {"ETH-USD"}

    assert await second.acquire(["BTC-USD"], takeover=True) == {"BTC-USD": "run_feeds (pid 1 on a)"}  # the holder it replaced
    assert second.tokens["BTC-USD"] > first.tokens["BTC-USD"]
    [lost] = await first.renew()
    assert (lost.key, lost.holder) == ("BTC-USD", "replay_feed (pid 2 on b)")
    assert first.tokens == {}


async def test_a_write_with_an_old_token_is_fenced_off_at_the_history_and_at_every_servers_hub(redis_layer: Any) -> None:
    old, new = leases("old"), leases("new")
    await old.acquire(["BTC-USD"])
    message = {"ch": "ticker:BTC-USD", "epoch": "e-old", "seq": 1, "ts": 1, "data": {"last": "1"}}
    store = market_store()
    await store.append([message], fence=old.fence(["BTC-USD"]))
    await new.acquire(["BTC-USD"], takeover=True)  # the old holder hangs meanwhile and never renews

    with pytest.raises(Fenced) as fenced:
        await store.append([message | {"seq": 2}], fence=old.fence(["BTC-USD"]))
    assert fenced.value.keys == ["BTC-USD"]
    assert await store.head("ticker:BTC-USD") == ("e-old", 1)  # nothing of the fenced write

    tap = Tap()
    await streams.subscribe_market(tap, ["ticker:BTC-USD"])
    await streams.publish_market_window({"BTC-USD": [message | {"epoch": "e-new"}]}, {"BTC-USD": new.tokens["BTC-USD"]})
    await streams.publish_market_window({"BTC-USD": [message | {"seq": 3}]}, {"BTC-USD": old.tokens["BTC-USD"]})
    await streams.publish_market_window({"BTC-USD": [message | {"epoch": "e-new", "seq": 2}]}, {"BTC-USD": new.tokens["BTC-USD"]})
    await until(lambda: len(tap.messages) == 2, what="the new holder's two messages")
    assert [(m["epoch"], m["seq"]) for m in tap.take()] == [("e-new", 1), ("e-new", 2)]
    assert streams.market_hub().stats.fenced == 1
    streams.unsubscribe_market(tap, ["ticker:BTC-USD"])


async def test_a_refused_worker_stops_or_stands_by_and_takes_over_when_the_holder_stops(redis_layer: Any) -> None:
    holder = worker(Ticking(100), leases("holder", ttl=TTL))
    stop_holder = asyncio.Event()
    running = asyncio.create_task(holder.run(stop_holder))
    await until(lambda: "BTC-USD" in holder.leases.tokens, what="the holder's lease")  # type: ignore[union-attr]

    with pytest.raises(LeaseRefused, match=r"BTC-USD is published by holder.*--takeover"):
        await worker(Ticking(0), leases("refused")).run(asyncio.Event())

    standby = worker(Ticking(10_000), leases("standby", ttl=TTL), standby=True)
    stop_standby = asyncio.Event()
    waiting = asyncio.create_task(standby.run(stop_standby))
    await until(lambda: standby.stats.not_held["BTC-USD"] > 0, what="the standby skipping BTC-USD")
    stop_holder.set()
    await running  # releases its lease on the way out
    await until(lambda: standby.stats.market_messages > 0, timeout=TTL + 2, what="the standby publishing BTC-USD")
    stop_standby.set()
    await waiting
    # A new epoch of its own for the symbol, newer than the holder's, though the standby started first (a dashboard
    # takes the newer epoch, `portfolio.live`).
    epoch = (await market_store().snapshot("ticker:BTC-USD"))["epoch"]
    assert epoch == standby.market.epoch_of("BTC-USD") != standby.hub.epoch
    assert int(epoch) > int(holder.hub.epoch)


async def test_a_takeover_stops_the_holder_publishing_and_its_clients_hear_only_the_new_epoch_after_it(redis_layer: Any) -> None:
    tap = Tap()
    await streams.subscribe_market(tap, ["ticker:BTC-USD"])
    holder = worker(Ticking(100), leases("holder", ttl=TTL))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(holder.run(stop))]
    await until(lambda: len(tap.messages) > 3, what="the holder's prices")

    taker = worker(Ticking(10_000), leases("taker", ttl=TTL), takeover=True)
    tasks.append(asyncio.create_task(taker.run(stop)))
    await until(lambda: "BTC-USD" in holder.stats.lost, timeout=TTL + 2, what="the holder noticing the takeover")
    assert holder.stats.lost["BTC-USD"] == "taker"
    await until(lambda: taker.stats.market_messages > 5, what="the taker's prices")
    stop.set()
    await asyncio.gather(*tasks)

    epochs = [m["epoch"] for m in tap.take()]
    switch = epochs.index(taker.hub.epoch)
    assert set(epochs[:switch]) == {holder.hub.epoch} and set(epochs[switch:]) == {taker.hub.epoch}
    assert (await market_store().head("ticker:BTC-USD"))[0] == taker.hub.epoch
    streams.unsubscribe_market(tap, ["ticker:BTC-USD"])


async def test_a_refusal_tells_when_the_holders_lease_ends_unless_renewed(redis_layer: Any) -> None:
    holder, standby = leases("holder", ttl=1), leases("standby", ttl=30)
    await holder.acquire(["BTC-USD"])
    assert standby.ending(["BTC-USD"]) is None  # never refused: nothing known
    await standby.acquire(["BTC-USD"])
    left = standby.ending(["BTC-USD"])
    assert left is not None and 0.5 < left <= 1  # the holder's TTL, not the standby's own
    await asyncio.sleep(left + 0.01)  # the moment the lease ends (Redis expires keys to the millisecond) is what is tested
    assert await standby.acquire(["BTC-USD"]) == {}
    assert standby.tokens["BTC-USD"] > holder.tokens["BTC-USD"]
    assert standby.ending(["BTC-USD"]) is None


async def test_a_standby_takes_over_when_the_holders_lease_ends_not_a_renewal_period_later(redis_layer: Any) -> None:
    """The standby's own renewals come every 20 s (a TTL of 60 s): it must wake when the holder's lease ends instead."""
    holder = leases("hanging holder", ttl=3)
    await holder.acquire(["BTC-USD"])
    standby = worker(Ticking(10_000), leases("standby", ttl=60), standby=True)
    stop = asyncio.Event()
    running = asyncio.create_task(standby.run(stop))
    try:
        await until(lambda: standby.stats.not_held["BTC-USD"] > 0, what="the standby skipping BTC-USD")
        for _ in range(5):  # alive a while: renewed, and the standby keeps out (a renewal is 2.8 s short of the TTL)
            await asyncio.sleep(0.2)
            assert await holder.renew() == []
        last_renewal = time.monotonic()  # then it hangs
        await until(lambda: standby.stats.market_messages > 0, timeout=10, what="the standby publishing BTC-USD")
        took = time.monotonic() - last_renewal
        assert took <= holder.ttl + 1, f"took over {took:.2f} s after the holder's last renewal (TTL {holder.ttl} s)"
        assert standby.leases is not None and standby.leases.tokens["BTC-USD"] > holder.tokens["BTC-USD"]
        [lost] = await holder.renew()  # the holder wakes up: its lease is gone, to the standby
        assert lost.holder == "standby"
    finally:
        stop.set()
        await running


async def test_a_standby_holding_nothing_reports_redis_back_at_its_next_renewal(redis_layer: Any) -> None:
    """It publishes nothing, so only its lease renewals talk to Redis: the first that succeeds ends the outage (the
    soak saw "Redis is back after 50.2 s" from a standby, for a Redis back within 0.3 s, at its first later write)."""
    holder = leases("holder", ttl=30)
    await holder.acquire(["BTC-USD"])
    standby = worker(Ticking(10_000), leases("standby", ttl=0.6), standby=True)
    stop = asyncio.Event()
    running = asyncio.create_task(standby.run(stop))
    try:
        await until(lambda: standby.stats.not_held["BTC-USD"] > 0, what="the standby skipping BTC-USD")
        standby.redis_outage.failed(ConnectionError("Redis restarted"), what="renewing the leases of 0 symbols")
        await until(lambda: not standby.redis_outage.down, timeout=2, what="the standby's outage ended by a renewal")
        assert standby.redis_outage.last_seconds < 1
        assert standby.stats.market_messages == 0  # still standing by
    finally:
        stop.set()
        await running


async def test_a_takeover_starts_an_epoch_above_the_one_published_whatever_the_clocks(redis_layer: Any) -> None:
    """The holder ran on a machine whose clock is ahead: the standby's new epoch still sorts after its epoch."""
    holder = leases("holder on a fast clock", ttl=1)
    await holder.acquire(["BTC-USD"])
    ahead = str(int(time.time() * 1000) + 86_400_000)  # a day ahead
    message = {"ch": "ticker:BTC-USD", "epoch": ahead, "seq": 1, "ts": 1, "data": {"last": "1"}}
    await market_store().append([message], fence=holder.fence(["BTC-USD"]))
    standby = worker(Ticking(10_000), leases("standby", ttl=60), standby=True)
    stop = asyncio.Event()
    running = asyncio.create_task(standby.run(stop))
    try:
        await until(lambda: standby.stats.market_messages > 0, timeout=10, what="the standby publishing BTC-USD")
    finally:
        stop.set()
        await running
    epoch, _ = await market_store().head("ticker:BTC-USD")
    assert epoch == standby.market.epoch_of("BTC-USD")
    assert int(epoch) > int(ahead)


async def test_a_lease_forgotten_while_its_renewal_awaits_redis_is_not_reported_lost_again(
    redis_layer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's fenced write and its renewal run side by side: the write may find a lease gone (and forget it) while
    the renewal of that same lease is on its way; the renewal must not fail, nor report the loss a second time."""
    holder, taker = leases("holder"), leases("taker")
    await holder.acquire(["AAPL", "BTC-USD"])
    await taker.acquire(["AAPL", "BTC-USD"], takeover=True)
    script = holder._script

    def forgetting(name: str, key: str) -> Any:
        holder.forget(["AAPL", "BTC-USD"])  # what the fenced write does, here while the renewal awaits Redis
        return script(name, key)

    monkeypatch.setattr(holder, "_script", forgetting)
    assert await holder.renew() == []
    assert holder.tokens == {}


async def test_a_worker_that_lost_a_symbol_does_not_store_its_older_quote_or_candle_over_the_new_producers(redis_layer: Any) -> None:
    stored: list[PriceUpdate] = []
    candles: list[Candle] = []

    async def store(updates: Iterable[PriceUpdate]) -> int:
        stored.extend(updates)
        return 0

    async def store_candles(closed: Sequence[Candle]) -> int:
        candles.extend(closed)
        return 0

    # Its quotes are stored at its end only (quote_flush 60 s), and its ticks all fall in one minute, stored at its end.
    holder = worker(Ticking(100), leases("holder", ttl=TTL), standby=True, store_quotes=store, store_candles=store_candles)
    stop_holder = asyncio.Event()
    running = asyncio.create_task(holder.run(stop_holder))
    await until(lambda: holder.stats.market_messages > 3, what="the holder's prices")
    taker = worker(Ticking(10_000), leases("taker", ttl=TTL), takeover=True)
    stop_taker = asyncio.Event()
    taking = asyncio.create_task(taker.run(stop_taker))
    await until(lambda: "BTC-USD" in holder.stats.lost, timeout=TTL + 2, what="the holder noticing the takeover")
    stop_holder.set()
    await running
    stop_taker.set()
    await taking
    assert stored == []  # its last quote of BTC-USD, older than the taker's prices, was not written at its end
    assert candles == []  # nor its part of the minute's candle, over the taker's


HOLD = """
import asyncio, sys
import redis.asyncio as aioredis
from marketdata.worker.leases import Leases

async def main():
    leases = Leases(holder="killed worker", ttl=float(sys.argv[3]), redis=(aioredis.from_url(sys.argv[1], decode_responses=True), sys.argv[2]))
    await leases.acquire(["BTC-USD"])
    print(leases.tokens["BTC-USD"], flush=True)
    while True:
        await asyncio.sleep(leases.ttl / 3)
        await leases.renew()

asyncio.run(main())
"""


async def test_a_killed_holders_lease_is_free_once_its_ttl_has_run_out(redis_layer: Any, redis_url: str) -> None:
    ttl = 1.0
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    args = [textwrap.dedent(HOLD), redis_url, redis_layer["CONFIG"]["prefix"], str(ttl)]
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        killed_token = int(await process.stdout.readline())
        mine = leases("standby", ttl=ttl)
        await asyncio.sleep(ttl * 1.5)  # renewed meanwhile: still held past one TTL
        assert await mine.acquire(["BTC-USD"]) == {"BTC-USD": "killed worker"}
        process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        await until(lambda: _taken(mine), timeout=ttl + 2, what="the lease after the holder was killed")
        assert time.monotonic() - killed_at <= ttl + 2
        assert mine.tokens["BTC-USD"] > killed_token
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


async def _taken(mine: Leases) -> bool:
    await mine.acquire(["BTC-USD"])
    return "BTC-USD" in mine.tokens


@pytest.mark.django_db(transaction=True)
def test_replay_feed_of_a_symbol_another_worker_publishes_is_refused_naming_it(
    redis_layer: Any, instruments: dict[str, Instrument], tmp_path: Path
) -> None:
    capture = tmp_path / "btc.jsonl"
    capture.write_text(native.encode(Trade("BTC-USD", T0, Decimal(1), Decimal(1), "test")) + "\n")
    holder = leases("run_feeds (pid 1 on a)")
    assert async_to_sync(holder.acquire)(["BTC-USD"]) == {}

    with pytest.raises(CommandError, match=r"refused: BTC-USD is published by run_feeds \(pid 1 on a\).*--takeover"):
        call_command("replay_feed", str(capture), "--speed", "max", "--no-progress", stdout=StringIO())
    assert head("ticker:BTC-USD") == ("", 0)

    out = StringIO()
    call_command("replay_feed", str(capture), "--speed", "max", "--no-progress", "--takeover", stdout=out)
    assert head("ticker:BTC-USD")[1] == 1
    # The replay took the lease over and gave it back when done: the old holder finds it gone for good.
    assert [lost.key for lost in async_to_sync(holder.renew)()] == ["BTC-USD"]


def head(channel: str) -> tuple[str, int]:
    async def read() -> tuple[str, int]:
        return await market_store().head(channel)

    return async_to_sync(read)()


def test_payloads_carry_the_fencing_token() -> None:
    assert fanout.encode_payload([], 7) == b'{"fence":7,"messages":[]}'


class Booking:
    """A live BTC-USD book: a snapshot of ten levels a side, then a delta every 5 ms changing one level, and a trade."""

    name = "booking"

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        bids = tuple((Decimal(100 - i), Decimal(1)) for i in range(10))
        asks = tuple((Decimal(101 + i), Decimal(1)) for i in range(10))
        yield BookSnapshot("BTC-USD", T0, bids, asks, "test")
        i = 0
        while True:
            i += 1
            at = T0 + timedelta(milliseconds=i)
            yield BookDelta("BTC-USD", at, ((Decimal(100 - i % 10), Decimal(1 + i % 7)),), (), "test")
            yield Trade("BTC-USD", at, Decimal(100), Decimal(1), "test")
            await asyncio.sleep(0.005)


async def test_a_standby_that_gets_its_symbol_back_starts_its_channels_over_with_whole_snapshots(redis_layer: Any) -> None:
    first = worker(Booking(), leases("first", ttl=TTL), standby=True)
    stop_first = asyncio.Event()
    running = asyncio.create_task(first.run(stop_first))
    await until(lambda: first.stats.market_messages > 20, what="the first worker's book")

    taker = worker(Ticking(10_000), leases("taker", ttl=TTL), takeover=True)
    stop_taker = asyncio.Event()
    taking = asyncio.create_task(taker.run(stop_taker))
    await until(lambda: "BTC-USD" in first.stats.lost, timeout=TTL + 2, what="the takeover")
    first_seq = first.market.seqs["ticker:BTC-USD"]
    await until(lambda: taker.market.seqs.get("ticker:BTC-USD", 0) > first_seq + 20, what="the taker publishing more than the first did")
    stop_taker.set()
    await taking  # gives the lease back: the standby takes it at its next renewal

    published = first.stats.market_messages
    await until(lambda: first.stats.market_messages > published + 20, timeout=TTL + 3, what="the first worker publishing again")
    stop_first.set()
    await running

    store = market_store()
    assert first.stats.market_store_errors == 0  # no stale "XADD ID smaller than the top" against the taker's stream
    # Its channels start over under a new epoch of the symbol's, newer than the taker's (and than its own before).
    epoch = (await store.head("ticker:BTC-USD"))[0]
    assert epoch == first.market.epoch_of("BTC-USD")
    assert int(epoch) > int(taker.market.epoch_of("BTC-USD")) >= int(first.hub.epoch)
    for depth in (1, 10):
        channel = f"book:BTC-USD@depth={depth}"
        snapshot = await store.snapshot(channel)
        assert snapshot["data"] == first.market.book_view(channel)  # whole, not a diff against a forgotten past
        assert len(snapshot["data"]["bids"]) == depth
