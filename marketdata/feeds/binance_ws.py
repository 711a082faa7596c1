"""Binance spot WebSocket market streams, combined-stream form, as recorded captures or live frames.

One frame per line, in receive order, optionally after the recorder's local
receive time and a space: an epoch count in seconds (a fraction allowed), ms, µs or ns, told
apart by size (`jsonfields.epoch_us`: each unit's range covers 1973 to 5138, so they cannot be
confused), or ISO 8601 with a UTC offset. hftbacktest's collector writes
`<receive time in ns> <frame>`, so its Binance captures read as they are:

    {"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1714557600123,"s":"BTCUSDT","a":1,"p":"60000.10","q":"0.5","f":1,"l":2,"T":1714557600120,"m":true}}
    1714557600130 {"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT","b":"60000.00","B":"1.2","a":"60000.10","A":"0.4"}}
    2024-05-01T10:00:00.140Z {"lastUpdateId":400900210,"bids":[["60000.00","1.2"]],"asks":[["60000.10","0.4"]]}

Streams (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams):

- `<sym>@trade` (e,E,s,t,p,q,T,m) and `<sym>@aggTrade` (e,E,s,a,p,q,f,l,T,m) → Trade at the
  trade time T, trade_id t or a. `m` is "the buyer is the market maker": then the taker sold.
- `<sym>@bookTicker` (u,s,b,B,a,A) → Quote(update_id=u). The spot book ticker has no event time:
  on the exchange clock it is stamped with the newest exchange event time (E) of the file so far
  (the receive time stands in only before the first one), so it agrees with the book.
- `<sym>@depth` and `<sym>@depth@100ms` (e,E,s,U,u,b,a) → BookDelta(first_id=U, last_id=u) at E.
- `<sym>@depth5|10|20[@100ms]` (lastUpdateId, bids, asks: the whole top N each time) → BookSnapshot.
- A bare REST depth snapshot line, `{"lastUpdateId":N,"bids":[...],"asks":[...]}`
  (https://developers.binance.com/docs/binance-spot-api-docs/rest-api/market-data-endpoints#order-book),
  → BookSnapshot(update_id=N), the base the diffs apply to ("How to manage a local order book
  correctly" on the streams page). It names no symbol: a recorder may add `"symbol"`; otherwise it
  belongs to the only symbol whose diff depth stream the file has shown so far.
- Subscription replies (`{"result":null,"id":1}`) carry nothing.

Times are epoch milliseconds unless the connection asked for `timeUnit=MICROSECOND`; both are
accepted, told apart by size (a millisecond count passes 10^14 only in the year 5138). Prices and
quantities are decimal strings. Symbols are the upper-cased stream symbol (BTCUSDT).

Clocks: exchange (default; times as above) or receive (`clock=receive`: every event at its line's
receive time; a line without one is a "no time" bad line). Lines with both a receive time and an
event time E feed `offsets` (receive − exchange).

`parse_frame` turns one decoded frame into events; the live connector calls it with frames from
the socket, `BinanceCapture` with lines of a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from marketdata.events import BookDelta, BookSnapshot, Level, MarketEvent, Quote, Trade, from_epoch_us
from marketdata.feeds.files import EXCHANGE, RECEIVE, BadLine, ClockOffsets, clock_choose
from marketdata.feeds.jsonfields import decimal as _decimal
from marketdata.feeds.jsonfields import decode, receive_time
from marketdata.feeds.jsonfields import field as _field
from marketdata.symbols import SymbolMap

SOURCE = "binance"

# Epoch counts at or above this are microseconds (1973 onwards); below, milliseconds (until 5138).
_MICROSECONDS_FROM = 10**14


@dataclass(slots=True)
class BinanceFrameState:
    """What `parse_frame` remembers between frames of one connection or file."""

    latest: datetime | None = None  # newest exchange event time (E) seen: the clock for frames without one
    depth_symbols: set[str] = field(default_factory=set)  # raw symbols whose diff depth stream has appeared
    clock: str = EXCHANGE  # or RECEIVE: every event at the frame's receive time
    # Live: a frame without an event time takes its receive time, which is now. (In a file the newest
    # exchange time is the better clock; live, it can be seconds old in a quiet market.)
    untimed_at_receive: bool = False
    offsets: ClockOffsets | None = None  # where to note receive − E of frames that have both


# -- fields ------------------------------------------------------------------------------------


def _integer(data: Mapping[str, Any], key: str, where: str) -> int:
    value = _field(data, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadLine("bad number", f"{key} {value!r} in {where} is not an integer")
    return value


def _levels(data: Mapping[str, Any], key: str, where: str) -> tuple[Level, ...]:
    rows = _field(data, key, where)
    try:
        if not isinstance(rows, list):
            raise TypeError
        levels = tuple((Decimal(price), Decimal(qty)) for price, qty in rows)
    except (TypeError, ValueError, InvalidOperation):
        raise BadLine("bad number", f"{key} in {where} must be [price, quantity] pairs of decimal strings") from None
    if not all(price.is_finite() and qty.is_finite() for price, qty in levels):
        raise BadLine("bad number", f"{key} in {where} holds a number that is not finite")
    return levels


def from_epoch(value: int) -> datetime:
    """An epoch count in milliseconds or microseconds (told apart by size) as UTC."""
    return from_epoch_us(value if value >= _MICROSECONDS_FROM else value * 1000)


def _event_time(data: Mapping[str, Any], key: str, where: str) -> datetime:
    value = _field(data, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadLine("bad time", f"{key} {value!r} in {where} is not an epoch time")
    return from_epoch(value)


def parse_receive_time(text: str) -> datetime:
    """The recorder's receive-time prefix: an epoch count in s, ms, µs or ns (told by size), or ISO 8601 with a UTC offset."""
    return receive_time(text, "receive time")


