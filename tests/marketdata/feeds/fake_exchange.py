"""A fake exchange on 127.0.0.1 for the live connector tests: one port, WebSocket and REST.

`FakeExchange` serves WebSocket connections on any path and answers plain HTTP GETs of
`/api/v3/depth` (Binance's REST depth snapshot) from websockets' `process_request` hook, so a
connector's `ws_url` and `rest_url` can both point at it. The test drives it:

* `send(frame)` pushes a frame to the newest connection; `sent` keeps everything pushed.
* `received` keeps every JSON message clients sent (subscribe requests), each with the number
  of the connection it came on; `responder` may answer them (Binance subscription replies).
* `drop()` aborts the newest connection's TCP transport: no close frame, as when a network drops.
* Silence is simply not sending; the server still answers pings, so only a watchdog notices.
* `closes` records how each connection ended as the server saw it (the client's close code).
* `BinanceBook` models one Binance symbol's order book and its diff stream: `diff()` makes the
  next depth update (and applies it), `skip()` makes one that is never sent (a gap), and the
  REST endpoint answers with its snapshot unless `snapshot_answers` holds a chosen one first.

Every wait is on a condition with a timeout (`wait_for`): nothing sleeps and hopes.
"""

from __future__ import annotations

import asyncio
import http
import json
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

Frame = dict[str, Any]
Responder = Callable[["FakeConnection", Frame], Awaitable[None]]


@dataclass
class FakeConnection:
    number: int  # 1 for the first connection the server accepted
    ws: ServerConnection
    seq: int = 0  # Coinbase-style sequence_num of the next message sent on this connection
    close_code: int | None = None  # the close code the client sent; None while open or when no close frame came
    closed: bool = False

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))


@dataclass
class BookLevelChange:
    bids: list[list[str]]
    asks: list[list[str]]


@dataclass
class BinanceBook:
    """One symbol's book on the fake Binance: levels, update id, and its diff depth stream."""

    symbol: str  # BTCUSDT
    update_id: int = 1000
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    event_ms: int = 1_714_557_600_000

    def __post_init__(self) -> None:
        if not self.bids and not self.asks:
            for i in range(5):
                self.bids[Decimal("60000.00") - i] = Decimal("1.0") + i
                self.asks[Decimal("60001.00") + i] = Decimal("0.5") + i

    def snapshot(self, limit: int = 1000) -> Frame:
        """The REST answer: `{"lastUpdateId": N, "bids": [...], "asks": [...]}`, best first."""
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        return {
            "lastUpdateId": self.update_id,
            "bids": [[str(p), str(q)] for p, q in bids],
            "asks": [[str(p), str(q)] for p, q in asks],
        }

    def diff(self, *, versions: int = 3) -> Frame:
        """The next `<sym>@depth@100ms` frame covering `versions` book versions, applied to the book."""
        first = self.update_id + 1
        self.update_id += versions
        self.event_ms += 100
        change = self._change()
        return {
            "stream": f"{self.symbol.lower()}@depth@100ms",
            "data": {
                "e": "depthUpdate",
                "E": self.event_ms,
                "s": self.symbol,
                "U": first,
                "u": self.update_id,
                "b": change.bids,
                "a": change.asks,
            },
        }

    def skip(self) -> None:
        """Advance the book as a diff would, without the diff ever reaching anyone: a gap."""
        self.diff()

    def _change(self) -> BookLevelChange:
        # Keep the book uncrossed: bids move below 60001, asks at or above it.
        bid = Decimal("60000.00") - self.rng.randrange(0, 8)
        ask = Decimal("60001.00") + self.rng.randrange(0, 8)
        bid_qty = Decimal(self.rng.choice(["0", "0.25", "1.5", "2"]))
        ask_qty = Decimal(self.rng.choice(["0", "0.75", "3", "1"]))
        for side, price, qty in ((self.bids, bid, bid_qty), (self.asks, ask, ask_qty)):
            if qty:
                side[price] = qty
            else:
                side.pop(price, None)
        return BookLevelChange(bids=[[str(bid), str(bid_qty)]], asks=[[str(ask), str(ask_qty)]])

    def top(self, n: int) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """Best `n` levels each side, as `marketdata.worker.book.OrderBook.top` returns them."""
        return sorted(self.bids.items(), reverse=True)[:n], sorted(self.asks.items())[:n]

    def agg_trade(self, trade_id: int, price: str, qty: str, *, buyer_maker: bool) -> Frame:
        self.event_ms += 1
        return {
            "stream": f"{self.symbol.lower()}@aggTrade",
            "data": {
                "e": "aggTrade",
                "E": self.event_ms,
                "s": self.symbol,
                "a": trade_id,
                "p": price,
                "q": qty,
                "f": trade_id * 10,
                "l": trade_id * 10 + 1,
                "T": self.event_ms - 2,
                "m": buyer_maker,
                "M": True,
            },
        }

    def book_ticker(self, bid: str, ask: str) -> Frame:
        return {
            "stream": f"{self.symbol.lower()}@bookTicker",
            "data": {"u": self.update_id, "s": self.symbol, "b": bid, "B": "1.0", "a": ask, "A": "0.5"},
        }


async def binance_responder(connection: FakeConnection, message: Frame) -> None:
    """Binance's answer to SUBSCRIBE / UNSUBSCRIBE: `{"result": null, "id": <the request's id>}`."""
    if message.get("method") in ("SUBSCRIBE", "UNSUBSCRIBE"):
        await connection.send({"result": None, "id": message["id"]})


