"""Market data over two Redis servers (two URLs, or two master sets behind Sentinel): each symbol's history, live
channel and lease on its shard (`config.redis_hosts.shard_index`: AAPL on the first of two, MSFT on the second),
read and written as one store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from config.redis_hosts import configured_servers
from marketdata import groups
from marketdata.delivery import fanout, streams
from marketdata.delivery.history import Fenced, ShardedMarketStore, market_store
from marketdata.worker.leases import Leases
from tests.conftest import PRODUCTION_LAYER, Tap, _use_layer, until
from tests.redis_topology import Node, plain_shards, redis_server_binary, sentinel_shards

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(redis_server_binary() is None, reason="Debian's redis-server is not installed (make test installs it)"),
]


@pytest.fixture(params=["REDIS_URL", "REDIS_SENTINELS"])
def shards(request: pytest.FixtureRequest, tmp_path: Path, layer_prefix: str) -> Iterator[list[Node]]:
    """Two Redis servers of this test's own as the channel layer's hosts, configured from the settings as production
    does: two URLs in REDIS_URL, or two master names behind three sentinels."""
    with ExitStack() as stack:
        if request.param == "REDIS_URL":
            nodes = stack.enter_context(plain_shards(tmp_path / "redis", 2))
            env = {}
            url = ",".join(n.url for n in nodes)
        else:
            nodes, sentinels, names = stack.enter_context(sentinel_shards(tmp_path / "redis", 2))
            env, url = {"REDIS_SENTINELS": sentinels, "REDIS_SENTINEL_MASTER": ",".join(names)}, ""
        servers = configured_servers(env, url=url)
        hosts = [
            s.layer_host(socket_timeout=settings.REDIS_SOCKET_TIMEOUT, max_connections=settings.REDIS_MAX_CONNECTIONS) for s in servers
        ]
        _use_layer(
            {"BACKEND": PRODUCTION_LAYER["BACKEND"], "CONFIG": {**PRODUCTION_LAYER["CONFIG"], "hosts": hosts, "prefix": layer_prefix}}
        )
        yield nodes


def tick(symbol: str, seq: int, epoch: str = "e1") -> dict[str, Any]:
    return {"ch": f"ticker:{symbol}", "epoch": epoch, "seq": seq, "ts": seq, "data": {"last": str(seq)}}


async def test_a_window_is_written_to_each_symbols_shard_and_read_back_as_one_store(shards: list[Node], layer_prefix: str) -> None:
    store = market_store()
    assert isinstance(store, ShardedMarketStore)
    await store.append([tick("AAPL", 1), tick("MSFT", 1), tick("AAPL", 2), tick("MSFT", 2)])
    first, second = (node.client() for node in shards)
    assert (first.xlen(f"{layer_prefix}:hist:ticker:AAPL"), second.exists(f"{layer_prefix}:hist:ticker:AAPL")) == (2, 0)
    assert (second.xlen(f"{layer_prefix}:hist:ticker:MSFT"), first.exists(f"{layer_prefix}:hist:ticker:MSFT")) == (2, 0)
    assert await store.head("ticker:MSFT") == ("e1", 2)
    assert [m["seq"] for m in await store.since("ticker:AAPL", epoch="e1", seq=0) or []] == [1, 2]
    assert (await store.snapshot("ticker:MSFT"))["data"] == {"last": "2"}
    assert {symbol: m["seq"] for symbol, m in (await store.tickers(["AAPL", "MSFT", "SAP"])).items()} == {"AAPL": 2, "MSFT": 2}


async def test_a_fenced_shard_leaves_the_other_written_and_the_retry_does_not_write_it_twice(shards: list[Node], layer_prefix: str) -> None:
    old, new = Leases(holder="old", ttl=5), Leases(holder="new", ttl=5)
    assert await old.acquire(["AAPL", "MSFT"]) == {}
    first, second = (node.client() for node in shards)
    assert (first.exists(groups.lease_key(layer_prefix, "AAPL")), second.exists(groups.lease_key(layer_prefix, "MSFT"))) == (1, 1)
    assert (first.exists(groups.lease_key(layer_prefix, "MSFT")), second.exists(groups.lease_key(layer_prefix, "AAPL"))) == (0, 0)
    store = market_store()
    await new.acquire(["MSFT"], takeover=True)
    window = [tick("AAPL", 1), tick("MSFT", 1)]
    with pytest.raises(Fenced) as fenced:
        await store.append(window, fence=old.fence(["AAPL", "MSFT"]))
    assert fenced.value.keys == ["MSFT"]
    await store.append([tick("AAPL", 1)], fence=old.fence(["AAPL"]))  # the worker writes the rest again, as loop.py does
    assert await store.head("ticker:AAPL") == ("e1", 1) and first.xlen(f"{layer_prefix}:hist:ticker:AAPL") == 1
    assert await store.head("ticker:MSFT") == ("", 0)
    [lost] = await old.renew()
    assert (lost.key, lost.holder) == ("MSFT", "new")


async def test_the_hub_subscribes_on_each_symbols_shard_and_hears_both(shards: list[Node], layer_prefix: str) -> None:
    tap = Tap()
    await streams.subscribe_market(tap, ["ticker:AAPL", "ticker:MSFT"])
    hub = streams.market_hub()
    assert isinstance(hub, fanout.ShardedHub) and hub.symbols() == {"AAPL", "MSFT"}
    first, second = (node.client() for node in shards)
    for symbol, subscribed in (("AAPL", [1, 0]), ("MSFT", [0, 1])):
        channel = groups.live_channel(layer_prefix, symbol)
        assert [dict(c.pubsub_numsub(channel))[channel] for c in (first, second)] == subscribed, symbol
    await streams.publish_market_window({"AAPL": [tick("AAPL", 1)], "MSFT": [tick("MSFT", 1)]})
    await until(lambda: len(tap.messages) == 2, what="both shards' messages")
    assert sorted(m["ch"] for m in tap.take()) == ["ticker:AAPL", "ticker:MSFT"]
    streams.unsubscribe_market(tap, ["ticker:AAPL", "ticker:MSFT"])
    assert hub.symbols() == set()


async def test_the_channel_layer_spreads_users_groups_over_both_servers_and_delivers(shards: list[Node], layer_prefix: str) -> None:
    layer = get_channel_layer()
    assert layer is not None
    users = range(1, 41)
    channels = [await layer.new_channel() for _ in users]
    for user, channel in zip(users, channels, strict=True):
        await layer.group_add(groups.user_group(user), channel)
    for user in users:
        await layer.group_send(groups.user_group(user), {"type": "portfolio.reload", "user": user})
    received = [await asyncio.wait_for(layer.receive(channel), 10) for channel in channels]
    assert [event["user"] for event in received] == list(users)
    # channels-redis's own sharding (CRC-32 of the group name, low 12 bits): uneven for names this alike, 32 and 8.
    holding = [len(node.client().keys(f"{layer_prefix}:group:*")) for node in shards]
    assert holding == [32, 8], holding
    await layer.flush()
