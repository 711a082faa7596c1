"""One producer per symbol: a lease per symbol in Redis, with a fencing token.

A worker publishes a symbol only while it holds that symbol's lease:

    {prefix}:lease:{key}   "<token> <holder>", with a TTL (MARKETDATA_LEASE_TTL_SECONDS)
    {prefix}:fence:{key}   the newest token ever handed out for the key (INCR; never deleted)

Acquiring takes a new token from the fence counter, so tokens only grow. A second
producer is refused and told who holds the lease, or takes it over explicitly
(`takeover`): a new, higher token. The holder renews every third of the TTL and so
notices within that time that its lease is gone (taken over, or expired and taken);
it then stops publishing the symbol. A holder that is killed stops renewing, and the
lease is free once its TTL has run out. A refusal also tells when the refused lease
ends unless its holder renews it (`ends`), so a standby can try again at that moment
rather than up to a renewal period later: it takes over a dead or hung holder within
the TTL of the holder's last renewal.

Renewing alone cannot stop a holder that hangs past its TTL and then wakes up:
fencing does. Every write carries the writer's token. The history append checks
each symbol's fence counter under WATCH and writes nothing if a newer token was
handed out (`history.Fenced`), and each server's hub drops payloads whose token is lower
than one it has already seen for the symbol (`marketdata.delivery.fanout`).

`key` is the symbol's stream key (`groups.market_key`): the symbol, or the
symbol within a sandbox session, whose lease is apart from the live one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import asyncio as aioredis

from marketdata import groups
from marketdata.delivery import streams

log = logging.getLogger(__name__)

# KEYS: lease, fence. ARGV: holder, ttl ms, takeover (1/0), fence expiry s (0: never), floor.
# → {token, ""} when taken, {0, "<token> <holder>", pttl ms} when refused (pttl: when the holder's lease ends unless renewed).
# `floor`: the highest token this worker ever held for the key. A Redis that restarted empty has lost its fence
# counters; starting the counter from the floor keeps the new token above every one the servers have seen.
_ACQUIRE = """
local current = redis.call('GET', KEYS[1])
if current and ARGV[3] ~= '1' then return {0, current, redis.call('PTTL', KEYS[1])} end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[5]) then redis.call('SET', KEYS[2], ARGV[5]) end
local token = redis.call('INCR', KEYS[2])
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {token, current or ''}
"""

# KEYS: lease, fence. ARGV: token, holder, ttl ms, fence expiry s (0: never).
# → "" while held, else what holds it now ("-" when nobody).
# A lease that expired while nobody took it is taken back, since no newer token exists.
_RENEW = """
local mine = ARGV[1] .. ' ' .. ARGV[2]
local current = redis.call('GET', KEYS[1])
if current == mine or (not current and redis.call('GET', KEYS[2]) == ARGV[1]) then
  redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
  if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
  return ''
end
return current or '-'
"""

# KEYS: lease. ARGV: token, holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0
"""


_SCRIPTS = {"acquire": _ACQUIRE, "renew": _RENEW, "release": _RELEASE}


def holder_name(command: str) -> str:
    """Who holds a lease, as the refusal tells it: the command, its process and machine, and since when."""
    return f"{command} (pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)"


def _holder(value: str) -> str:
    """The holder part of a lease value ("<token> <holder>")."""
    return value.partition(" ")[2] or value


class LeaseRefused(Exception):
    """Another producer holds the lease of a symbol; `holders` maps each refused key to who holds it."""

    def __init__(self, holders: Mapping[str, str]) -> None:
        self.holders = dict(holders)
        named = "; ".join(f"{key} is published by {holder}" for key, holder in self.holders.items())
        super().__init__(f"{named}. Stop that producer, or take over with --takeover (it then stops publishing the symbol)")


@dataclass(frozen=True, slots=True)
class Lost:
    key: str
    holder: str  # who holds it now, or "" when nobody does (it expired and was taken and released)


