"""Market data sharded over two Redis servers (issue 16): REDIS_URL names both; each symbol's live channel, history
and lease live on its shard (CRC-32 of the symbol modulo 2), both servers carry traffic, and one client subscribed to
symbols of both shards receives them all, with no silent gap; one of them restarted, every symbol recovers."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from config.redis_hosts import shard_index
from marketdata import groups
from tests.faults.processes import Socket, redis_server
from tests.faults.test_redis_outage import OUTAGE_SECONDS, RETRY
from tests.faults.test_redis_sentinel import market_frames, silent_gaps, until
from tests.redis_topology import plain_shards, redis_server_binary
from tests.servers import manage, restartable_daphne, stack_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.redis,
    pytest.mark.skipif(redis_server_binary() is None, reason="Debian's redis-server is not installed (make test installs it)"),
]

SHARDS = {"AAPL": 0, "BTC-USD": 0, "MSFT": 1, "SAP": 1}  # the documented map, for two servers


def updates_of(socket: Socket, symbol: str) -> int:
    return sum(1 for f in market_frames(socket) if f["type"] == "update" and f["ch"] == f"ticker:{symbol}")


def readyz(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/readyz", timeout=5) as response:  # noqa: S310 (ours, on loopback)
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_the_symbols_of_this_test_fall_on_both_shards() -> None:
    assert {symbol: shard_index(symbol, 2) for symbol in SHARDS} == SHARDS


async def test_two_shards_both_carry_traffic_and_one_client_gets_the_symbols_of_both(
    instruments: Any, synthetic_feed: Any, layer_prefix: str, tmp_path: Path
) -> None:
    with plain_shards(tmp_path / "redis", 2) as servers:
        urls = ",".join(server.url for server in servers)
        with restartable_daphne(redis_url=urls, layer_prefix=layer_prefix, logs=tmp_path / "logs") as daphne:
            worker_log = tmp_path / "run_feeds.log"
            worker = manage("run_feeds", env=stack_env(redis_url=urls, layer_prefix=layer_prefix), log=worker_log)
            market = Socket(
                daphne.url.replace("http", "ws", 1) + "/ws/v1/market",
                hello={"op": "subscribe", "id": 1, "channels": [f"ticker:{symbol}" for symbol in SHARDS]},
            )
            stop = asyncio.Event()
            client = asyncio.create_task(market.run(stop))
            try:
                await until(lambda: all(updates_of(market, symbol) >= 3 for symbol in SHARDS), 30, "live updates of every symbol")
                clients = [server.client() for server in servers]
                for symbol, shard in SHARDS.items():
                    channel = groups.live_channel(layer_prefix, symbol)
                    subscribed = [dict(c.pubsub_numsub(channel))[channel] for c in clients]
                    history = [c.exists(f"{layer_prefix}:hist:ticker:{symbol}") for c in clients]
                    lease = [c.exists(groups.lease_key(layer_prefix, symbol)) for c in clients]
                    expected = [int(i == shard) for i in range(2)]
                    assert (subscribed, history, lease) == (expected, expected, expected), symbol
                published = [int(c.info("stats")["total_commands_processed"]) for c in clients]
                ready = await asyncio.to_thread(readyz, daphne.url)
                assert ready["checks"]["redis"] == "ok (2 servers)", ready
                assert worker.poll() is None, worker_log.read_text()
            finally:
                stop.set()
                client.cancel()
                await asyncio.gather(client, return_exceptions=True)
                if worker.poll() is None:
                    worker.terminate()
                    await asyncio.to_thread(worker.wait, 30)
    log = worker_log.read_text()
    assert "Traceback" not in log and "Redis is unreachable" not in log, log
    assert not silent_gaps(market), silent_gaps(market)
    assert not market.closes and not market.statuses, (market.closes, market.statuses)
    counts = {symbol: updates_of(market, symbol) for symbol in SHARDS}
    print(f"\nFIGURE two shards: updates per symbol {counts}; commands processed per server {published}; no silent gap")


async def test_one_shard_restarted_empty_stalls_every_symbol_until_it_is_back_then_all_recover_with_no_silent_gap(
    instruments: Any, synthetic_feed: Any, layer_prefix: str, tmp_path: Path
) -> None:
    """The worker treats any server's failure as Redis being down: it drops (and counts) every symbol's messages until
    all answer again, then publishes every symbol afresh under a new epoch."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with redis_server(tmp_path / "a") as first, redis_server(tmp_path / "b") as second:
        urls = f"{first.url},{second.url}"
        with restartable_daphne(redis_url=urls, layer_prefix=layer_prefix, logs=tmp_path / "logs") as daphne:
            worker_log = tmp_path / "run_feeds.log"
            env = stack_env(redis_url=urls, layer_prefix=layer_prefix) | RETRY
            worker = manage("run_feeds", env=env, log=worker_log)
            market = Socket(
                daphne.url.replace("http", "ws", 1) + "/ws/v1/market",
                hello={"op": "subscribe", "id": 1, "channels": [f"ticker:{symbol}" for symbol in SHARDS]},
            )
            stop = asyncio.Event()
            client = asyncio.create_task(market.run(stop))
            try:
                await until(lambda: all(updates_of(market, s) >= 2 for s in SHARDS), 30, "live updates of every symbol")
                before = {f["epoch"] for f in market_frames(market)}
                second.stop()
                await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: its length is the scenario, not a wait for a condition
                assert worker.poll() is None, worker_log.read_text()
                second.start()
                up = time.monotonic()
                seen = len(market.frames)

                def fresh(symbol: str) -> bool:
                    return any(
                        f.get("type") == "update" and f.get("ch") == f"ticker:{symbol}" and f.get("epoch") not in before
                        for _, f in market.frames[seen:]
                    )

                back = await until(lambda: all(fresh(s) for s in SHARDS), 20, "every symbol on a new epoch")
            finally:
                stop.set()
                client.cancel()
                await asyncio.gather(client, return_exceptions=True)
                if worker.poll() is None:
                    worker.terminate()
                    await asyncio.to_thread(worker.wait, 30)
    log = worker_log.read_text()
    assert "Traceback" not in log, log
    assert log.count("Redis is unreachable") == log.count("Redis is back") >= 1, log
    assert not silent_gaps(market), silent_gaps(market)
    assert set(market.closes) <= {1013}, market.closes
    print(
        f"\nFIGURE one of two shards restarted after {OUTAGE_SECONDS} s: every symbol on a new epoch {back - up:.2f} s after it returned; closes {market.closes}"
    )
