"""`/healthz`, `/readyz` and `/metrics`: answered in front of Django, for load balancers and Prometheus.

They are ASGI endpoints of their own (config/asgi.py puts `Probes` before Django's HTTP
handler), so no middleware runs for them: no ALLOWED_HOSTS check (a load balancer probes by
address), no HTTPS redirect, no session, no login redirect, no login throttling (axes), and
nothing of theirs touches the pages' Content-Security-Policy.

- `/healthz`: 200 while the process serves; it checks nothing else (a process whose Redis is
  down is still alive, and restarting it would not help).
- `/readyz`: 200 when Redis (every server, through Sentinel the master it names now) answers a PING, the database a trivial query (each within
  READY_TIMEOUT_SECONDS), and this process's fan-out hub holds its Redis connection while it
  has subscribers; otherwise 503. The JSON body names each check and how it went.
- `/metrics`: the Prometheus text (config/metrics.py). With METRICS_TOKEN set it needs
  `Authorization: Bearer <token>`; without, it answers only a request straight from this
  machine (a loopback peer and no forwarding header: a request through a proxy on the same
  machine carries X-Forwarded-For and is refused). Anything else is refused, with why.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection
from prometheus_client import CONTENT_TYPE_LATEST

from config import metrics
from config.redis_hosts import RedisServer
from marketdata.delivery import streams
from marketdata.delivery.fanout import ShardedHub

log = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 2.0
PATHS = ("/healthz", "/readyz", "/metrics")
_FORWARDING_HEADERS = {b"x-forwarded-for", b"forwarded", b"x-real-ip"}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _respond(send: Send, status: int, body: bytes, content_type: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, body: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    await _respond(send, status, orjson.dumps(body), "application/json", extra)


# --- readiness -------------------------------------------------------------------------------------


async def _check_redis() -> str:
    servers = streams.redis_servers()
    if servers is None:
        return "not used"
    outcomes = await asyncio.gather(*(_ping(server) for server in servers), return_exceptions=True)
    failed = [(server, outcome) for server, outcome in zip(servers, outcomes, strict=True) if isinstance(outcome, BaseException)]
    if failed:
        metrics.REDIS_ERRORS.labels("readyz").inc(len(failed))
        server, exc = failed[0]
        more = f" (and {len(failed) - 1} more of {len(servers)} servers)" if len(failed) > 1 else ""
        raise ConnectionError(f"{server}: {type(exc).__name__}: {exc}{more}")
    return "ok" if len(servers) == 1 else f"ok ({len(servers)} servers)"


async def _ping(server: RedisServer) -> None:
    """A PING on a connection of its own (through Sentinel: to the master the sentinels name now)."""
    client = await server.connect_subscriber(socket_timeout=READY_TIMEOUT_SECONDS)
    try:
        await client.ping()
    finally:
        await client.aclose()


def _query_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _check_database() -> str:
    await database_sync_to_async(_query_database)()
    return "ok"


async def _check_fanout() -> str:
    hub = streams.market_hub_if_any()
    if hub is None or not hub.symbols():
        return "ok (no subscriptions)"
    for one in hub.shards if isinstance(hub, ShardedHub) else [hub]:
        if one.symbols() and one.connection_id is None:
            where = f" {one.redis[0]}" if isinstance(hub, ShardedHub) and one.redis is not None else ""
            raise ConnectionError(f"the hub is reconnecting to Redis{where} ({len(one.symbols())} streams wanted)")
    return "ok"


async def _outcome(check: Callable[[], Awaitable[str]]) -> tuple[bool, str]:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            return True, await check()
    except TimeoutError:
        return False, f"failed: no answer within {READY_TIMEOUT_SECONDS:g} s"
    except Exception as exc:
        return False, f"failed: {type(exc).__name__}: {exc}"[:300]


async def readiness() -> tuple[bool, dict[str, str]]:
    """(ready, {check: how it went}) for Redis, the database and the fan-out hub, checked side by side."""
    names = ("redis", "database", "fanout")
    outcomes = await asyncio.gather(*(_outcome(check) for check in (_check_redis, _check_database, _check_fanout)))
    return all(ok for ok, _ in outcomes), {name: text for name, (_, text) in zip(names, outcomes, strict=True)}


# --- /metrics access -------------------------------------------------------------------------------


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def metrics_refusal(scope: Scope) -> tuple[int, str] | None:
    """None when this request may read /metrics; else (status, why)."""
    token = settings.METRICS_TOKEN
    if token:
        given = _header(scope, b"authorization") or ""
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        return 401, "send Authorization: Bearer <METRICS_TOKEN>"
    client = scope.get("client")
    try:
        loopback = client is not None and ipaddress.ip_address(str(client[0])).is_loopback
    except ValueError:
        loopback = False
    forwarded = any(key in _FORWARDING_HEADERS for key, _ in scope.get("headers", ()))
    if loopback and not forwarded:
        return None
    return 403, "without METRICS_TOKEN, /metrics answers only requests from this machine that did not come through a proxy"


# --- the ASGI endpoint -----------------------------------------------------------------------------


class Probes:
    """ASGI middleware in front of Django's HTTP handler: answers PATHS itself, passes everything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in PATHS:
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            await _json(send, 405, {"error": f"{path} answers GET only"}, ((b"allow", b"GET, HEAD"),))
            return
        if path == "/healthz":
            await _json(send, 200, {"status": "alive"})
        elif path == "/readyz":
            ready, checks = await readiness()
            if not ready:
                log.warning(
                    "/readyz: not ready: %s", ", ".join(f"{name} {text}" for name, text in checks.items() if text.startswith("failed"))
                )
            await _json(send, 200 if ready else 503, {"status": "ready" if ready else "unavailable", "checks": checks})
        else:
            refusal = metrics_refusal(scope)
            if refusal is not None:
                status, why = refusal
                extra = ((b"www-authenticate", b'Bearer realm="metrics"'),) if status == 401 else ()
                await _json(send, status, {"error": why}, extra)
                return
            metrics.sync()  # this process's counts, on its own loop; the files are read in a thread
            body = await asyncio.to_thread(metrics.exposition)
            await _respond(send, 200, body, CONTENT_TYPE_LATEST)