class Leases:
    """The leases one worker holds, on the channel layer's Redis.

    `redis`: (client, key prefix); by default the channel layer's client of the running
    event loop (a client belongs to one loop, and the worker's loop starts after it is built).
    """

    def __init__(self, *, holder: str, ttl: float, redis: tuple[aioredis.Redis, str] | None = None, fence_expiry: int = 0) -> None:
        """`fence_expiry`: seconds the fence counters outlive the last renewal (a replay session's keys expire);
        0 keeps them for good, so tokens only ever grow."""
        if ttl <= 0:
            raise ValueError("a lease TTL must be positive")
        self.holder = holder
        self.ttl = ttl
        self.fence_expiry = fence_expiry
        self.tokens: dict[str, int] = {}  # key → the token this worker holds it with
        self.highest: dict[str, int] = {}  # key → the highest token this worker ever held it with (the next one's floor)
        # key → when (time.monotonic()) the lease another producer holds ends unless renewed, as of its last refusal
        self.ends: dict[str, float] = {}
        self._redis = redis
        self._scripts: dict[int, tuple[aioredis.Redis, dict[str, Any]]] = {}  # per client (one per server): its scripts

    def _script(self, name: str, key: str) -> Any:
        client = self._connection(key)[0]
        scripts = self._scripts.get(id(client))
        if scripts is None or scripts[0] is not client:
            scripts = self._scripts[id(client)] = (client, {script: client.register_script(source) for script, source in _SCRIPTS.items()})
        return scripts[1][name]

    def _connection(self, key: str | None = None) -> tuple[aioredis.Redis, str]:
        """The client for `key`'s lease: with several Redis servers, on the one holding its symbol's data
        (`streams.shard_of`), so the history's fenced writes see its fence counter."""
        redis = self._redis or streams.command_redis(key)
        if redis is None:
            raise RuntimeError("leases need the Redis channel layer")
        return redis

    @property
    def ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    def _keys(self, key: str) -> list[str]:
        prefix = self._connection()[1]
        return [groups.lease_key(prefix, key), groups.fence_key(prefix, key)]

    def fence(self, keys: Iterable[str]) -> dict[str, tuple[str, int]]:
        """For a fenced write (`history.Fence`): key → (its fence counter's Redis key, the token held)."""
        prefix = self._connection()[1]
        return {key: (groups.fence_key(prefix, key), self.tokens[key]) for key in keys if key in self.tokens}

    async def acquire(self, keys: Iterable[str], *, takeover: bool = False) -> dict[str, str]:
        """Take the leases of `keys` not held yet. Returns the keys refused, each with its holder (taken over ones too:
        `takeover` takes every lease whoever holds it, and the result names the previous holders)."""
        refused, previous = {}, {}
        for key in keys:
            if key in self.tokens:
                continue
            token, current, *pttl = await self._script("acquire", key)(
                keys=self._keys(key), args=[self.holder, self.ttl_ms, int(takeover), self.fence_expiry, self.highest.get(key, 0)]
            )
            if token:
                self.ends.pop(key, None)
                self.tokens[key] = self.highest[key] = int(token)
                if current:
                    previous[key] = _holder(current)
                    log.warning("took over %s from %s (token %s)", key, _holder(current), token)
            else:
                refused[key] = _holder(current)
                # PTTL -1 (no expiry) cannot happen to a lease; if it did, the holder's full TTL is the guess.
                left = int(pttl[0]) if pttl and int(pttl[0]) >= 0 else self.ttl_ms
                self.ends[key] = time.monotonic() + left / 1000
        return previous if takeover else refused

    def ending(self, keys: Iterable[str]) -> float | None:
        """Seconds until the first of these refused leases ends unless its holder renews it (0 when past; None when
        none of them was refused): when a standby should try again to take over a dead or hung holder."""
        ends = [self.ends[key] for key in keys if key in self.ends]
        return None if not ends else max(0.0, min(ends) - time.monotonic())

    async def renew(self) -> list[Lost]:
        """Extend every lease held; the ones that are gone (taken over, or expired and taken) are dropped and returned."""
        lost = []
        for key, token in list(self.tokens.items()):
            current = await self._script("renew", key)(keys=self._keys(key), args=[token, self.holder, self.ttl_ms, self.fence_expiry])
            # Unless forgotten meanwhile (a fenced write, while this awaited Redis, showed it gone: the writer reports it).
            if current and self.tokens.get(key) == token:
                del self.tokens[key]
                lost.append(Lost(key, "" if current == "-" else _holder(current)))
        return lost

    async def holder_of(self, key: str) -> str:
        """Who holds the lease of `key` now ("" when nobody does)."""
        client, _ = self._connection(key)
        value = await client.get(self._keys(key)[0])
        return "" if value is None else _holder(str(value))

    def forget(self, keys: Iterable[str]) -> None:
        """Stop holding `keys` without asking Redis (a fenced write showed they are gone)."""
        for key in keys:
            self.tokens.pop(key, None)

    async def release(self) -> None:
        """Give every lease back, so another producer need not wait for the TTL."""
        for key, token in list(self.tokens.items()):
            try:
                await self._script("release", key)(keys=self._keys(key)[:1], args=[token, self.holder])
            except Exception:
                log.exception("could not release the lease of %s; it expires in %.0f s", key, self.ttl)
        self.tokens.clear()
