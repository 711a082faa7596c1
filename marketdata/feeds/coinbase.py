"""Coinbase Advanced Trade WebSocket market data (wss://advanced-trade-ws.coinbase.com), as recorded captures or live messages.

Every message (https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-channels):

    {"channel":"market_trades","client_id":"","timestamp":"2024-05-01T10:00:00.123456789Z","sequence_num":7,"events":[...]}

- `market_trades`: events[].trades[] (trade_id, product_id, price, size, side, time) → Trade at its
  `time`, with its trade_id (an int where it is digits). The first event after subscribing is a
  "snapshot" of recent trades, newest first: those are marked `backfill` (from before the session;
  kept out of prices and candles, and no "time goes backwards"); the rest are "update"s.
- `ticker`, `ticker_batch`: events[].tickers[] (product_id, price, best_bid, best_ask, ...) → Quote at
  the message timestamp. Coinbase's own AsyncAPI notes that production `ticker_batch` messages omit
  best bid/ask (https://docs.cdp.coinbase.com/api-reference/advanced-trade-api/advanced-trade-asyncapi.json);
  such tickers carry no quote and are passed over.
- `l2_data` (the `level2` subscription): events[] (type "snapshot" | "update", product_id, updates[]:
  side "bid" | "offer", event_time, price_level, new_quantity; 0 removes the level) → BookSnapshot
  for a snapshot, BookDelta for an update, both at the message timestamp. Coinbase does not number
  book versions, so update_id, first_id and last_id stay None.
- `heartbeats`, `subscriptions`, `candles`, `status`: nothing to take. Other channels are passed
  over too ("clients are expected to ignore messages they do not support",
  https://docs.cdp.coinbase.com/coinbase-app/advanced-trade-apis/websocket/websocket-overview),
  logged once per channel name.

`sequence_num` counts every message of one connection from 0; a jump means messages were lost, and
with them possibly book updates, which carry no version of their own to tell. `CoinbaseState`
tracks it (see `parse_message`). Timestamps are RFC 3339 with nanoseconds, kept to the microsecond
(truncated, as `datetime.fromisoformat` does). Product ids (BTC-USD) are the raw symbols.

A capture line is the message itself or a recorder's envelope `{"ts": <receive time>, "data":
<the message as a JSON string, or as an object>}` (receive time: an epoch count in any unit or
ISO 8601, see `jsonfields.receive_time`). Clocks: exchange (default; the times above) or receive
(`clock=receive`: every event at its envelope's `ts`). Enveloped lines feed `offsets`
(receive − the message timestamp).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from marketdata.events import BookDelta, BookSnapshot, Level, MarketEvent, Quote, Trade
from marketdata.feeds.files import EXCHANGE, LOGGED_PER_KIND, RECEIVE, BadLine, ClockOffsets, clock_choose
from marketdata.feeds.jsonfields import decimal as _decimal
from marketdata.feeds.jsonfields import decode, receive_time
from marketdata.feeds.jsonfields import field as _field
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

SOURCE = "coinbase"

# Channels that carry no prices: keep-alives, subscription confirmations, candles, product listings.
_IGNORED = frozenset({"heartbeats", "subscriptions", "candles", "status"})

# `side` of a market trade is the side of the maker order, as on the Coinbase Exchange feed ("the side
# field indicates the maker order side", https://docs.cdp.coinbase.com/exchange/websocket-feed/channels#match);
# the Advanced Trade pages show "BUY"/"SELL" without saying whose, and independent implementations
# (e.g. NautilusTrader's Coinbase adapter: "Coinbase reports the maker side on public market trades")
# treat it as the maker's. Trade.side is the taker's, so it is the opposite.
_TAKER_SIDE = {"BUY": "sell", "SELL": "buy"}


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """Messages lost on a connection: `sequence_num` jumped from `after` to `got`."""

    after: int
    got: int

    @property
    def missed(self) -> int:
        return self.got - self.after - 1

    def __str__(self) -> str:
        return f"sequence_num {self.got} after {self.after}"


@dataclass(slots=True)
class CoinbaseState:
    """What `parse_message` remembers between messages: one per connection, kept across reconnects."""

    last_sequence: int | None = None
    restarts: int = 0  # times sequence_num started again (a new connection within one capture)
    # trade_id of the newest trade per product, so the snapshot sent on resubscribing repeats none
    newest_trade: dict[str, int] = field(default_factory=dict)
    unknown_channels: set[str] = field(default_factory=set)
    _gaps: list[SequenceGap] = field(default_factory=list)

    def track(self, sequence: int) -> None:
        last, self.last_sequence = self.last_sequence, sequence
        if last is None:
            return
        if sequence <= last:
            # Numbering starts again only on a new connection, which sends fresh snapshots.
            self.restarts += 1
        elif sequence > last + 1:
            self._gaps.append(SequenceGap(last, sequence))

    def take_gaps(self) -> list[SequenceGap]:
        """The gaps found since the last call (oldest first), forgetting them."""
        gaps, self._gaps = self._gaps, []
        return gaps

    def new_connection(self) -> None:
        """Call on reconnecting: the new connection numbers its messages from 0 again."""
        self.last_sequence = None


# -- fields ------------------------------------------------------------------------------------


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = _field(data, key, where)
    if not isinstance(value, str) or not value:
        raise BadLine("bad value", f"{key} {value!r} in {where} is not a non-empty string")
    return value


def _objects(data: Mapping[str, Any], key: str, where: str) -> list[Mapping[str, Any]]:
    items = _field(data, key, where)
    if isinstance(items, list) and (isinstance(items[0], dict) if len(items) == 1 else all(isinstance(item, dict) for item in items)):
        return items
    raise BadLine("bad value", f"{key} in {where} is not a list of objects")


def parse_time(value: object, key: str, where: str) -> datetime:
    """An RFC 3339 time as UTC; digits past the microsecond are dropped."""
    if not isinstance(value, str):
        raise BadLine("bad time", f"{key} {value!r} in {where} is not an RFC 3339 time")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise BadLine("bad time", f"{key} {value!r} in {where} is not an RFC 3339 time") from None
    offset = ts.utcoffset()
    if offset is None:
        raise BadLine("bad time", f"{key} {value!r} in {where} has no UTC offset")
    return ts if not offset else ts.astimezone(UTC)


def _sequence(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadLine("bad number", f"sequence_num {value!r} is not an integer")
    return value


def _trade_number(value: object) -> int | None:
    """trade_id as a number where it is one (it is a decimal string on the wire)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


