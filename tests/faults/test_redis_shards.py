"""Market data sharded over two Redis servers (issue 16): REDIS_URL names both; each symbol's live channel, history
and lease live on its shard (CRC-32 of the symbol modulo 2), both servers carry traffic, and one client subscribed to
symbols of both shards receives them all, with no silent gap."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from config.redis_hosts import shard_index
from marketdata import groups
from tests.faults.processes import Socket
from tests.faults.test_redis_sentinel import market_frames, silent_gaps, until
from tests.redis_topology import plain_shards, redis_server_binary
from tests.servers import manage, restartable_daphne, stack_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.redis,
    pytest.mark.skipif(redis_server_binary() is None, reason="Debian's redis-server is not installed (make test installs it)"),
]

SHARDS = {"AAPL": 0, "BTC-USD": 0, "MSFT": 1, "SAP": 1}  # the documented map, for two servers


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

                def updates_of(symbol: str) -> int:
                    return sum(1 for f in market_frames(market) if f["type"] == "update" and f["ch"] == f"ticker:{symbol}")

                await until(lambda: all(updates_of(symbol) >= 3 for symbol in SHARDS), 30, "live updates of every symbol")
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
    counts = {symbol: updates_of(symbol) for symbol in SHARDS}
    print(f"\nFIGURE two shards: updates per symbol {counts}; commands processed per server {published}; no silent gap")
