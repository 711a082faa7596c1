"""Livefolio's own recording format: one normalized event per line as JSON (what `record_feed` writes).

Lines, keys always in this order (docs/replay-formats.md):

    {"type":"trade","ts":"2026-01-01T00:00:00.039409Z","symbol":"BTC-USD","price":"87648.21","size":"0.08185","side":"sell","source":"binance"}
    {"type":"quote","ts":"...","symbol":"EUR/USD","bid":"1.1041","ask":"1.1042","source":"histdata"}
    {"type":"book","ts":"...","symbol":"BTC-USD","bids":[["87648.2","1.5"]],"asks":[["87648.3","0.2"]],"update_id":123,"source":"binance"}
    {"type":"book_delta","ts":"...","symbol":"BTC-USD","bids":[["87648.2","0"]],"asks":[],"first_id":124,"last_id":125,"source":"binance"}

Optional keys, written only when set: a trade's `trade_id` and `backfill`, a quote's
`update_id`, a book delta's `source_id` (see `marketdata.events`).

Decimals are strings exactly as the source wrote them and times are UTC with
microseconds, so decoding a line and encoding it again gives the same line:
replaying a recording and recording the replay reproduces the file.
Symbols are already instrument symbols, so no alias applies.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, ClassVar

from marketdata.events import BookDelta, BookSnapshot, Level, MarketEvent, Quote, Trade
from marketdata.feeds.files import EXCHANGE, BadLine
from marketdata.symbols import SymbolMap

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _ts(ts: datetime) -> str:
    return ts.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _levels(levels: tuple[Level, ...]) -> list[list[str]]:
    return [[str(price), str(qty)] for price, qty in levels]


def encode(event: MarketEvent) -> str:
    """One line (without the newline) for `event`."""
    head: dict[str, Any]
    if isinstance(event, Trade):
        head = {"type": "trade", "ts": _ts(event.ts), "symbol": event.symbol, "price": str(event.price), "size": str(event.size)}
        head["side"] = event.side
        if event.trade_id is not None:
            head["trade_id"] = event.trade_id
        if event.backfill:
            head["backfill"] = True
    elif isinstance(event, Quote):
        head = {"type": "quote", "ts": _ts(event.ts), "symbol": event.symbol, "bid": str(event.bid), "ask": str(event.ask)}
        if event.update_id is not None:
            head["update_id"] = event.update_id
    elif isinstance(event, BookSnapshot):
        head = {"type": "book", "ts": _ts(event.ts), "symbol": event.symbol, "bids": _levels(event.bids), "asks": _levels(event.asks)}
        head["update_id"] = event.update_id
    else:
        head = {"type": "book_delta", "ts": _ts(event.ts), "symbol": event.symbol, "bids": _levels(event.bids), "asks": _levels(event.asks)}
        head["first_id"], head["last_id"] = event.first_id, event.last_id
        if event.source_id is not None:
            head["source_id"] = event.source_id
    head["source"] = event.source
    return _encoder.encode(head)


def _field(data: Mapping[str, Any], key: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise BadLine("missing field", f"no {key!r}") from None


def _decimal(data: Mapping[str, Any], key: str) -> Decimal:
    value = _field(data, key)
    try:
        if not isinstance(value, str):
            raise InvalidOperation
        number = Decimal(value)
    except InvalidOperation:
        raise BadLine("bad number", f"{key} {value!r} is not a decimal string") from None
    if not number.is_finite():
        raise BadLine("bad number", f"{key} {value!r} is not a finite number")
    return number


def _level_list(data: Mapping[str, Any], key: str) -> tuple[Level, ...]:
    levels = _field(data, key)
    try:
        return tuple((Decimal(price), Decimal(qty)) for price, qty in levels)
    except (TypeError, ValueError, InvalidOperation):
        raise BadLine("bad number", f"{key} must be a list of [price, quantity] decimal strings") from None


def _optional_int(data: Mapping[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise BadLine("bad number", f"{key} {value!r} is not an integer")
    return value


def _time(data: Mapping[str, Any]) -> datetime:
    value = _field(data, "ts")
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise BadLine("bad time", f"ts {value!r} is not an ISO 8601 time") from None
    if ts.utcoffset() != timedelta(0):
        raise BadLine("bad time", f"ts {value!r} is not UTC")
    return ts


class NativeJsonl:
    name: ClassVar[str] = "native"
    reorder: ClassVar[timedelta] = timedelta(0)
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE,)  # the times as recorded: those of the session that was recorded

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        self.symbols = symbols

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        return first_line.startswith('{"type":"') and '"source":' in first_line

    def parse(self, line: str) -> Iterable[MarketEvent]:
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise BadLine("bad json", str(exc)) from None
        if not isinstance(data, dict):
            raise BadLine("bad json", "a line must be a JSON object")
        kind = _field(data, "type")
        ts = _time(data)
        raw, source = str(_field(data, "symbol")), str(_field(data, "source"))
        symbol = self.symbols.resolve(raw, source="native")
        if symbol is None:
            return ()
        if kind == "trade":
            side, trade_id = data.get("side"), data.get("trade_id")
            if trade_id is not None and (isinstance(trade_id, bool) or not isinstance(trade_id, int | str)):
                raise BadLine("bad number", f"trade_id {trade_id!r} is not an integer or a string")
            price, size = _decimal(data, "price"), _decimal(data, "size")
            return (Trade(symbol, ts, price, size, source, None if side is None else str(side), trade_id, data.get("backfill") is True),)
        if kind == "quote":
            return (Quote(symbol, ts, _decimal(data, "bid"), _decimal(data, "ask"), source, _optional_int(data, "update_id")),)
        if kind == "book":
            bids, asks = _level_list(data, "bids"), _level_list(data, "asks")
            return (BookSnapshot(symbol, ts, bids, asks, source, _optional_int(data, "update_id")),)
        if kind == "book_delta":
            bids, asks = _level_list(data, "bids"), _level_list(data, "asks")
            ids = _optional_int(data, "first_id"), _optional_int(data, "last_id"), _optional_int(data, "source_id")
            return (BookDelta(symbol, ts, bids, asks, source, *ids),)
        raise BadLine("unsupported event", f"type {kind!r} is not trade, quote, book or book_delta")
