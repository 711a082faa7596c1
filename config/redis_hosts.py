"""Where Redis is: one server, a master that Sentinel names, or several of either (shards).

The settings build the channel layer's host list from the environment (`configured_servers`, then
`RedisServer.layer_host` for each), in channels-redis's own format: `{"address": URL, ...}` for a plain server, and
`{"sentinels": [(host, port), ...], "master_name": NAME, "sentinel_kwargs": {...}, ...}` for a
master found through Sentinel (channels-redis 4.3's README, "hosts"). Everything else that
talks to Redis — the fan-out hub, the history, the connection counts, the leases, /readyz —
reads the servers back from that list (`servers`), so tests that swap CHANNEL_LAYERS swap them all.

Several hosts are shards. The channel layer spreads its own keys over them itself; the
market data of a symbol (its live channel, history, snapshots, lease and fence) lives on
`shard_index(symbol, n)`: CRC-32 of the symbol's UTF-8 bytes, modulo the number of servers.
It depends on nothing but the symbol and the count, so every process agrees, and it stays
the same from run to run; changing the count moves symbols (docs/operations.md).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# How long a sentinel may take to answer: a dead or hung one must not hold up finding the master for long.
SENTINEL_TIMEOUT_SECONDS = 2.0
# A command pool asks the sentinels which master they name at most this often (`_BlockingSentinelPool`).
MASTER_CHECK_SECONDS = 1.0


def parse_sentinels(name: str, value: str) -> tuple[tuple[str, int], ...]:
    """REDIS_SENTINELS ("host:port,host:port") as (host, port) pairs; a bad entry stops start-up with its text."""
    from django.core.exceptions import ImproperlyConfigured  # here: the fan-out imports this module without Django

    out = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        host, colon, port = item.rpartition(":")
        host = host.strip("[]")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ImproperlyConfigured(f"{name}: {item!r} is not host:port (e.g. 10.0.0.5:26379)")
        out.append((host, int(port)))
    if not out:
        raise ImproperlyConfigured(f"{name} names no sentinel (host:port,host:port)")
    return tuple(out)


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A pool on the master Sentinel names that waits for a free connection past `max_connections` (redis-py's
    SentinelConnectionPool raises MaxConnectionsError instead, as its plain pool does).

    It also asks the sentinels which master they name at most every MASTER_CHECK_SECONDS while in use, and moves
    connections still open to an old one. redis-py asks only when it opens a connection: after a planned failover
    (SENTINEL FAILOVER, the old primary still up) pooled connections went on writing to the old primary until the
    sentinels turned it into a replica, about 10 s later in tests/marketdata/delivery/test_sentinel.py, and every
    one of those writes was lost."""

    _checked = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        now = time.monotonic()
        if now - self._checked >= MASTER_CHECK_SECONDS:
            self._checked = now
            try:
                await self.get_master_address()  # disconnects the idle connections when the master changed
            except (RedisConnectionError, RedisTimeoutError, OSError):
                pass  # no sentinel answers: the connections held still reach the master they reached
        connection = await super().get_connection()
        try:
            master = self.master_address
            if master is not None and connection.is_connected and (connection.host, connection.port) != tuple(master):
                await connection.disconnect()  # in use when the master changed: reconnects to the new one
                await connection.connect()
        except BaseException:
            await self.release(connection)
            raise
        return connection


