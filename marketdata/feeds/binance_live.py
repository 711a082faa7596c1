"""Binance spot public market data, live: combined WebSocket streams plus REST depth snapshots.

Connects to `{ws_url}/stream` and subscribes with a live SUBSCRIBE request
(https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#live-subscribingunsubscribing-to-streams):

    {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@depth@100ms"], "id": 1}

and checks the reply (`{"result": null, "id": 1}`; an `error` reply drops the connection). It
subscribes again on every new connection, since subscriptions die with the connection. Frames are
parsed by `binance_ws.parse_frame`, the same parser the recorded captures go through.

Order books follow "How to manage a local order book correctly"
(https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams#how-to-manage-a-local-order-book-correctly).
The worker's `marketdata.worker.book.OrderBook` does the buffering and the update-id checks; this
connector's part is to deliver, per symbol, the diff stream and a REST snapshot
(`GET {rest_url}/api/v3/depth?symbol=BTCUSDT&limit=1000`,
https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#order-book)
at the right moments:

* after the first diff of the symbol on each connection (step 3 comes after step 2 starts
  buffering, so the snapshot is newer than the first diff the book holds);
* again if the snapshot is older than that first diff (`lastUpdateId` < its `U`: step 4, "go back
  to step 3"), up to `SNAPSHOT_TRIES` times;
* again after a gap: each diff's `U` must be the previous diff's `u` + 1; otherwise updates were
  lost and the book must restart from a new snapshot;
* so after every reconnect, since a new connection's first diff is a first diff again.

Each diff is yielded before the snapshot it prompts, so the book has it buffered when the snapshot
lands. Reading the socket pauses while a snapshot is fetched; frames wait in the socket's buffers
meanwhile (the doc's "buffer the events"), and the watchdog does not count that time.

Binance closes every connection after 24 hours and pings it periodically (websockets answers the
pings); any close leads to a reconnect (`reconnect.reconnecting`). Log lines, logger
`marketdata.feeds.binance_live`:

    binance: connected to ws://.../stream; subscribed to btcusdt@aggTrade, ... (id 1)
    binance: BTCUSDT depth gap: U=1010 after u=1006; fetching a new snapshot
    binance: BTCUSDT snapshot lastUpdateId=990 is older than the first diff U=1001; fetching again (try 2 of 5)
    binance: BTCUSDT snapshot lastUpdateId=1003 fetched (first diff on this connection)
    binance: BTCUSDT resync: snapshot lastUpdateId=1012 fetched (after a gap)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from marketdata.events import BookDelta, MarketEvent
from marketdata.feeds.binance_ws import BinanceFrameState, decode, parse_frame
from marketdata.feeds.files import BadLine
from marketdata.feeds.reconnect import Backoff, ConnectionTrouble, Link, Sleep, reconnecting
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

NAME = "binance"
# Snapshots fetched for one need before giving up on the connection (and reconnecting).
SNAPSHOT_TRIES = 5
# Pause before fetching a snapshot again that came out older than the stream: REST may lag a little.
SNAPSHOT_RETRY_PAUSE = 0.25
REST_TIMEOUT = 10.0
# Why a snapshot is fetched, as the log says it.
FIRST = "first diff on this connection"
GAP = "after a gap"
# "A single connection can listen to a maximum of 1024 streams."
MAX_STREAMS = 1024
# The depth limits the REST endpoint accepts (larger ones are capped at 5000).
MAX_DEPTH_LIMIT = 5000


class SubscribeRejected(ConnectionTrouble):
    """Binance answered the SUBSCRIBE request with an error."""


class SnapshotFailed(ConnectionTrouble):
    """No usable REST depth snapshot: HTTP error, bad body, or too old every time."""


@dataclass(frozen=True, slots=True)
class _Diff:
    raw: str  # BTCUSDT
    first: int  # U
    last: int  # u


class BinanceLive:
    name = NAME

    def __init__(
        self,
        *,
        symbols: Sequence[str],
        symbol_map: SymbolMap,
        ws_url: str = "wss://stream.binance.com:9443",
        rest_url: str = "https://api.binance.com",
        streams: Sequence[str] = ("aggTrade", "bookTicker", "depth@100ms"),
        depth_limit: int = 1000,
        stale_after: float = 30.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`symbols`: exchange symbols (BTCUSDT). `rng`, `sleep`, `now`: injectable for tests."""
        if not symbols:
            raise ValueError("binance: no symbols to subscribe to")
        if not streams:
            raise ValueError("binance: no streams to subscribe to")
        if not 1 <= depth_limit <= MAX_DEPTH_LIMIT:
            raise ValueError(f"binance: depth_limit must be 1 to {MAX_DEPTH_LIMIT}")
        if stale_after <= 0:
            raise ValueError("binance: stale_after must be positive")
        self.symbols = [s.upper() for s in symbols]
        self.symbol_map = symbol_map
        self.ws_url = ws_url.rstrip("/")
        self.rest_url = rest_url.rstrip("/")
        self.streams = tuple(streams)
        self.depth_limit = depth_limit
        self.stale_after = stale_after
        self.backoff = Backoff(initial=backoff_initial, maximum=backoff_max, rng=rng)
        self.sleep = sleep
        self.now = now
        # Stream names are lower case ("All symbols for streams are lowercase").
        self.params = [f"{symbol.lower()}@{stream}" for symbol in self.symbols for stream in self.streams]
        if len(self.params) > MAX_STREAMS:
            raise ValueError(f"binance: {len(self.params)} streams; one connection takes at most {MAX_STREAMS}")
        self._ids = itertools.count(1)  # request ids, unique for the feed's life

    @property
    def url(self) -> str:
        return f"{self.ws_url}/stream"

    async def __aiter__(self) -> AsyncIterator[MarketEvent]:
        # One HTTP client for the feed's life: snapshots after reconnects reuse its connection pool.
        async with httpx.AsyncClient(base_url=self.rest_url, timeout=REST_TIMEOUT) as client:

            async def session(link: Link) -> AsyncGenerator[MarketEvent, None]:
                async for event in self._session(link, client):
                    yield event

            async for event in reconnecting(
                name=NAME, url=self.url, session=session, backoff=self.backoff, stale_after=self.stale_after, sleep=self.sleep
            ):
                yield event

    # -- one connection ----------------------------------------------------------------------

    async def _session(self, link: Link, client: httpx.AsyncClient) -> AsyncGenerator[MarketEvent, None]:
        state = BinanceFrameState(untimed_at_receive=True)
        last_u: dict[str, int] = {}  # per symbol, `u` of its latest diff; fresh per connection: every symbol needs a new snapshot
        request_id = next(self._ids)
        await link.send({"method": "SUBSCRIBE", "params": self.params, "id": request_id})
        async for text in link.messages():
            received = self.now()
            try:
                frame = decode(text)
                if _is_reply(frame):
                    self._check_reply(frame, request_id)
                    continue
                events = parse_frame(frame, symbols=self.symbol_map, received=received, state=state)
            except BadLine as problem:
                log.warning("%s: frame skipped: %s", NAME, problem)
                continue
            for event in events:
                yield event
            diff = _diff_of(frame, events)
            why = None if diff is None else self._needs_snapshot(diff, last_u)
            if diff is not None and why is not None:
                async for event in self._snapshot(client, diff, state, why):
                    yield event

    def _check_reply(self, frame: Mapping[str, Any], request_id: int) -> None:
        if frame.get("id") != request_id:
            log.debug("%s: reply to another request passed over: %s", NAME, frame)
            return
        if "error" in frame:
            raise SubscribeRejected(f"SUBSCRIBE (id {request_id}) rejected: {frame['error']!r}")
        log.info("%s: connected to %s; subscribed to %s (id %d)", NAME, self.url, ", ".join(self.params), request_id)

    def _needs_snapshot(self, diff: _Diff, last_u: dict[str, int]) -> str | None:
        """Track the symbol's `u`; why a snapshot is needed (first diff of the connection, gap), or None."""
        previous = last_u.get(diff.raw)
        last_u[diff.raw] = diff.last
        if previous is None:
            return FIRST
        expected = previous + 1
        if diff.first != expected:
            log.warning("%s: %s depth gap: U=%d after u=%d; fetching a new snapshot", NAME, diff.raw, diff.first, expected - 1)
            return GAP
        return None

    # -- snapshots ---------------------------------------------------------------------------

    async def _snapshot(self, client: httpx.AsyncClient, diff: _Diff, state: BinanceFrameState, why: str) -> AsyncIterator[MarketEvent]:
        """Fetch the symbol's snapshot until one is not older than `diff` (the first one buffered)."""
        for attempt in range(1, SNAPSHOT_TRIES + 1):
            body = await self._fetch(client, diff.raw)
            last = body.get("lastUpdateId")
            if not isinstance(last, int) or isinstance(last, bool):
                raise SnapshotFailed(f"{diff.raw} snapshot has no integer lastUpdateId: {str(body)[:200]}")
            if last >= diff.first:
                if why == GAP:
                    log.info("%s: %s resync: snapshot lastUpdateId=%d fetched (after a gap)", NAME, diff.raw, last)
                else:
                    log.info("%s: %s snapshot lastUpdateId=%d fetched (%s)", NAME, diff.raw, last, why)
                try:
                    # The parser reads a REST snapshot as a frame naming its symbol.
                    events = parse_frame({**body, "symbol": diff.raw}, symbols=self.symbol_map, received=self.now(), state=state)
                except BadLine as problem:
                    raise SnapshotFailed(f"{diff.raw} snapshot unusable: {problem}") from None
                for event in events:
                    yield event
                return
            if attempt < SNAPSHOT_TRIES:
                log.info(
                    "%s: %s snapshot lastUpdateId=%d is older than the first diff U=%d; fetching again (try %d of %d)",
                    NAME,
                    diff.raw,
                    last,
                    diff.first,
                    attempt + 1,
                    SNAPSHOT_TRIES,
                )
                await self.sleep(SNAPSHOT_RETRY_PAUSE)
        raise SnapshotFailed(f"{diff.raw} snapshots stayed older than the diff stream after {SNAPSHOT_TRIES} tries")

    async def _fetch(self, client: httpx.AsyncClient, raw: str) -> dict[str, Any]:
        try:
            response = await client.get("/api/v3/depth", params={"symbol": raw, "limit": self.depth_limit})
            response.raise_for_status()
        except httpx.HTTPError as exc:
            # 429/418 are rate limits: the backoff before reconnecting is what they ask for.
            raise SnapshotFailed(f"{raw} snapshot request failed: {exc}") from None
        try:
            return decode(response.text)
        except BadLine as problem:
            raise SnapshotFailed(f"{raw} snapshot body: {problem}") from None


def _is_reply(frame: Mapping[str, Any]) -> bool:
    """A reply to a request: `{"result": ..., "id": N}` or `{"error": {...}, "id": N}`."""
    return "stream" not in frame and "id" in frame and ("result" in frame or "error" in frame)


def _diff_of(frame: Mapping[str, Any], events: Sequence[MarketEvent]) -> _Diff | None:
    """The symbol and update ids of a diff depth frame the symbol map let through; else None."""
    for event in events:
        if isinstance(event, BookDelta) and event.first_id is not None and event.last_id is not None:
            # The symbol as the parser read it: the stream name's, upper-cased.
            raw = str(frame["stream"]).partition("@")[0].upper()
            return _Diff(raw=raw, first=event.first_id, last=event.last_id)
    return None
