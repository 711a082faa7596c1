"""The Redis users of one process through Sentinel (a primary, a replica, three sentinels on loopback): the bounded
command pool, the history, the leases and the hub, before and after a planned failover (SENTINEL FAILOVER: the old
primary stays up, as a replica). The unplanned one (the primary killed) is tests/faults/test_redis_sentinel.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from config.redis_hosts import configured_servers
from marketdata.delivery import streams
from marketdata.delivery.history import market_store
from marketdata.worker.leases import Leases
from tests.conftest import PRODUCTION_LAYER, Tap, _use_layer, until
from tests.redis_topology import MASTER, SentinelGroup, redis_server_binary, sentinel_group

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(redis_server_binary() is None, reason="Debian's redis-server is not installed (make test installs it)"),
]


@pytest.fixture
def group(tmp_path: Path, layer_prefix: str) -> Iterator[SentinelGroup]:
    with sentinel_group(tmp_path / "redis") as found:
        [server] = configured_servers({"REDIS_SENTINELS": found.addresses, "REDIS_SENTINEL_MASTER": MASTER}, url="")
        host = server.layer_host(socket_timeout=settings.REDIS_SOCKET_TIMEOUT, max_connections=settings.REDIS_MAX_CONNECTIONS)
        _use_layer(
            {"BACKEND": PRODUCTION_LAYER["BACKEND"], "CONFIG": {**PRODUCTION_LAYER["CONFIG"], "hosts": [host], "prefix": layer_prefix}}
        )
        yield found


class Catching(Tap):
    """A sink that notes what the hub says it may have missed (a connection would catch up from the history)."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: list[str] = []

    def missed(self, channels: Sequence[str]) -> None:
        self.missing.extend(channels)


def tick(seq: int, epoch: str = "e1") -> dict[str, Any]:
    return {"ch": "ticker:AAPL", "epoch": epoch, "seq": seq, "ts": seq, "data": {"last": str(seq)}}


async def test_a_burst_past_the_pool_waits_for_a_connection_and_never_opens_more_than_the_bound(group: SentinelGroup) -> None:
    target = streams.redis_target()
    assert target is not None
    client = target[0].client(max_connections=4, timeout=10)
    primary = group.primary.client()
    before = max(int(c["id"]) for c in primary.client_list())
    try:
        replies = await asyncio.gather(*(client.ping() for _ in range(40)))
        assert all(replies)
        ours = [
            c for c in primary.client_list() if int(c["id"]) > before and not c["name"].startswith("sentinel") and "S" not in c["flags"]
        ]
        assert 1 <= len(ours) <= 5, ours  # the pool's, and this test's own client_list connection
    finally:
        await client.aclose()


async def test_history_leases_and_hub_follow_a_planned_failover(group: SentinelGroup) -> None:
    leases = Leases(holder="worker", ttl=5)
    assert await leases.acquire(["AAPL"]) == {}
    store = market_store()
    await store.append([tick(1)], fence=leases.fence(["AAPL"]))
    tap = Catching()
    await streams.subscribe_market(tap, ["ticker:AAPL"])
    await until(lambda: group.replica.client().exists(f"{streams.redis_target()[1]}:hist:ticker:AAPL") == 1, what="replication")  # type: ignore[index]

    old = group.master_port()
    assert old is not None
    group.sentinels[0].client().execute_command("SENTINEL", "FAILOVER", MASTER)
    new = await asyncio.to_thread(group.wait_for_failover, old)
    assert new == group.replica.port

    # Writes must reach the new primary through the sentinels. Until the pool has asked them (every second), a pooled
    # connection to the old primary still writes there, and that write is lost when it resyncs (Sentinel's
    # asynchronous replication; the history then has a hole, which `since` reports and a snapshot repairs).
    key = f"{streams.redis_target()[1]}:hist:ticker:AAPL"  # type: ignore[index]
    seq = 1

    async def written_on_the_new_primary() -> bool:
        nonlocal seq
        seq += 1
        try:
            assert await leases.renew() == []
            await store.append([tick(seq)], fence=leases.fence(["AAPL"]))
        except Exception:
            return False
        newest = group.replica.client().xrevrange(key, count=1)
        return bool(newest) and newest[0][0] == f"{seq}-0"

    # Within a few seconds: the pool asks the sentinels every second. Before it did, the first write reached the new
    # primary only once the old one had been turned into a replica, about 10 s later.
    await until(written_on_the_new_primary, timeout=5, what="a fenced write through the new primary")
    assert await store.head("ticker:AAPL") == ("e1", seq)
    heard_from = seq

    # The hub leaves the old primary once the sentinels name the new one (`LocalHub._follow`), subscribes on the new one
    # and tells its sinks what they may have missed; publishes made before it is subscribed again are what they catch up on.
    async def heard() -> bool:
        nonlocal seq
        seq += 1
        await streams.publish_market_window({"AAPL": [tick(seq)]}, {"AAPL": leases.tokens["AAPL"]})
        await asyncio.sleep(0.05)
        return any(m["seq"] > heard_from for m in tap.messages)

    await until(heard, timeout=5, what="the hub hearing a publish on the new primary")
    assert tap.missing == ["ticker:AAPL"]  # told to catch up from the history, as a connection does
    streams.unsubscribe_market(tap, ["ticker:AAPL"])