# -- frames ------------------------------------------------------------------------------------

_Handler = Callable[[str, str, Mapping[str, Any], SymbolMap, datetime | None, BinanceFrameState], list[MarketEvent]]


def _taker_side(data: Mapping[str, Any], where: str) -> str:
    maker = _field(data, "m", where)
    if not isinstance(maker, bool):
        raise BadLine("bad value", f"m {maker!r} in {where} is not true or false")
    # The buyer's order was resting on the book, so the aggressor sold.
    return "sell" if maker else "buy"


def _trades(id_key: str) -> _Handler:
    def _trade(
        raw: str, where: str, data: Mapping[str, Any], symbols: SymbolMap, received: datetime | None, state: BinanceFrameState
    ) -> list[MarketEvent]:
        # The common case first, checked whole before anything is noted: every field there with its type,
        # the numbers finite. Anything else goes through `_trade_checked`, which names what is wrong.
        try:
            event_ms, trade_ms, price_text, size_text, maker, number = (
                data["E"],
                data["T"],
                data["p"],
                data["q"],
                data["m"],
                data[id_key],
            )
        except KeyError:
            return _trade_checked(id_key, raw, where, data, symbols, received, state)
        if (
            type(event_ms) is int
            and type(trade_ms) is int
            and event_ms >= 0
            and trade_ms >= 0
            and type(price_text) is str
            and type(size_text) is str
            and type(maker) is bool
            and type(number) is int
        ):
            try:
                price, size = Decimal(price_text), Decimal(size_text)
            except InvalidOperation:
                return _trade_checked(id_key, raw, where, data, symbols, received, state)
            if price.is_finite() and size.is_finite():
                event_ts = from_epoch(event_ms)
                _note(event_ts, state, received)
                symbol = symbols.resolve(raw, source=SOURCE)
                if symbol is None:
                    return []
                ts = event_ts if trade_ms == event_ms else from_epoch(trade_ms)
                # The buyer's order was resting on the book, so the aggressor sold.
                return [Trade(symbol, ts, price, size, SOURCE, "sell" if maker else "buy", number)]
        return _trade_checked(id_key, raw, where, data, symbols, received, state)

    return _trade


