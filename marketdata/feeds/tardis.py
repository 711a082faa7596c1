"""Tardis.dev downloadable CSV (https://docs.tardis.dev/downloadable-csv-files): `trades`,
`incremental_book_L2`, `quotes` and `book_snapshot_25` (`--format tardis`).

Every file has a header; the data type is told from it. Columns all types share:
exchange, symbol, timestamp (the exchange's time, µs since the epoch; Tardis puts the receive time
there when the exchange gives none), local_timestamp (when Tardis received it, µs). Then:

- trades: id, side (the taker's: buy, sell, or unknown), price, amount → Trade(trade_id=id, an int
  where it is digits; none when empty).
- incremental_book_L2: is_snapshot, side (bid | ask), price, amount (the new absolute amount, 0
  removes). A run of is_snapshot=true rows of one symbol is one whole book → BookSnapshot; rows
  with is_snapshot=false and the same time → one BookDelta. Rows are grouped as they come, so a
  group is released at the first row that does not belong to it (or at the end of the file).
- quotes: ask_amount, ask_price, bid_price, bid_amount → Quote. A row with a side empty (no
  level on it) carries no quote and is passed over, counted as "one-sided quote".
- book_snapshot_25: asks[0..24].price / .amount, bids[0..24]... (found by name) → BookSnapshot of
  the levels present (empty cells are absent levels).

Clocks: exchange (`timestamp`, default) or receive (`local_timestamp`, `clock=receive`); every row
feeds `offsets` (local_timestamp − timestamp). Symbols are Tardis's exchange symbols (BTCUSDT,
BTC-USD); the source name is the `exchange` column (binance, coinbase, ...) so aliases per source apply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import ClassVar

from marketdata.events import EPOCH, BookDelta, BookSnapshot, Level, MarketEvent, Quote, Trade
from marketdata.feeds.files import COMMON_OPTIONS, EXCHANGE, RECEIVE, BadLine, ClockOffsets, FeedError, PassOver, clock_choose
from marketdata.symbols import SymbolMap

_COMMON = ("exchange", "symbol", "timestamp", "local_timestamp")
KINDS: dict[str, tuple[str, ...]] = {
    "trades": ("id", "side", "price", "amount"),
    "incremental_book_L2": ("is_snapshot", "side", "price", "amount"),
    "quotes": ("ask_amount", "ask_price", "bid_price", "bid_amount"),
}
_SNAPSHOT_LEVEL = re.compile(r"(asks|bids)\[(\d+)\]\.(price|amount)$")
_TAKER = {"buy": "buy", "sell": "sell"}  # "unknown" → None


def kind_of(header: str) -> str | None:
    """The data type a header belongs to, or None."""
    columns = tuple(header.strip().split(","))
    if columns[:4] != _COMMON:
        return None
    for kind, rest in KINDS.items():
        if columns[4:] == rest:
            return kind
    if columns[4:] and all(_SNAPSHOT_LEVEL.match(column) for column in columns[4:]):
        return "book_snapshot"
    return None


def _number(text: str, column: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadLine("bad number", f"{column} {text!r} is not a number") from None
    if not value.is_finite() or value.is_signed():
        raise BadLine("bad number", f"{column} {text!r} is not a number of zero or more")
    return value


def _micros(text: str, column: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise BadLine("bad time", f"{column} {text!r} is not µs since the epoch")
    return int(text)


class TardisCsv:
    """`--format tardis`: one Tardis.dev CSV file, its data type read from the header."""

    name: ClassVar[str] = "tardis"
    reorder: ClassVar[timedelta] = timedelta(0)  # Tardis writes rows in order
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE, RECEIVE)

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        unknown = set(options) - COMMON_OPTIONS - {"symbol"}
        if unknown:
            raise FeedError(f"{path}: unknown option(s) {', '.join(sorted(unknown))} for --format {self.name}; it takes: clock")
        self.path = path
        self.symbols = symbols
        self.clock = clock_choose(type(self), path, options)
        self.time_column = 2 if self.clock == EXCHANGE else 3
        self.offsets = ClockOffsets()
        self.reset()

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        return kind_of(first_line) is not None

    def reset(self) -> None:
        self.offsets.clear()
        self.kind: str | None = None  # known after the header
        self.columns: tuple[str, ...] = ()
        # The book rows being grouped: (symbol or None, is_snapshot, µs), and their levels.
        self._group: tuple[str | None, bool, int] | None = None
        self._bids: list[Level] = []
        self._asks: list[Level] = []
        self._time, self._source, self._raw = 0, "", ""

    def parse(self, line: str) -> list[MarketEvent]:
        fields = line.split(",")
        if self.kind is None:
            self.kind = kind_of(line)
            if self.kind is None:
                raise FeedError(f"{self.path}: line 1 is not a Tardis CSV header: {line[:80]!r}")
            self.columns = tuple(fields)
            return []
        if len(fields) != len(self.columns):
            raise BadLine("wrong column count", f"expected {len(self.columns)} fields ({self.kind}), found {len(fields)}")
        exchange_us, local_us = _micros(fields[2], "timestamp"), _micros(fields[3], "local_timestamp")
        self.offsets.note_us(local_us, exchange_us)
        us = local_us if self.clock == RECEIVE else exchange_us
        source, raw = fields[0], fields[1]
        if self.kind == "incremental_book_L2":
            return self._book_row(source, raw, us, fields)
        symbol = self.symbols.resolve(raw, source=source)
        ts = EPOCH + timedelta(microseconds=us)
        if self.kind == "trades":
            text = fields[4]
            trade_id: int | str | None = int(text) if text.isascii() and text.isdigit() else (text or None)
            price, amount = _number(fields[6], "price"), _number(fields[7], "amount")
            return [] if symbol is None else [Trade(symbol, ts, price, amount, source, _TAKER.get(fields[5]), trade_id)]
        if self.kind == "quotes":
            if not fields[5] or not fields[6]:
                raise PassOver("one-sided quote")
            bid, ask = _number(fields[6], "bid_price"), _number(fields[5], "ask_price")
            if bid > ask:
                raise BadLine("crossed quote", f"bid {fields[6]} is above ask {fields[5]}")
            return [] if symbol is None else [Quote(symbol, ts, bid, ask, source)]
        return [] if symbol is None else [self._snapshot_row(symbol, ts, source, fields)]

    def _snapshot_row(self, symbol: str, ts: datetime, source: str, fields: list[str]) -> BookSnapshot:
        sides: dict[str, list[Level]] = {"asks": [], "bids": []}
        levels: dict[tuple[str, str], dict[str, str]] = {}
        for column, text in zip(self.columns[4:], fields[4:], strict=True):
            found = _SNAPSHOT_LEVEL.match(column)
            if found and text:
                levels.setdefault((found[1], found[2]), {})[found[3]] = text
        for (side, _), level in sorted(levels.items(), key=lambda item: (item[0][0], int(item[0][1]))):
            if "price" in level and "amount" in level:
                sides[side].append((_number(level["price"], f"{side} price"), _number(level["amount"], f"{side} amount")))
        return BookSnapshot(symbol, ts, tuple(sides["bids"]), tuple(sides["asks"]), source)

    def _book_row(self, source: str, raw: str, us: int, fields: list[str]) -> list[MarketEvent]:
        snapshot = fields[4] == "true"
        if not snapshot and fields[4] != "false":
            raise BadLine("bad boolean", f"is_snapshot {fields[4]!r} is not true or false")
        side = fields[5]
        if side not in ("bid", "ask"):
            raise BadLine("bad value", f"side {side!r} is not bid or ask")
        level = (_number(fields[6], "price"), _number(fields[7], "amount"))
        # A snapshot's rows are one group whatever their times; deltas group by time.
        key = (f"{source}:{raw}", True, -1) if snapshot else (f"{source}:{raw}", False, us)
        released = self._release() if key != self._group else []
        if key != self._group:
            self._group, self._time, self._source, self._raw = key, us, source, raw
        (self._bids if side == "bid" else self._asks).append(level)
        return released

    def _release(self) -> list[MarketEvent]:
        if self._group is None:
            return []
        bids, asks, snapshot = tuple(self._bids), tuple(self._asks), self._group[1]
        self._group, self._bids, self._asks = None, [], []
        symbol = self.symbols.resolve(self._raw, source=self._source)
        if symbol is None:
            return []
        ts = EPOCH + timedelta(microseconds=self._time)
        if snapshot:
            return [BookSnapshot(symbol, ts, bids, asks, self._source)]
        return [BookDelta(symbol, ts, bids, asks, self._source)]

    def finish(self) -> list[MarketEvent]:
        """The book rows still grouped at the end of the file."""
        return self._release()
