"""Sockets during a Redis or database outage: closed with 1013 ("try again later"), never a crash (1011) or an HTTP 500.

A consumer's channel-layer receive (Redis), its hub subscribe (Redis) or its connect-time
reads (the database) fail while their server is down. Without this the exception leaves the
consumer, and daphne answers the handshake with HTTP 500 or closes an open socket with 1011.
`ClosesOnOutage` catches those failures around the whole consumer: the consumer cleans up
(`disconnect`), and the socket is closed with 1013 — accepted first when the failure came
during the handshake, since daphne cannot answer a WebSocket handshake with a 503 (it does not
implement the ASGI "websocket.http.response" extension; a refused handshake is always 403).
Clients reconnect with backoff (docs/websocket-api.md, "Close codes").

The consumer's channel-layer receive is wrapped so that cancelling it returns at once
(`_prompt_receive`). Seen under daphne after a Redis restart: the channels-redis receive of
the connection holding the layer's receive lock went on after it was cancelled, until
cancelled again (daphne's kill, ~15 s later); Channels waits for that task before the
consumer can finish, so a handshake that failed on the outage was answered by nobody, the
client's handshake timed out, and the instance lived on. Now the consumer goes at once, and
the receive left behind is cancelled again every RECANCEL_SECONDS until it ends.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from config import metrics
from config.closecodes import CLOSE_TRY_AGAIN_LATER
from marketdata.worker.outage import DATABASE_DOWN, REDIS_DOWN

log = logging.getLogger(__name__)

OUTAGE = (*REDIS_DOWN, *DATABASE_DOWN)
LOG_EVERY_SECONDS = 10.0
RECANCEL_SECONDS = 1.0


class _Closes:
    """Sockets this process closed with 1013, for a log line at most every LOG_EVERY_SECONDS (not one per socket)."""

    count = 0
    logged_at = float("-inf")
    unlogged = 0


def _note(path: str, exc: BaseException) -> None:
    metrics.ws_closed(metrics.endpoint_of_path(path), "outage")
    (metrics.DATABASE_ERRORS if isinstance(exc, DATABASE_DOWN) else metrics.REDIS_ERRORS).labels("web").inc()
    _Closes.count += 1
    _Closes.unlogged += 1
    now = time.monotonic()
    if now - _Closes.logged_at >= LOG_EVERY_SECONDS:
        log.warning(
            "closing %s with %d (try again later): %s: %s (%d socket(s) closed so since the last line, %d in all)",
            path,
            CLOSE_TRY_AGAIN_LATER,
            type(exc).__name__,
            exc,
            _Closes.unlogged,
            _Closes.count,
        )
        _Closes.logged_at, _Closes.unlogged = now, 0


class _CleanUps:
    """Clean-up steps that failed on an outage, for a log line at most every LOG_EVERY_SECONDS (not one per socket)."""

    logged_at = float("-inf")
    unlogged = 0


def clean_up_failed(what: str, exc: BaseException) -> None:
    """A step of a closing socket's clean-up that needs Redis or the database (uncounting it, leaving its groups) failed
    on an outage: counted, and one warning at most every LOG_EVERY_SECONDS. What it left behind expires on its own."""
    (metrics.DATABASE_ERRORS if isinstance(exc, DATABASE_DOWN) else metrics.REDIS_ERRORS).labels("web").inc()
    _CleanUps.unlogged += 1
    now = time.monotonic()
    if now - _CleanUps.logged_at >= LOG_EVERY_SECONDS:
        log.warning(
            "%s: %s: %s (%d clean-up(s) failed so since the last line; their entries expire)",
            what,
            type(exc).__name__,
            exc,
            _CleanUps.unlogged,
        )
        _CleanUps.logged_at, _CleanUps.unlogged = now, 0


def closed_on_outage() -> int:
    """Sockets this process closed with 1013 so far."""
    return _Closes.count


class _Tracking:
    """The server's `send`, noting whether the handshake was accepted and the socket closed.

    Its `real_send` lets `outbox.server_send` find the server's own `send` beneath it (frames
    skip this wrapper, and daphne's write buffer stays visible for slow-consumer checks).
    """

    def __init__(self, send: Any) -> None:
        self.real_send = send
        self.accepted = False
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "websocket.accept":
            self.accepted = True
        elif kind == "websocket.close":
            self.closed = True
        await self.real_send(message)


_left_behind: set[asyncio.Task[Any]] = set()


async def _prompt_receive(receive: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """`receive()`, but cancelling this returns at once, whatever the receive does with its own cancellation."""
    task = asyncio.ensure_future(receive())
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.cancel()
        if not task.done():
            reaper = asyncio.ensure_future(_until_cancelled(task))
            _left_behind.add(reaper)
            reaper.add_done_callback(_left_behind.discard)
        raise


async def _until_cancelled(task: asyncio.Task[Any]) -> None:
    started = time.monotonic()
    while not task.done():
        await asyncio.wait([task], timeout=RECANCEL_SECONDS)
        if not task.done():
            task.cancel()
    if not task.cancelled() and task.exception() is not None:
        log.debug("a channel-layer receive left behind ended with %r", task.exception())
    if time.monotonic() - started > RECANCEL_SECONDS:
        log.warning("a channel-layer receive ignored its cancellation for %.1f s", time.monotonic() - started)


def receives_left_behind() -> int:
    """Channel-layer receives of finished consumers that have not ended yet."""
    return len(_left_behind)


class ClosesOnOutage:
    """Mix into an `AsyncWebsocketConsumer` (first): an outage of Redis or the database closes the socket with 1013."""

    _channel_receive: Callable[[], Awaitable[dict[str, Any]]]

    @property
    def channel_receive(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        return self._channel_receive

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        # Channels sets it in `__call__`, and waits for it when the consumer ends: it must end when cancelled.
        self._channel_receive = functools.partial(_prompt_receive, receive)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        tracking = _Tracking(send)
        try:
            await super().__call__(scope, receive, tracking.send)  # type: ignore[misc]
        except OUTAGE as exc:
            _note(scope.get("path", "?"), exc)
            try:
                await self.disconnect(CLOSE_TRY_AGAIN_LATER)  # type: ignore[attr-defined]
            except Exception:
                log.debug("clean-up after an outage failed too", exc_info=True)
            if tracking.closed:
                return
            if not tracking.accepted:
                # daphne can only refuse a handshake with 403: accepted, then closed at once, says "try again later".
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": "service unavailable, try again later"})