def _trade_checked(
    id_key: str, raw: str, where: str, data: Mapping[str, Any], symbols: SymbolMap, received: datetime | None, state: BinanceFrameState
) -> list[MarketEvent]:
    """A trade frame read field by field: the first problem is the BadLine."""
    _note_event_time(data, where, state, received)
    symbol = symbols.resolve(raw, source=SOURCE)
    if symbol is None:
        return []
    ts = _event_time(data, "T", where)
    price, size = _decimal(data, "p", where), _decimal(data, "q", where)
    return [Trade(symbol, ts, price, size, SOURCE, _taker_side(data, where), _integer(data, id_key, where))]


def _book_ticker(
    raw: str, where: str, data: Mapping[str, Any], symbols: SymbolMap, received: datetime | None, state: BinanceFrameState
) -> list[MarketEvent]:
    symbol = symbols.resolve(raw, source=SOURCE)
    if symbol is None:
        return []
    ts = _clock(received, state, where)
    bid, ask = _decimal(data, "b", where), _decimal(data, "a", where)
    return [Quote(symbol, ts, bid, ask, SOURCE, _integer(data, "u", where))]


def _depth_diff(
    raw: str, where: str, data: Mapping[str, Any], symbols: SymbolMap, received: datetime | None, state: BinanceFrameState
) -> list[MarketEvent]:
    ts = _note_event_time(data, where, state, received)
    state.depth_symbols.add(raw)
    symbol = symbols.resolve(raw, source=SOURCE)
    if symbol is None:
        return []
    first, last = _integer(data, "U", where), _integer(data, "u", where)
    bids, asks = _levels(data, "b", where), _levels(data, "a", where)
    return [BookDelta(symbol, ts, bids, asks, SOURCE, first, last)]


def _partial_depth(
    raw: str, where: str, data: Mapping[str, Any], symbols: SymbolMap, received: datetime | None, state: BinanceFrameState
) -> list[MarketEvent]:
    symbol = symbols.resolve(raw, source=SOURCE)
    if symbol is None:
        return []
    return [_snapshot(symbol, _clock(received, state, where), data, where)]


def _snapshot(symbol: str, ts: datetime, data: Mapping[str, Any], where: str) -> BookSnapshot:
    update_id = _integer(data, "lastUpdateId", where)
    return BookSnapshot(symbol, ts, _levels(data, "bids", where), _levels(data, "asks", where), SOURCE, update_id)


def _note_event_time(data: Mapping[str, Any], where: str, state: BinanceFrameState, received: datetime | None) -> datetime:
    ts = _event_time(data, "E", where)
    _note(ts, state, received)
    return ts


def _note(ts: datetime, state: BinanceFrameState, received: datetime | None) -> None:
    """An exchange event time seen: the newest so far is the clock of frames without one; receive − E is measured."""
    if state.latest is None or ts > state.latest:
        state.latest = ts
    if received is not None and state.offsets is not None:
        state.offsets.note(received, ts)


def _clock(received: datetime | None, state: BinanceFrameState, where: str) -> datetime:
    """The time of a frame that carries none: the exchange's newest time so far (before the first one, the receive time)."""
    ts = (received or state.latest) if state.untimed_at_receive else (state.latest or received)
    if ts is None:
        raise BadLine("no time", f"{where} carries no event time, no earlier line an exchange time, and the line no receive time")
    return ts


_HANDLERS: dict[str, _Handler] = {
    "trade": _trades("t"),
    "aggTrade": _trades("a"),
    "bookTicker": _book_ticker,
    "depth": _depth_diff,
    "depth@100ms": _depth_diff,
    **{f"depth{levels}{speed}": _partial_depth for levels in (5, 10, 20) for speed in ("", "@100ms")},
}


def _rest_snapshot(frame: Mapping[str, Any], symbols: SymbolMap, received: datetime | None, state: BinanceFrameState) -> list[MarketEvent]:
    where = "depth snapshot"
    raw = frame.get("symbol")
    if raw is None:
        if len(state.depth_symbols) != 1:
            shown = ", ".join(sorted(state.depth_symbols)) or "none"
            raise BadLine(
                "snapshot without symbol",
                f'lastUpdateId {frame["lastUpdateId"]!r}: no "symbol" key and depth streams shown so far: {shown}; '
                'have the recorder add "symbol": "<SYMBOL>" to snapshot lines',
            )
        (raw,) = state.depth_symbols
    elif not isinstance(raw, str) or not raw:
        raise BadLine("bad value", f"symbol {raw!r} in {where} is not a symbol")
    symbol = symbols.resolve(raw.upper(), source=SOURCE)
    if symbol is None:
        return []
    return [_snapshot(symbol, _clock(received, state, where), frame, where)]


