"""The seam between live data and its consumers.

Consumers subscribe and unsubscribe here; the worker publishes here; writes that
live connections must see are announced here, after commit. Consumers know
nothing of how messages travel: that is this module's business (and
`marketdata.delivery.fanout`'s).

Live traffic per symbol: the market-channel messages (tickers, trades, candles,
books), published once per symbol and window on Redis pub/sub (`publish_market`)
and fanned out inside each server process by its hub (`fanout.LocalHub`), which
holds one subscription per symbol and hands each message, decoded once, to every
local subscriber (`subscribe_market`): API sockets (the `update` frame, encoded
once) and portfolio books (the ticker's price, decoded once). Without a Redis
channel layer the hub is fed in-process, so one process can run the worker and
the consumers. Per-user events (ledger changes) are channel-layer group messages
(`subscribe_user`, `notify_user_on_commit`).

The tape is here too: while a `record_feed` listens, workers append every event
they apply, as native JSONL in chunks, to a capped Redis stream beside the
channel layer's keys. It exists only with a Redis channel layer.
"""

from __future__ import annotations

import asyncio
import copy
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction

from config import redis_hosts
from config.redis_hosts import RedisServer
from marketdata import groups
from marketdata.delivery import fanout

# One message of a market channel (`marketdata.worker.market`): {"ch", "epoch", "seq", "ts", "data"}.
Message = dict[str, Any]


def _layer() -> Any:
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured")
    return layer


async def subscribe_market(sink: fanout.Sink, channels: Iterable[str]) -> None:
    """Deliver these market channels' live messages to `sink` (`sink.deliver(message, frame)`).

    Returns once they flow: a message published after this returns reaches the sink.
    All or nothing: raises (TimeoutError) when Redis does not confirm in time.
    """
    await market_hub().subscribe(sink, channels)


def unsubscribe_market(sink: fanout.Sink, channels: Iterable[str]) -> None:
    """Stop delivering these channels to `sink`. Never waits; channels it does not hold are ignored."""
    market_hub().unsubscribe(sink, channels)


async def subscribe_user(channel_name: str, user_id: int) -> None:
    await _layer().group_add(groups.user_group(user_id), channel_name)


async def unsubscribe_user(channel_name: str, user_id: int) -> None:
    await _layer().group_discard(groups.user_group(user_id), channel_name)


async def publish_market(symbol: str, messages: Sequence[Message], *, session: str = "") -> None:
    """One symbol's market-channel messages of one window, in seq order per channel, encoded once.

    The worker appends them to the history (`marketdata.delivery.history`) first, so a
    consumer that subscribed and then read the history sees no hole (it drops what it already has by seq).
    `session`: they are a replay session's (`?session=NAME` channels), published on that session's stream.
    """
    await publish_market_window({symbol: messages}, session=session)