# -- channels ----------------------------------------------------------------------------------

_Handler = Callable[[Mapping[str, Any], str, SymbolMap, CoinbaseState], list[MarketEvent]]


def _market_trades(message: Mapping[str, Any], channel: str, symbols: SymbolMap, state: CoinbaseState) -> list[MarketEvent]:
    events: list[MarketEvent] = []
    newest: dict[str, int] = {}
    for event in _objects(message, "events", channel):
        snapshot = event.get("type") == "snapshot"
        batch: list[Trade] = []
        for item in _objects(event, "trades", f"{channel} event"):
            raw = _text(item, "product_id", "trade")
            trade_id = item.get("trade_id")
            number = _trade_number(trade_id)
            if number is not None:
                if snapshot and number <= state.newest_trade.get(raw, -1):
                    continue  # had it before the reconnect that sent this snapshot
                newest[raw] = max(number, newest.get(raw, number))
            symbol = symbols.resolve(raw, source=SOURCE)
            if symbol is not None:
                batch.append(_trade(symbol, item, trade_id, number, backfill=snapshot))
        if snapshot:
            batch.sort(key=lambda trade: trade.ts)  # sent newest first; consumers want time order
        events.extend(batch)
    # Only once the whole message parsed: a bad line must not hide its trades from the next snapshot.
    for raw, number in newest.items():
        state.newest_trade[raw] = max(number, state.newest_trade.get(raw, number))
    return events


def _trade(symbol: str, item: Mapping[str, Any], trade_id: object, number: int | None, *, backfill: bool) -> Trade:
    """`trade_id` as the item has it, `number` the same as a number where it is one (`_trade_number`)."""
    # The common case first, checked whole: time, price and size strings that read, a UTC offset, finite
    # numbers, an id that is a number (or absent). Anything else goes through `_trade_checked`, which names it.
    try:
        stamp, side, price_text, size_text = item["time"], item["side"], item["price"], item["size"]
    except KeyError:
        return _trade_checked(symbol, item, backfill=backfill)
    if type(stamp) is str and type(price_text) is str and type(size_text) is str and (number is not None or trade_id is None):
        try:
            ts = datetime.fromisoformat(stamp)
            price, size = Decimal(price_text), Decimal(size_text)
        except (ValueError, InvalidOperation):
            return _trade_checked(symbol, item, backfill=backfill)
        offset = ts.utcoffset()
        if offset is not None and price.is_finite() and size.is_finite():
            if offset:
                ts = ts.astimezone(UTC)
            return Trade(symbol, ts, price, size, SOURCE, _TAKER_SIDE.get(str(side).upper()), number, backfill)
    return _trade_checked(symbol, item, backfill=backfill)