def parse_frame(frame: Mapping[str, Any], *, symbols: SymbolMap, received: datetime | None, state: BinanceFrameState) -> list[MarketEvent]:
    """The events of one decoded frame (JSON numbers may be int or Decimal, never float).

    `received`: when this process received the frame (UTC), or None when unknown; on the exchange
    clock it stamps the frames that carry no exchange time (bookTicker, partial depth, REST
    snapshots) until the first exchange time is known, on the receive clock every frame. `state`:
    one per connection or file, updated here. A live connector passes its own REST snapshot as a frame with
    a `"symbol"` key added. Raises `BadLine` for a frame it cannot use; its state stays consistent.
    """
    if state.clock == RECEIVE:
        if received is None:
            raise BadLine("no time", "the line has no receive time to replay on (clock=receive)")
        return [event if event.ts == received else replace(event, ts=received) for event in _events(frame, symbols, received, state)]
    return _events(frame, symbols, received, state)


def _events(frame: Mapping[str, Any], symbols: SymbolMap, received: datetime | None, state: BinanceFrameState) -> list[MarketEvent]:
    stream = frame.get("stream")
    if stream is None:
        if "lastUpdateId" in frame:
            return _rest_snapshot(frame, symbols, received, state)
        if "result" in frame and "id" in frame:
            return []  # the reply to a SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS request
        if "error" in frame:
            raise BadLine("error reply", f"{frame['error']!r}")
        raise BadLine("not a frame", f"a JSON object with none of stream, lastUpdateId, result: {str(frame)[:80]}")
    if not isinstance(stream, str):
        raise BadLine("bad value", f"stream {stream!r} is not a stream name")
    raw, _, kind = stream.partition("@")
    handler = _HANDLERS.get(kind)
    if handler is None:
        raise BadLine("unsupported stream", f"stream {stream!r}: only trade, aggTrade, bookTicker, depth and depth<N> are read")
    data = _field(frame, "data", stream)
    if not isinstance(data, dict):
        raise BadLine("bad value", f"data {data!r} of {stream} is not an object")
    return handler(raw.upper(), stream, data, symbols, received, state)


# -- lines -------------------------------------------------------------------------------------


def split_line(line: str) -> tuple[datetime | None, str]:
    """(receive time or None, the JSON text) of a capture line."""
    if line.startswith("{"):
        return None, line
    prefix, space, rest = line.partition(" ")
    if not space or not prefix[:1].isdigit() or not rest.lstrip().startswith("{"):
        # Not "<time> {frame}": garbage, not a bad time.
        raise BadLine("not a frame", f"line starts with {line[:40]!r}, neither a JSON object nor a receive time and a space")
    return parse_receive_time(prefix), rest.lstrip()


class BinanceCapture:
    """A file of combined-stream frames as received (`--format binance-ws`)."""

    name: ClassVar[str] = "binance-ws"
    # Frames of different streams interleave in receive order; exchange times differ by network jitter.
    reorder: ClassVar[timedelta] = timedelta(seconds=2)

    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE, RECEIVE)

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        self.path = path
        self.symbols = symbols
        self.clock = clock_choose(type(self), path, options)
        self.offsets = ClockOffsets()
        self.state = self._fresh_state()

    def _fresh_state(self) -> BinanceFrameState:
        return BinanceFrameState(clock=self.clock, offsets=self.offsets)

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        try:
            _, text = split_line(first_line.strip())
            frame = decode(text)
        except BadLine:
            return False
        return ("stream" in frame and "data" in frame) or "lastUpdateId" in frame or frame.keys() == {"result", "id"}

    def reset(self) -> None:
        """Forget what earlier lines taught, to read the file again from its start."""
        self.offsets.clear()
        self.state = self._fresh_state()

    def parse(self, line: str) -> list[MarketEvent]:
        received, text = split_line(line)
        return parse_frame(decode(text), symbols=self.symbols, received=received, state=self.state)