async def publish_market_window(
    window: Mapping[str, Sequence[Message]], fences: Mapping[str, int] | None = None, *, session: str = ""
) -> None:
    """`publish_market` for every symbol of a window: one PUBLISH each (on `groups.market_key(symbol, session)`), in one
    round trip. `fences`: the publisher's fencing token per symbol (`marketdata.worker.leases`), carried in each payload."""
    fences = fences or {}
    at = time.time()  # when it was published: the hubs report the lag from here to their receipt
    redis = _maybe_redis()
    if redis is None:
        hub = market_hub()
        for symbol, messages in window.items():
            hub.publish_local(groups.market_key(symbol, session), fanout.encode_payload(messages, fences.get(symbol), at))
        return
    prefix = redis[1]
    by_shard: dict[int, list[str]] = {}
    for symbol in window:
        by_shard.setdefault(shard_of(symbol), []).append(symbol)

    async def publish(shard: int, symbols: list[str]) -> None:
        async with _redis(shard)[0].pipeline(transaction=False) as pipe:
            for symbol in symbols:
                payload = fanout.encode_payload(window[symbol], fences.get(symbol), at)
                pipe.publish(groups.live_channel(prefix, groups.market_key(symbol, session)), payload)
            await pipe.execute()

    if len(by_shard) == 1:
        [(shard, symbols)] = by_shard.items()
        await publish(shard, symbols)
        return
    # Every shard's round trip at once; the first failure is raised once all have ended (none is left running).
    outcomes = await asyncio.gather(*(publish(shard, symbols) for shard, symbols in by_shard.items()), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def redis_ping() -> None:
    """Raise (redis ConnectionError, TimeoutError) unless every server of the channel layer's Redis answers; nothing without one."""
    servers = redis_servers()
    for shard in range(len(servers or ())):
        await _redis(shard)[0].ping()


Hub = fanout.LocalHub | fanout.ShardedHub
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()
_local_hubs: weakref.WeakKeyDictionary[Any, fanout.LocalHub] = weakref.WeakKeyDictionary()
_process_hub = fanout.LocalHub()  # without any channel layer


def market_hub() -> Hub:
    """This process's hub: on the channel layer's Redis (one per event loop; with several servers, one connection to
    each, `fanout.ShardedHub`), or in-process beside an in-memory layer."""
    servers = redis_servers()
    if servers is not None:
        target = redis_target()
        assert target is not None
        loop = asyncio.get_running_loop()
        hub = _hubs.get(loop)
        if len(servers) == 1:
            if not isinstance(hub, fanout.LocalHub) or hub.redis != target:
                hub = _hubs[loop] = fanout.LocalHub(target, socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
        elif not isinstance(hub, fanout.ShardedHub) or (hub.servers, hub.prefix) != (servers, target[1]):
            hub = _hubs[loop] = fanout.ShardedHub(servers, target[1], socket_timeout=settings.REDIS_SOCKET_TIMEOUT)
        return hub
    layer = get_channel_layer()
    if layer is None:
        return _process_hub
    local = _local_hubs.get(layer)
    if local is None:
        local = _local_hubs[layer] = fanout.LocalHub()
    return local


def market_hub_if_any() -> Hub | None:
    """This event loop's Redis hub if one was made (for /readyz: it says whether it is connected); None otherwise."""
    if redis_target() is None:
        return None
    return _hubs.get(asyncio.get_running_loop())


def notify_user_on_commit(user_id: int, event: dict[str, Any]) -> None:
    """Tell one user's live connections about a change, once the write is committed.

    Sent after commit so a connection that reloads on the event reads the new
    rows; a rolled-back write sends nothing.
    """
    group = groups.user_group(user_id)
    # robust: a lost notification must not turn a committed write into an error.
    transaction.on_commit(lambda: async_to_sync(_layer().group_send)(group, event), robust=True)


_local_alerts_version = 0  # without a Redis layer (tests with the in-memory layer): this process's count


def alerts_changed_on_commit() -> None:
    """Once the write commits, bump the alerts version, so every feed worker reloads its alert index (`alerts_version`).

    A counter in Redis rather than a message: a worker that was down, or busy, still sees it has moved."""

    def bump() -> None:
        global _local_alerts_version
        _local_alerts_version += 1
        if redis_target() is not None:
            async_to_sync(_alerts_bump)()

    transaction.on_commit(bump, robust=True)


async def _alerts_bump() -> None:
    redis = _maybe_redis()
    if redis is not None:
        await redis[0].incr(groups.alerts_version_key(redis[1]))


async def alerts_version(client: aioredis.Redis | None = None) -> str:
    """The alerts version (`alerts_changed_on_commit`): "" until the first change; raises when Redis does not answer.

    `client`: a client of the caller's own on the channel layer's Redis (`redis_client`), so that its connections,
    broken by an outage, are never the ones another user of this loop's client picks up next."""
    redis = _maybe_redis()
    if redis is None:
        return str(_local_alerts_version)
    return str(await (client or redis[0]).get(groups.alerts_version_key(redis[1])) or "")


# Chunks (one per worker window) the tape keeps; a recorder further behind than this loses data, and says so.
TAPE_LENGTH = 10_000
# A recorder renews its claim every second; a worker stops taping this long after the last one went.
TAPE_LISTEN_SECONDS = 5

# Per event loop: ({shard: client}, the servers, the key prefix) they were made for.
_redis_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[dict[int, aioredis.Redis], tuple[RedisServer, ...], str]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class TapeChunk:
    id: str  # the Redis stream entry id
    epoch: str  # of the worker that wrote it
    n: int  # counts the worker's chunks: a jump means chunks were lost
    lines: str


def redis_servers() -> tuple[RedisServer, ...] | None:
    """The channel layer's Redis servers, in order (several: shards, `config.redis_hosts`); None when the layer is not Redis."""
    config: dict[str, Any] = settings.CHANNEL_LAYERS.get("default", {})
    if "redis" not in config.get("BACKEND", "").lower():
        return None
    hosts = config["CONFIG"]["hosts"]
    global _servers_read
    if _servers_read is None or _servers_read[0] != hosts:
        _servers_read = (copy.deepcopy(hosts), redis_hosts.servers(hosts))
    return _servers_read[1]


_servers_read: tuple[Any, tuple[RedisServer, ...]] | None = None  # (a copy of the hosts list read, its servers)


def redis_target() -> tuple[RedisServer, str] | None:
    """(the first server, key prefix) of the channel layer's Redis; None when the layer is not Redis."""
    servers = redis_servers()
    if servers is None:
        return None
    config: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    return servers[0], str(config["CONFIG"].get("prefix", "asgi"))


def redis_client(server: RedisServer | str) -> aioredis.Redis:
    """A client for commands (history, connection counts, tape, publishing), on a server or a URL.

    Its pool holds REDIS_MAX_CONNECTIONS connections and then blocks (up to REDIS_SOCKET_TIMEOUT): redis-py 8's
    default pool raises MaxConnectionsError past 100 instead, which failed the subscribes of a burst of
    reconnecting clients (a restarted server) with `server_error`. Through Sentinel, each new connection
    goes to the master the sentinels name at that moment.
    """
    if isinstance(server, str):
        server = RedisServer(url=server)
    return server.client(max_connections=settings.REDIS_MAX_CONNECTIONS, timeout=settings.REDIS_SOCKET_TIMEOUT)


def shard_of(key: str) -> int:
    """The server (index into `redis_servers()`) holding a symbol's market data: its live channel, history, snapshots,
    lease and fence. `key`: a symbol, or a market key (`groups.market_key`: a replay session's streams share their
    symbol's server). CRC-32 of the symbol modulo the number of servers (`config.redis_hosts.shard_index`)."""
    servers = redis_servers()
    return redis_hosts.shard_index(key.partition("?")[0], len(servers) if servers else 1)


def _redis(shard: int = 0) -> tuple[aioredis.Redis, str]:
    """A client on one server of the channel layer's Redis (one per event loop and server) and the layer's key prefix.
    Raises RuntimeError without a Redis layer."""
    target = redis_target()
    servers = redis_servers()
    if target is None or servers is None:
        raise RuntimeError("no Redis channel layer")
    prefix = target[1]
    loop = asyncio.get_running_loop()
    known = _redis_clients.get(loop)
    if known is None or known[1:] != (servers, prefix):
        known = _redis_clients[loop] = ({}, servers, prefix)
    client = known[0].get(shard)
    if client is None:
        client = known[0][shard] = redis_client(servers[shard])
    return client, prefix


def _maybe_redis() -> tuple[aioredis.Redis, str] | None:
    """`_redis()` on the first server, or None without a Redis layer (what is not per symbol lives there)."""
    return None if redis_target() is None else _redis()


def command_redis(key: str | None = None) -> tuple[aioredis.Redis, str] | None:
    """A command client for this event loop, and the layer's key prefix; None without a Redis layer.

    `key`: a symbol or market key, for the server holding its data (`shard_of`); None: the first server, where what is
    not per symbol lives (connection counts, the alerts version, the tape)."""
    if redis_target() is None:
        return None
    return _redis(0 if key is None else shard_of(key))


def _tape() -> tuple[aioredis.Redis, str] | None:
    """A Redis client on the channel layer's server, and the tape's key; None without a Redis layer."""
    redis = _maybe_redis()
    return None if redis is None else (redis[0], f"{redis[1]}:tape")


async def tape_wanted() -> bool:
    tape = _tape()
    return tape is not None and bool(await tape[0].exists(f"{tape[1]}:listening"))


async def tape_append(lines: str, *, epoch: str, n: int) -> None:
    tape = _tape()
    if tape is not None:
        await tape[0].xadd(tape[1], {"epoch": epoch, "n": n, "lines": lines}, maxlen=TAPE_LENGTH, approximate=True)


def _recording_tape() -> tuple[aioredis.Redis, str]:
    tape = _tape()
    if tape is None:
        raise RuntimeError("recording needs the Redis channel layer, and CHANNEL_LAYERS names another backend")
    return tape


async def tape_listen() -> None:
    """Ask workers to tape for the next TAPE_LISTEN_SECONDS; a recorder calls this every second."""
    client, key = _recording_tape()
    await client.set(f"{key}:listening", 1, ex=TAPE_LISTEN_SECONDS)


async def tape_end() -> str:
    """The id of the newest chunk on the tape: reading after it gives only what comes next."""
    client, key = _recording_tape()
    newest: Any = await client.xrevrange(key, count=1)
    return str(newest[0][0]) if newest else "0-0"


async def tape_read(after: str, *, block_ms: int | None = 1000) -> list[TapeChunk]:
    """Chunks appended after entry `after`, waiting up to `block_ms` for the first (None: no waiting)."""
    client, key = _recording_tape()
    reply: Any = await client.xread({key: after}, block=block_ms, count=500)
    if not reply:
        return []
    return [TapeChunk(entry_id, fields["epoch"], int(fields["n"]), fields["lines"]) for entry_id, fields in reply[0][1]]
