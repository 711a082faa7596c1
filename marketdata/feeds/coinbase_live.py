"""Coinbase Advanced Trade public market data, live, over wss://advanced-trade-ws.coinbase.com.

On every connection it sends one subscribe message per channel, as the protocol requires ("you
must send a unique subscription message for each channel", and within 5 seconds of connecting,
https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-overview):

    {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "level2"}
    {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"}
    {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "ticker"}
    {"type": "subscribe", "channel": "heartbeats"}

Heartbeats are always added: "most channels close within 60-90 seconds if no updates are sent",
and the one-per-second heartbeat keeps a quiet product's subscriptions open; the heartbeats channel
takes no product ids
(https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-channels#heartbeats-channel).
Messages are parsed by `coinbase.parse_message`, the parser the recorded captures go through;
level-2 data comes back on channel "l2_data".

`sequence_num` numbers every message of a connection. A jump means lost messages, and with them
possibly book updates, which carry no version to tell: after a gap every product's level-2 updates
are dropped until its next snapshot, and the connector resubscribes (unsubscribe + subscribe
`level2`), which makes Coinbase send a fresh snapshot. A new connection numbers from 0 again and
gets every channel subscribed anew; its books wait for their snapshots the same way.

Reconnecting, backoff and the staleness watchdog are `reconnect.reconnecting`'s. Log lines, logger
`marketdata.feeds.coinbase_live`:

    coinbase: connected to wss://...; subscribed to level2, market_trades, ticker, heartbeats for BTC-USD
    coinbase: sequence gap: sequence_num 9 after 7 (1 message(s) lost); level-2 updates dropped until new snapshots
    coinbase: resync: resubscribing to level2 for BTC-USD
    coinbase: error message: 'failure to subscribe' (then the connection is dropped and reconnected)
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from marketdata.events import BookDelta, BookSnapshot, MarketEvent
from marketdata.feeds.coinbase import CoinbaseState, SequenceGap, decode, parse_message
from marketdata.feeds.files import BadLine
from marketdata.feeds.reconnect import Backoff, ConnectionTrouble, Link, Sleep, reconnecting
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

NAME = "coinbase"
LEVEL2 = "level2"
HEARTBEATS = "heartbeats"
# A level2 snapshot of a liquid product runs to megabytes: more than websockets' 1 MiB default.
MAX_MESSAGE_BYTES = 16 * 2**20


class ErrorMessage(ConnectionTrouble):
    """Coinbase sent `{"type": "error", ...}` (a subscription it refused, a malformed request)."""


class CoinbaseLive:
    name = NAME

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        symbol_map: SymbolMap,
        ws_url: str = "wss://advanced-trade-ws.coinbase.com",
        channels: Sequence[str] = (LEVEL2, "market_trades", "ticker"),
        stale_after: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """`symbols`: product ids (BTC-USD). `rng`, `sleep`: injectable for tests."""
        if not symbols:
            raise ValueError("coinbase: no product ids to subscribe to")
        if not channels:
            raise ValueError("coinbase: no channels to subscribe to")
        if stale_after <= 0:
            raise ValueError("coinbase: stale_after must be positive")
        self.symbols = [s.upper() for s in symbols]
        self.symbol_map = symbol_map
        self.ws_url = ws_url
        # heartbeats is added below whatever the options say; listed once.
        self.channels = tuple(dict.fromkeys(c for c in channels if c != HEARTBEATS))
        self.stale_after = stale_after
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max, rng=rng)
        self.sleep = sleep

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        # One state for the feed's life: it remembers the newest trade per product across
        # reconnects, so the trade snapshot a new subscription sends repeats none.
        state = CoinbaseState()

        async def session(link: Link) -> AsyncGenerator[MarketEvent, None]:
            async for event in self._session(link, state):
                yield event

        async for event in reconnecting(
            name=NAME,
            url=self.ws_url,
            session=session,
            backoff=self.backoff,
            stale_after=self.stale_after,
            sleep=self.sleep,
            max_size=MAX_MESSAGE_BYTES,
        ):
            yield event

    # -- requests ----------------------------------------------------------------------------

    def _request(self, kind: str, channel: str) -> dict[str, Any]:
        if channel == HEARTBEATS:
            return {"type": kind, "channel": channel}
        return {"type": kind, "product_ids": self.symbols, "channel": channel}

    async def _subscribe_all(self, link: Link) -> None:
        for channel in (*self.channels, HEARTBEATS):
            await link.send(self._request("subscribe", channel))
        log.info(
            "%s: connected to %s; subscribed to %s for %s", NAME, link.url, ", ".join((*self.channels, HEARTBEATS)), ", ".join(self.symbols)
        )

    async def _resync(self, link: Link) -> None:
        log.info("%s: resync: resubscribing to %s for %s", NAME, LEVEL2, ", ".join(self.symbols))
        await link.send(self._request("unsubscribe", LEVEL2))
        await link.send(self._request("subscribe", LEVEL2))

    # -- one connection ----------------------------------------------------------------------

    async def _session(self, link: Link, state: CoinbaseState) -> AsyncGenerator[MarketEvent, None]:
        state.new_connection()
        # Instrument symbols whose book has had a snapshot since the connection opened or the last
        # gap: only their level-2 updates pass. Updates for any other would apply to a stale book.
        fresh: set[str] = set()
        await self._subscribe_all(link)
        async for text in link.messages():
            events = self._parse(text, state)
            gaps = state.take_gaps()
            if gaps:
                # Checked before this message's own events pass: they come after the lost ones.
                self._log_gaps(gaps)
                fresh.clear()
                if LEVEL2 in self.channels:
                    await self._resync(link)
            for event in events:
                if isinstance(event, BookSnapshot):
                    fresh.add(event.symbol)
                elif isinstance(event, BookDelta) and event.symbol not in fresh:
                    continue
                yield event

    def _parse(self, text: str, state: CoinbaseState) -> list[MarketEvent]:
        try:
            message = decode(text)
        except BadLine as problem:
            log.warning("%s: message skipped: %s", NAME, problem)
            return []
        if message.get("type") == "error":
            # Coinbase reports refused requests this way; a new connection subscribes afresh.
            log.error("%s: error message: %r", NAME, message.get("message"))
            raise ErrorMessage(f"error message: {message.get('message')!r} {message.get('reason', '')!s}".strip())
        try:
            return parse_message(message, symbols=self.symbol_map, state=state)
        except BadLine as problem:
            log.warning("%s: message skipped: %s", NAME, problem)
            return []

    def _log_gaps(self, gaps: list[SequenceGap]) -> None:
        for gap in gaps:
            log.warning(
                "%s: sequence gap: %s (%d message(s) lost); level-2 updates dropped until new snapshots",
                NAME,
                gap,
                gap.missed,
            )