@dataclass(frozen=True, slots=True)
class RedisServer:
    """One Redis server (a shard): `url`, or the master `master` that `sentinels` name."""

    url: str = ""
    master: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    password: str | None = None  # the master's, with sentinels (a plain server's is in its URL)
    sentinel_password: str | None = None
    db: int = 0

    def __str__(self) -> str:
        if self.master:
            return f"Sentinel master {self.master!r} ({', '.join(f'{h}:{p}' for h, p in self.sentinels)})"
        return self.url

    @classmethod
    def from_host(cls, host: Any) -> RedisServer:
        """A channels-redis host entry (URL string, (host, port), or dict) as a server."""
        if isinstance(host, str):
            return cls(url=host)
        if isinstance(host, list | tuple):
            return cls(url=f"redis://{host[0]}:{host[1]}/0")
        if "address" in host:
            return cls(url=str(host["address"]))
        if "master_name" in host:
            sentinel_kwargs = host.get("sentinel_kwargs") or {}
            return cls(
                master=str(host["master_name"]),
                sentinels=tuple((str(h), int(p)) for h, p in host["sentinels"]),
                password=host.get("password"),
                sentinel_password=sentinel_kwargs.get("password"),
                db=int(host.get("db", 0)),
            )
        return cls(url=f"redis://{host.get('host', 'localhost')}:{host.get('port', 6379)}/{host.get('db', 0)}")

    def layer_host(self, *, socket_timeout: float, max_connections: int) -> dict[str, Any]:
        """This server as a channels-redis host entry."""
        common = {"socket_timeout": socket_timeout, "max_connections": max_connections}
        if not self.master:
            return {"address": self.url, **common}
        return {
            "sentinels": [list(pair) for pair in self.sentinels],
            "master_name": self.master,
            "sentinel_kwargs": self._sentinel_kwargs(),
            "password": self.password,
            "db": self.db,
            "socket_connect_timeout": socket_timeout,
            **common,
        }

    def _sentinel_kwargs(self) -> dict[str, Any]:
        return {
            "password": self.sentinel_password,
            "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
            "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
            "retry": _no_retry(),  # a sentinel that is down: ask the next one at once
        }

    def sentinel(self) -> Sentinel:
        """A client of this server's sentinels (close it with `aclose`)."""
        return Sentinel(list(self.sentinels), sentinel_kwargs=self._sentinel_kwargs(), password=self.password, db=self.db)

    def client(self, *, max_connections: int, timeout: float, decode_responses: bool = True) -> aioredis.Redis:
        """A command client with a bounded pool: past `max_connections` busy connections, a command waits up to
        `timeout` for one (then ConnectionError). Through Sentinel, each new connection goes to the master it names now."""
        options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "decode_responses": decode_responses}
        if not self.master:
            pool = BlockingConnectionPool.from_url(self.url, max_connections=max_connections, timeout=timeout, **options)
            return aioredis.Redis.from_pool(pool)
        return self.sentinel().master_for(
            self.master, connection_pool_class=_BlockingSentinelPool, max_connections=max_connections, timeout=timeout, **options
        )

    async def connect_subscriber(self, *, socket_timeout: float) -> aioredis.Redis:
        """A client on this server as of now, for one pub/sub session (RESP2); through Sentinel, on the master it names
        now (raises redis ConnectionError, MasterNotFoundError, when no sentinel names one)."""
        # No retries inside: redis-py's client retries a refused connect 10 times with backoff (up to ~5 s); the hub
        # has its own backoff, and a try must ask the sentinels again (a dead master's port refused for seconds after
        # they had named the new one).
        options: dict[str, Any] = {
            "protocol": 2,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_timeout,
            "retry": _no_retry(),
        }
        if not self.master:
            return aioredis.Redis.from_url(self.url, **options)
        sentinel = self.sentinel()
        try:
            host, port = await sentinel.discover_master(self.master)
        finally:
            await sentinel.aclose()
        return aioredis.Redis(host=host, port=port, password=self.password, db=self.db, **options)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def servers(hosts: Sequence[Any]) -> tuple[RedisServer, ...]:
    """The channel layer's hosts as servers, in order (the shards)."""
    return tuple(RedisServer.from_host(host) for host in hosts)


def shard_index(symbol: str, shards: int) -> int:
    """The shard of a symbol's market data: CRC-32 of the symbol, modulo the number of shards (module doc)."""
    if shards <= 1:
        return 0
    return zlib.crc32(symbol.encode()) % shards


def configured_servers(env: Mapping[str, str], *, url: str) -> tuple[RedisServer, ...]:
    """The servers the settings name: REDIS_SENTINELS and REDIS_SENTINEL_MASTER (one master name, or several
    separated by commas: shards), or else REDIS_URL (one URL, or several: shards). `env`: the settings' values."""
    from django.core.exceptions import ImproperlyConfigured  # here: the fan-out imports this module without Django

    sentinels_text = env.get("REDIS_SENTINELS", "")
    masters = [name.strip() for name in env.get("REDIS_SENTINEL_MASTER", "").split(",") if name.strip()]
    if not sentinels_text.strip():
        if masters:
            raise ImproperlyConfigured("REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not: name the sentinels (host:port,...)")
        urls = [part.strip() for part in url.split(",") if part.strip()]
        if not urls:
            raise ImproperlyConfigured("REDIS_URL is empty: give redis://host:port/db (or several, separated by commas)")
        for one in urls:
            if not one.startswith(("redis://", "rediss://", "unix://")):
                raise ImproperlyConfigured(f"REDIS_URL: {one!r} is not a redis://, rediss:// or unix:// URL")
        if len(set(urls)) != len(urls):
            raise ImproperlyConfigured("REDIS_URL names the same server twice")
        return tuple(RedisServer(url=one) for one in urls)
    if not masters:
        raise ImproperlyConfigured("REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: name the master set the sentinels monitor")
    if len(set(masters)) != len(masters):
        raise ImproperlyConfigured("REDIS_SENTINEL_MASTER names the same master twice")
    sentinels = parse_sentinels("REDIS_SENTINELS", sentinels_text)
    password = env.get("REDIS_PASSWORD") or None
    sentinel_password = env.get("REDIS_SENTINEL_PASSWORD") or None
    return tuple(RedisServer(master=name, sentinels=sentinels, password=password, sentinel_password=sentinel_password) for name in masters)
