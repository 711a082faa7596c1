"""Keeping a live exchange WebSocket open: reconnect with backoff, and a staleness watchdog.

Shared by the live connectors (`binance_live`, `coinbase_live`). Each of them supplies a
*session*: given a freshly opened `Link`, it subscribes and turns the link's messages into
normalized events. `reconnecting` runs sessions one after another for as long as it is
iterated, and owns everything between them:

* Exchanges close connections as a matter of course (Binance after 24 hours,
  https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#general-wss-information;
  Coinbase when a connection carries no subscription or no heartbeats,
  https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-channels),
  so any close, clean or not, is followed by a new connection.
* Between attempts it waits an exponential backoff with "full jitter":
  uniform(0, min(max, initial · 2^attempt)). Random delays keep many clients that were dropped
  together from reconnecting in lockstep; the attempt count goes back to 0 after a connection
  that delivered market data, so a healthy feed that is closed once reconnects at once-ish.
* A connection can stay open and still be dead (a half-open TCP link, an exchange that stopped
  publishing): when no message arrives for `stale_after` seconds the link is called stale and
  replaced. WebSocket pings and pongs do not count, since the library answers them by itself.

Log lines (logger `marketdata.feeds.reconnect`), every one prefixed with the feed's name:

    binance: connecting to wss://... (attempt 1)
    binance: connection closed: code 1006, reason '' (no close frame: connection lost)
    binance: cannot connect to wss://...: [Errno 111] Connection refused
    binance: stale: no message for 30.0 s; reconnecting
    binance: dropping the connection: SUBSCRIBE (id 1) rejected: {...}
    binance: reconnecting in 0.37 s (attempt 2)

The connectors add their own: connected and subscribed, sequence gap, resync.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import CloseCode

from marketdata.events import MarketEvent

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]

# Seconds allowed for the TCP + TLS + WebSocket handshake, and for the closing handshake: a dead
# server must not hold a reconnect, or a shutdown, for websockets' default 10 s.
OPEN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0


class ConnectionTrouble(Exception):
    """Raised inside a session to drop the connection and reconnect after the backoff."""


class Stale(ConnectionTrouble):
    """No message for `stale_after` seconds."""


class Backoff:
    """Delays between reconnection attempts: exponential with full jitter.

    `rng` is injectable so tests can seed it; the delays are drawn from it only.
    """

    def __init__(self, *, initial: float = 0.5, maximum: float = 30.0, rng: random.Random | None = None) -> None:
        if initial <= 0:
            raise ValueError("backoff initial delay must be positive")
        if maximum < initial:
            raise ValueError("backoff maximum must not be below the initial delay")
        self.initial = initial
        self.maximum = maximum
        self.rng = rng if rng is not None else random.Random()
        self.attempt = 0  # failed attempts since the last connection that delivered data

    def ceiling(self) -> float:
        """The upper bound of the next delay: initial · 2^attempt, capped at the maximum."""
        # min() before the power would overflow: past 2^64 the cap has long been reached anyway.
        return min(self.maximum, self.initial * 2 ** min(self.attempt, 64))

    def next_delay(self) -> float:
        delay = self.rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Link:
    """One open connection: JSON out, text messages in, watched for staleness."""

    def __init__(self, ws: ClientConnection, *, name: str, url: str, stale_after: float) -> None:
        self.ws = ws
        self.name = name
        self.url = url
        self.stale_after = stale_after

    async def send(self, message: Mapping[str, Any]) -> None:
        await self.ws.send(json.dumps(message, separators=(",", ":")))

    async def messages(self) -> AsyncIterator[str]:
        """Every text message until the connection closes (ConnectionClosed) or goes quiet (Stale)."""
        while True:
            try:
                # Only the wait for the next message is timed: time the consumer spends between
                # messages (a REST snapshot, the worker's own work) is not the exchange's silence.
                # Cancelling recv() loses no message (websockets documents it as cancellation-safe).
                async with asyncio.timeout(self.stale_after):
                    message = await self.ws.recv()
            except TimeoutError:
                raise Stale(f"no message for {self.stale_after:.1f} s") from None
            yield message if isinstance(message, str) else message.decode("utf-8", "replace")


Session = Callable[[Link], AsyncGenerator[MarketEvent, None]]


@asynccontextmanager
async def _open(url: str, *, max_size: int | None) -> AsyncIterator[ClientConnection]:
    """A connection that is closed on the way out, with the close code saying why.

    websockets' own `async with` closes with 1011 (internal error) whenever an exception leaves
    it; a shutdown or a deliberate drop is no error, so those close with 1000 and a reason.
    """
    ws = await connect(url, open_timeout=OPEN_TIMEOUT, close_timeout=CLOSE_TIMEOUT, max_size=max_size)
    try:
        yield ws
    except (asyncio.CancelledError, GeneratorExit):
        await ws.close(CloseCode.NORMAL_CLOSURE, "client shutting down")
        raise
    except ConnectionTrouble as exc:
        # A close reason is at most 123 bytes.
        await ws.close(CloseCode.NORMAL_CLOSURE, str(exc).encode()[:120].decode("utf-8", "ignore"))
        raise
    except BaseException:
        await ws.close(CloseCode.INTERNAL_ERROR)
        raise
    else:
        await ws.close()


def _describe_close(exc: ConnectionClosed) -> str:
    if exc.rcvd is None:
        return "code 1006, reason '' (no close frame: connection lost)"
    return f"code {exc.rcvd.code}, reason {exc.rcvd.reason!r}"


async def reconnecting(
    *,
    name: str,
    url: str,
    session: Session,
    backoff: Backoff,
    stale_after: float,
    sleep: Sleep = asyncio.sleep,
    max_size: int | None = 2**20,
) -> AsyncIterator[MarketEvent]:
    """The events of `session` run on one connection after another, forever.

    Cancelling the task that iterates this (or closing the generator) closes the open connection
    with a normal close (code 1000) before the cancellation goes on; so does dropping a connection
    on purpose (stale, refused subscription).
    """
    if stale_after <= 0:
        raise ValueError("stale_after must be positive")
    while True:
        delivered = False
        log.info("%s: connecting to %s (attempt %d)", name, url, backoff.attempt + 1)
        try:
            async with _open(url, max_size=max_size) as ws:
                link = Link(ws, name=name, url=url, stale_after=stale_after)
                async with aclosing(session(link)) as events:
                    async for event in events:
                        if not delivered:
                            delivered = True
                            # Only a connection that carried market data proves the far end healthy.
                            backoff.reset()
                        yield event
            log.warning("%s: connection ended by the session; reconnecting", name)
        except ConnectionClosed as exc:
            log.warning("%s: connection closed: %s", name, _describe_close(exc))
        except Stale as exc:
            log.warning("%s: stale: %s; reconnecting", name, exc)
        except ConnectionTrouble as exc:
            log.warning("%s: dropping the connection: %s", name, exc)
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            # Refused, unreachable, DNS, TLS, handshake timeout, HTTP error instead of an upgrade.
            log.warning("%s: cannot connect to %s: %s", name, url, exc or type(exc).__name__)
        delay = backoff.next_delay()
        log.info("%s: reconnecting in %.2f s (attempt %d)", name, delay, backoff.attempt + 1)
        await sleep(delay)