def _trade_checked(symbol: str, item: Mapping[str, Any], *, backfill: bool) -> Trade:
    """A trade read field by field: the first problem is the BadLine."""
    trade_id = item.get("trade_id")
    where = f"trade {trade_id!r}"
    ts = parse_time(_field(item, "time", where), "time", where)
    side = _TAKER_SIDE.get(str(_field(item, "side", where)).upper())
    number = _trade_number(trade_id)
    if number is None and trade_id is not None and (not isinstance(trade_id, str) or not trade_id):
        raise BadLine("bad value", f"trade_id {trade_id!r} is not an id")
    price, size = _decimal(item, "price", where), _decimal(item, "size", where)
    return Trade(symbol, ts, price, size, SOURCE, side, trade_id if number is None else number, backfill)


def _tickers(message: Mapping[str, Any], channel: str, symbols: SymbolMap, state: CoinbaseState) -> list[MarketEvent]:
    ts = parse_time(_field(message, "timestamp", channel), "timestamp", channel)
    batch = channel == "ticker_batch"
    quotes: list[MarketEvent] = []
    for event in _objects(message, "events", channel):
        for item in _objects(event, "tickers", f"{channel} event"):
            raw = _text(item, "product_id", "ticker")
            if batch and ("best_bid" not in item or "best_ask" not in item):
                continue
            symbol = symbols.resolve(raw, source=SOURCE)
            if symbol is not None:
                where = f"{raw} ticker"
                quotes.append(Quote(symbol, ts, _decimal(item, "best_bid", where), _decimal(item, "best_ask", where), SOURCE))
    return quotes


def _l2_data(message: Mapping[str, Any], channel: str, symbols: SymbolMap, state: CoinbaseState) -> list[MarketEvent]:
    # The message time, not the levels' event_time: a snapshot's levels keep their own old times,
    # and stamping deltas later than the snapshot keeps re-sorting from putting one before it.
    ts = parse_time(_field(message, "timestamp", channel), "timestamp", channel)
    sequence = message.get("sequence_num")
    sequence = sequence if isinstance(sequence, int) and not isinstance(sequence, bool) else None
    books: list[MarketEvent] = []
    for event in _objects(message, "events", channel):
        kind = _field(event, "type", f"{channel} event")
        if kind not in ("snapshot", "update"):
            raise BadLine("bad value", f"type {kind!r} in {channel} event is not snapshot or update")
        raw = _text(event, "product_id", f"{channel} event")
        symbol = symbols.resolve(raw, source=SOURCE)
        if symbol is None:
            continue
        bids, asks = _book_sides(_objects(event, "updates", f"{raw} {kind}"), f"{raw} {kind}")
        if kind == "snapshot":
            books.append(BookSnapshot(symbol, ts, bids, asks, SOURCE))
        else:
            # The message's sequence_num, published as the book's update id (deltas carry no book version).
            books.append(BookDelta(symbol, ts, bids, asks, SOURCE, source_id=sequence))
    return books


def _book_sides(updates: Iterable[Mapping[str, Any]], where: str) -> tuple[tuple[Level, ...], tuple[Level, ...]]:
    bids: list[Level] = []
    asks: list[Level] = []
    for update in updates:
        side = _field(update, "side", where)
        level = (_decimal(update, "price_level", where), _decimal(update, "new_quantity", where))
        if side == "bid":
            bids.append(level)
        elif side == "offer":
            asks.append(level)
        else:
            raise BadLine("bad value", f"side {side!r} in {where} is not bid or offer")
    return tuple(bids), tuple(asks)


_HANDLERS: dict[str, _Handler] = {
    "market_trades": _market_trades,
    "ticker": _tickers,
    "ticker_batch": _tickers,
    "l2_data": _l2_data,
}