class FakeExchange:
    def __init__(self, *, responder: Responder | None = None) -> None:
        self.responder = responder
        self.connections: list[FakeConnection] = []
        self.received: list[tuple[int, Frame]] = []  # (connection number, message)
        self.sent: list[tuple[int, Frame | str]] = []
        self.rest_requests: list[dict[str, str]] = []  # query parameters of each depth GET, in order
        self.books: dict[str, BinanceBook] = {}
        self.snapshot_answers: dict[str, deque[Frame]] = {}  # chosen REST answers, served before the book's own
        self.log: list[tuple[str, Any]] = []  # ("ws", n) / ("send", frame) / ("rest", symbol) / ("close", n) in order
        self._changed = asyncio.Condition()
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> FakeExchange:
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process_request)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what the test does ------------------------------------------------------------------

    @property
    def current(self) -> FakeConnection:
        return self.connections[-1]

    async def send(self, frame: Frame | str, *, connection: FakeConnection | None = None) -> None:
        target = connection or self.current
        self.sent.append((target.number, frame))
        self.log.append(("send", frame))
        await target.send(frame)
        await self._notify()

    async def drop(self) -> None:
        """Abort the newest connection's transport: the client gets no close frame."""
        transport = self.current.ws.transport
        transport.abort()
        await self.wait_for(lambda: self.current.closed, what="the dropped connection to be gone")

    async def send_sequenced(self, channel: str, events: list[Frame], *, timestamp: str = "2024-05-01T10:00:00.123456789Z") -> Frame:
        """A Coinbase Advanced Trade message on the newest connection, numbered by its `sequence_num`."""
        connection = self.current
        message = {
            "channel": channel,
            "client_id": "",
            "timestamp": timestamp,
            "sequence_num": connection.seq,
            "events": events,
        }
        connection.seq += 1
        await self.send(message, connection=connection)
        return message

    def skip_sequence(self) -> None:
        """Lose the next Coinbase message on the newest connection: its sequence_num is never sent."""
        self.current.seq += 1

    def book(self, symbol: str, **options: Any) -> BinanceBook:
        book = self.books[symbol] = BinanceBook(symbol, **options)
        return book

    def subscriptions(self, connection: int | None = None) -> list[Frame]:
        return [m for n, m in self.received if connection is None or n == connection]

    async def wait_for(self, predicate: Callable[[], bool], *, within: float = 5.0, what: str = "the condition") -> None:
        """Wait until `predicate()` holds (checked after every change); fail the test after `within` seconds."""
        try:
            async with asyncio.timeout(within):
                async with self._changed:
                    await self._changed.wait_for(predicate)
        except TimeoutError:
            raise AssertionError(f"timed out after {within} s waiting for {what}") from None

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # -- server side -------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        connection = FakeConnection(number=len(self.connections) + 1, ws=ws)
        self.connections.append(connection)
        self.log.append(("ws", connection.number))
        await self._notify()
        try:
            async for text in ws:
                message = json.loads(text)
                self.received.append((connection.number, message))
                await self._notify()
                if self.responder is not None:
                    await self.responder(connection, message)
        except ConnectionClosed:
            pass
        finally:
            rcvd = ws.protocol.close_rcvd
            connection.close_code = None if rcvd is None else rcvd.code
            connection.closed = True
            self.log.append(("close", connection.number))
            await self._notify()

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != "/api/v3/depth":
            return None  # go on with the WebSocket handshake
        query = {key: values[-1] for key, values in parse_qs(url.query).items()}
        self.rest_requests.append(query)
        self.log.append(("rest", query.get("symbol")))
        # Notify from the loop: this hook is synchronous. The set keeps the task from being collected.
        task = asyncio.get_running_loop().create_task(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        symbol = query.get("symbol", "")
        answers = self.snapshot_answers.get(symbol)
        if answers:
            body = answers.popleft()
        elif symbol in self.books:
            body = self.books[symbol].snapshot(int(query.get("limit", "1000")))
        else:
            return _json_response(http.HTTPStatus.BAD_REQUEST, {"code": -1121, "msg": "Invalid symbol."})
        return _json_response(http.HTTPStatus.OK, body)


def _json_response(status: http.HTTPStatus, body: Frame) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Connection", "close")])
    return Response(status.value, status.phrase, headers, data)


@dataclass
class Collector:
    """Iterates a feed in a task, keeping its events, so a test can wait on what arrived."""

    feed: Any
    events: list[Any] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def start(self) -> Collector:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        try:
            async for event in self.feed:
                self.events.append(event)
                async with self._changed:
                    self._changed.notify_all()
        finally:
            # Wake waiters when the feed fails, so they report its error instead of timing out.
            async with self._changed:
                self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[list[Any]], bool], *, within: float = 5.0, what: str = "events") -> None:
        try:
            async with asyncio.timeout(within):
                async with self._changed:
                    await self._changed.wait_for(lambda: predicate(self.events) or self._failed())
        except TimeoutError:
            raise AssertionError(f"timed out after {within} s waiting for {what}; got {len(self.events)} events") from None
        assert self.task is not None
        if self.task.done():
            self.task.result()  # raise what the feed raised

    def _failed(self) -> bool:
        return self.task is not None and self.task.done()

    async def stop(self) -> None:
        """Cancel the iteration, as the worker does on shutdown."""
        assert self.task is not None
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
