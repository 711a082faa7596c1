"""Who may open a WebSocket on this server process: a cap on all of them, and on anonymous market-API ones.

- `ConnectionCap`, an ASGI middleware around both WebSocket endpoints: at most
  WS_MAX_CONNECTIONS open per process; one more is accepted and closed at once with
  1013, "try again later" (config/closecodes.py lets daphne send it).
- `anonymous`: the `/ws/v1/market` connections without a user, at most
  MARKET_WS_ANONYMOUS_PER_ADDRESS per client address (config/proxies.py says what the
  address is) and MARKET_WS_ANONYMOUS_MAX in all. The consumer takes a slot on connect
  and gives it back when it authenticates or goes.

Both count in this process's memory: each process protects itself, and none depends
on Redis to let a connection in. With N processes behind a proxy, one address may hold
N times the per-address limit. Every refusal is counted (`refusals`) and logged, at
most once per LOG_EVERY_SECONDS per reason with the count since the last line.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings

from config import metrics
from config.closecodes import CLOSE_TRY_AGAIN_LATER

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 10.0

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def private_close_code(code: int) -> int | None:
    """The 4xxx code standing for a 1xxx one a server will not send for an application (1009 → 4009)."""
    return 4000 + code - 1000 if 1000 < code < 2000 else None


async def close_with(send: Send, code: int) -> None:
    """Close with `code`, or with its private 4xxx code where the server refuses it (daphne)."""
    try:
        await send({"type": "websocket.close", "code": code})
    except Exception:
        private = private_close_code(code)
        if private is None:
            raise
        await send({"type": "websocket.close", "code": private})


class Refusals:
    """Connections refused, per reason: counted, and logged at most once per LOG_EVERY_SECONDS per reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._unlogged: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}

    def note(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        self._unlogged[reason] += 1
        now = time.monotonic()
        if now - self._logged_at.get(reason, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            log.warning("refused %d WebSocket connection(s): %s (%d since start)", self._unlogged[reason], detail, self.counts[reason])
            self._unlogged[reason] = 0
            self._logged_at[reason] = now


refusals = Refusals()


class ConnectionCap:
    """ASGI middleware: at most WS_MAX_CONNECTIONS WebSockets open in this process; one more is closed with 1013.

    The count is released when the application returns, whatever way: a consumer that the
    server kills (its application close timeout) is cancelled, and its slot comes back too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.open = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        limit = settings.WS_MAX_CONNECTIONS
        tally = metrics.endpoint_tally(metrics.endpoint_of_path(scope.get("path", "")))
        metrics.ensure_sync()
        if self.open >= limit:
            refusals.note("process", f"{self.open} open, WS_MAX_CONNECTIONS={limit}; closed with {CLOSE_TRY_AGAIN_LATER}")
            metrics.ws_closed(tally.endpoint, "capacity")
            await refuse(receive, send, CLOSE_TRY_AGAIN_LATER)
            return
        self.open += 1
        tally.connections += 1
        tally.opened += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.open -= 1
            tally.connections -= 1


async def refuse(receive: Receive, send: Send, code: int, frame: str | None = None) -> None:
    """Answer a handshake by accepting it and closing at once with `code` (after `frame`, when given), so the client
    sees the reason: a refused handshake is only an HTTP 403 (1006 in a browser)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    if frame is not None:
        await send({"type": "websocket.send", "text": frame})
    await close_with(send, code)


class AnonymousSlot:
    """One anonymous connection's place in the count; `release` gives it back (once)."""

    def __init__(self, owner: AnonymousConnections, address: str) -> None:
        self._owner = owner
        self.address = address
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._owner._release(self.address)


class AnonymousConnections:
    """Anonymous `/ws/v1/market` connections in this process, per client address and in all."""

    def __init__(self) -> None:
        self.by_address: Counter[str] = Counter()
        self.total = 0

    def admit(self, address: str | None, *, per_address: int, per_process: int) -> AnonymousSlot | str:
        """A slot, or why not: "address" (this address holds `per_address`) or "process" (`per_process` in all)."""
        key = address or "unknown"
        if self.by_address[key] >= per_address:
            return "address"
        if self.total >= per_process:
            return "process"
        self.by_address[key] += 1
        self.total += 1
        return AnonymousSlot(self, key)

    def _release(self, address: str) -> None:
        self.total -= 1
        self.by_address[address] -= 1
        if self.by_address[address] <= 0:
            del self.by_address[address]


anonymous = AnonymousConnections()