def parse_message(message: Mapping[str, Any], *, symbols: SymbolMap, state: CoinbaseState) -> list[MarketEvent]:
    """The events of one decoded message (JSON numbers may be int or Decimal, never float).

    Raises `BadLine` for a message it cannot use. `sequence_num` is tracked before anything else is
    read, so a gap is noticed even when the message itself is bad: after every message, parsed or
    not, the caller asks `state.take_gaps()`. A live connector resubscribes to `level2` when that
    list is not empty (its books missed updates that no later delta repairs; the new subscription
    begins with a snapshot) and calls `state.new_connection()` whenever it reconnects:

        try:
            events = parse_message(message, symbols=symbols, state=state)
        except BadLine as problem:
            events = []
            log.warning("coinbase: %s", problem)
        if state.take_gaps():
            await resubscribe("level2")
    """
    channel = message.get("channel")
    if channel is None:
        if message.get("type") == "error":
            raise BadLine("error message", repr(message.get("message")))
        raise BadLine("not a frame", f"a JSON object with no 'channel': {str(message)[:80]}")
    sequence = message.get("sequence_num")
    if sequence is not None:
        state.track(_sequence(sequence))
    handler = _HANDLERS.get(channel)
    if handler is None:
        if channel not in _IGNORED and channel not in state.unknown_channels:
            state.unknown_channels.add(channel)
            log.info("coinbase: passing over messages of channel %r (no market data this parser reads)", channel)
        return []
    return handler(message, channel, symbols, state)


# -- lines -------------------------------------------------------------------------------------


def unwrap(line: str) -> tuple[datetime | None, dict[str, Any]]:
    """(receive time or None, the message) of a capture line: the line itself, or the `data` of a recorder's envelope."""
    value = decode(line)
    if "channel" in value or "data" not in value:
        return None, value
    received = receive_time(value["ts"], "envelope ts") if "ts" in value else None
    return received, message_of(value["data"])


def message_of(data: object) -> dict[str, Any]:
    """An envelope's message: a JSON string of it, or the object itself."""
    if isinstance(data, str):
        return decode(data)
    if not isinstance(data, dict):
        raise BadLine("bad json", f"envelope data is {type(data).__name__}, not a message")
    return data


def parse_received(
    message: Mapping[str, Any], received: datetime | None, *, symbols: SymbolMap, state: CoinbaseState, clock: str, offsets: ClockOffsets
) -> list[MarketEvent]:
    """`parse_message` for a recorded message, on the chosen clock, noting receive − exchange where both are known."""
    if clock == RECEIVE and received is None:
        raise BadLine("no time", "the line has no receive time to replay on (clock=receive)")
    events = parse_message(message, symbols=symbols, state=state)
    if received is None:
        return events
    stamp = message.get("timestamp")
    if isinstance(stamp, str):
        offsets.note(received, parse_time(stamp, "timestamp", "message"))
    if clock == RECEIVE:
        return [event if event.ts == received else replace(event, ts=received) for event in events]
    return events


class CoinbaseCapture:
    """A file of Advanced Trade messages as received (`--format coinbase-ws`)."""

    name: ClassVar[str] = "coinbase-ws"
    # Trades carry their own times, quotes and books the send time: they interleave within jitter.
    reorder: ClassVar[timedelta] = timedelta(seconds=2)
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE, RECEIVE)

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        self.path = path
        self.symbols = symbols
        self.clock = clock_choose(type(self), path, options)
        self.offsets = ClockOffsets()
        self.state = CoinbaseState()
        self.gaps = 0  # sequence gaps found: messages the recorder never received
        self.missed = 0  # messages lost in them

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        try:
            _, message = unwrap(first_line.strip())
        except BadLine:
            return False
        return "channel" in message and "events" in message

    def reset(self) -> None:
        """Forget what earlier lines taught, to read the file again from its start."""
        self.offsets.clear()
        self.state = CoinbaseState()

    def parse(self, line: str) -> list[MarketEvent]:
        try:
            received, message = unwrap(line)
            return parse_received(message, received, symbols=self.symbols, state=self.state, clock=self.clock, offsets=self.offsets)
        finally:
            for gap in self.state.take_gaps():
                self._lost(gap)

    def _lost(self, gap: SequenceGap) -> None:
        # The events still come through; books are stale until the next l2_data snapshot.
        self.gaps += 1
        self.missed += gap.missed
        if self.gaps <= LOGGED_PER_KIND:
            suffix = f" (further gaps in {self.path} are counted, not logged)" if self.gaps == LOGGED_PER_KIND else ""
            log.warning(
                "%s: %s: %d message(s) lost; order books stale until the next l2_data snapshot%s", self.path, gap, gap.missed, suffix
            )
