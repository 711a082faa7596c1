"""Open `/ws/v1/market` connections per user, for MARKET_WS_CONNECTIONS_PER_USER.

Counted in Redis with a Redis channel layer (every web process sees the same
count), in this process's memory otherwise.
"""

from __future__ import annotations

import asyncio
import time
import weakref

import redis.asyncio as aioredis

from config.redis_hosts import RedisServer
from marketdata.delivery import streams


class _MemoryConnections:
    """Open connections per user in this process (the in-memory channel layer serves one process only)."""

    def __init__(self) -> None:
        self.users: dict[int, set[str]] = {}

    async def add(self, user_id: int, connection: str, ttl: float) -> int:
        ids = self.users.setdefault(user_id, set())
        ids.add(connection)
        return len(ids)

    async def renew(self, user_id: int, connection: str, ttl: float) -> None:
        return None

    async def remove(self, user_id: int, connection: str) -> None:
        ids = self.users.get(user_id)
        if ids is not None:
            ids.discard(connection)
            if not ids:
                del self.users[user_id]


class _RedisConnections:
    """Open connections per user across processes: one sorted set per user, connection id → expiry time.

    A connection renews its entry with every heartbeat; an entry left behind by a
    process that died expires on its own, so a crash never locks a user out for
    longer than the entry's time to live. The key itself expires as well.
    """

    def __init__(self, address: RedisServer, prefix: str) -> None:
        self.address = address
        self.prefix = prefix
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = weakref.WeakKeyDictionary()

    def _client(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = streams.redis_client(self.address)
        return client

    def _key(self, user_id: int) -> str:
        return f"{self.prefix}:ws:connections:{int(user_id)}"

    async def add(self, user_id: int, connection: str, ttl: float) -> int:
        key, now = self._key(user_id), time.time()
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {connection: now + ttl})
            pipe.zcard(key)
            pipe.expire(key, int(ttl) + 1)
            results = await pipe.execute()
        return int(results[2])

    async def renew(self, user_id: int, connection: str, ttl: float) -> None:
        key = self._key(user_id)
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.zadd(key, {connection: time.time() + ttl})
            pipe.expire(key, int(ttl) + 1)
            await pipe.execute()

    async def remove(self, user_id: int, connection: str) -> None:
        await self._client().zrem(self._key(user_id), connection)


_memory_connections = _MemoryConnections()
_redis_connections: dict[tuple[RedisServer, str], _RedisConnections] = {}


def connections() -> _MemoryConnections | _RedisConnections:
    """Where open connections are counted: Redis with a Redis channel layer, this process's memory otherwise."""
    target = streams.redis_target()
    if target is None:
        return _memory_connections
    if target not in _redis_connections:
        _redis_connections[target] = _RedisConnections(*target)
    return _redis_connections[target]
