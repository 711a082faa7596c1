"""Binance spot trade files from data.binance.vision: aggTrades and trades CSV.

Format (https://github.com/binance/binance-public-data#spot, README "AggTrades" and "Trades"):

- Files are `<SYMBOL>-aggTrades-<YYYY-MM-DD>.zip` (daily) or `<SYMBOL>-aggTrades-<YYYY-MM>.zip`
  (monthly), likewise `<SYMBOL>-trades-...`, each a zip holding one `.csv` of the same name.
  The symbol is only in the file name, never in the rows.
- Rows are comma-separated, unquoted, with no header (a header on line 1 is skipped).
- aggTrades columns: agg_trade_id, price, qty, first_trade_id, last_trade_id, transact_time,
  is_buyer_maker, is_best_match. Example: `3800397495,87648.21000000,0.08185000,5723703861,
  5723703861,1767225600039409,True,True`.
- trades columns: id, price, qty, quote_qty, time, is_buyer_maker, is_best_match.
  Example: `51175358,17.80180000,5.69000000,101.29224200,1583709433583,True,True`.
- Times are UTC since the epoch: milliseconds (13 digits) in files before 2025, microseconds
  (16 digits) in spot files from 2025-01-01 on (binance-public-data issues #386, #387). Each value
  is read by its length, so a file mixing both still reads right.
- is_buyer_maker `True` means the resting order was the buy, so the taker sold: side "sell";
  `False` means side "buy". Futures files spell it `true`/`false`; both spellings are accepted.
- agg_trade_id / id becomes `Trade.trade_id`; is_best_match, first/last_trade_id and quote_qty
  are not used.

Symbol: `options["symbol"]` (`--symbol`), else the official file name, else any `_`/`-`/`.`
separated part of the file name that the SymbolMap knows; otherwise FeedError.
Bad lines: "wrong column count", "bad number" (price not > 0, qty < 0, NaN, ...), "bad time"
(not 13 or 16 digits), "bad boolean" (is_buyer_maker neither True nor False).

Speed: these files run to millions of rows a day, so `parse` is one straight pass (split, Decimal,
int) with no per-line formatting; a line that fails any check is examined again by `_explain`,
off the fast path, to say which field is wrong.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

from marketdata.events import EPOCH, MarketEvent, Trade
from marketdata.feeds.files import COMMON_OPTIONS, EXCHANGE, BadLine, FeedError, NamedSymbol
from marketdata.symbols import SymbolMap

SOURCE = "binance"

# is_buyer_maker → the taker's side.
_TAKER_SIDE = {"True": "sell", "False": "buy", "true": "sell", "false": "buy"}
_MS_DIGITS, _US_DIGITS = 13, 16
# Prices and sizes repeat (a few thousand distinct values in 5,000 rows): reusing their Decimal
# saves a conversion; a cache is dropped when full so a day of values does not pile up.
_DECIMAL_CACHE_SIZE = 4096


class _Invalid(Exception):
    """A check on the fast path failed; `_explain` says which."""


def symbol_from_name(path: Path, kind: str, symbols: SymbolMap) -> str:
    """The symbol a Binance file is about, from its name (the rows do not carry it).

    The official name `BTCUSDT-<kind>-2026-01-01.csv[.zip]` first; otherwise any `_`, `-` or `.`
    separated part of the name that the map knows (`binance_spot_btcusdt_...csv`)."""
    official = re.match(rf"([A-Za-z0-9]+)-{kind}-", path.name, flags=re.IGNORECASE)
    if official:
        return official.group(1).upper()
    for token in re.split(r"[_.\-]", path.name):
        upper = token.upper()
        # Asked without `resolve`, which would count every unknown token as a skipped event.
        if upper and (upper in symbols.instruments or (SOURCE, upper) in symbols.aliases or ("", upper) in symbols.aliases):
            return upper
    raise FeedError(f"cannot tell the symbol from the file name {path.name}; pass --symbol")


class _BinanceTradeFile:
    """One Binance trade file; subclasses say where the columns are."""

    name: ClassVar[str]
    reorder: ClassVar[timedelta] = timedelta(0)
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE,)
    _kind: ClassVar[str]  # as in the official file name
    _columns: ClassVar[tuple[str, ...]]
    _time: ClassVar[int]  # index of the time column
    _maker: ClassVar[int]  # index of is_buyer_maker

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        unknown = set(options) - {"symbol"} - COMMON_OPTIONS
        if unknown:
            raise FeedError(f"{path}: unknown option(s) {', '.join(sorted(unknown))} for --format {self.name}; it takes: symbol")
        self.path = path
        self.raw_symbol = options.get("symbol") or symbol_from_name(path, self._kind, symbols)
        self.named = NamedSymbol(self.raw_symbol, symbols, source=SOURCE)
        self.symbol = self.named.symbol
        self._width = len(self._columns)
        self._prices: dict[str, Decimal] = {}  # see _decimal
        self._sizes: dict[str, Decimal] = {}
        self._last_ts: datetime = EPOCH
        self.reset()

    def reset(self) -> None:
        """Before each pass over the file (--loop): line 1 may be a header again."""
        self._last_time: str | None = None  # consecutive rows often share a time: reuse its datetime
        self._explained = False

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        if re.match(rf"[A-Za-z0-9]+-{cls._kind}-", path.name):
            return True
        fields = first_line.split(",")
        return (
            len(fields) == len(cls._columns)
            and fields[0].isdigit()
            and fields[cls._maker] in _TAKER_SIDE
            and len(fields[cls._time]) in (_MS_DIGITS, _US_DIGITS)
            and fields[cls._time].isdigit()
        )

    def parse(self, line: str) -> Iterable[MarketEvent]:
        fields = line.split(",")
        try:
            if len(fields) != self._width:
                raise _Invalid
            text = fields[1]
            # (A cached zero is falsy and only converted again: zero sizes are rare.)
            price = self._prices.get(text) or _decimal(self._prices, text, positive=True)
            text = fields[2]
            size = self._sizes.get(text) or _decimal(self._sizes, text, positive=False)
            text = fields[self._time]
            if text == self._last_time:
                ts = self._last_ts
            else:
                ts = self._last_ts = _timestamp(text)
                self._last_time = text
            side = _TAKER_SIDE[fields[self._maker]]
            trade_id = int(fields[0])
        except (_Invalid, ArithmeticError, ValueError, KeyError):
            return self._explain(fields)
        symbol = self.symbol
        if symbol is None:
            return self.named.skipped()
        return (Trade(symbol, ts, price, size, SOURCE, side, trade_id),)

    def _explain(self, fields: list[str]) -> tuple[()]:
        """Raise the BadLine saying what is wrong with a line the fast path refused; () for a header."""
        # Line 1 of a pass is the first line that is neither good (which sets _last_time) nor explained.
        first, self._explained = not self._explained and self._last_time is None, True
        if first and not fields[0].strip().isdigit():
            return ()  # a header
        if len(fields) != self._width:
            raise BadLine("wrong column count", f"expected {self._width} fields ({', '.join(self._columns)}), found {len(fields)}")
        if not fields[0].isdigit():
            raise BadLine("bad number", f"{self._columns[0]} {fields[0]!r} is not a trade id")
        for index, column in ((1, self._columns[1]), (2, self._columns[2])):
            _check_number(column, fields[index], positive=index == 1)
        time_column = self._columns[self._time]
        try:
            _timestamp(fields[self._time])
        except _Invalid:
            raise BadLine(
                "bad time", f"{time_column} {fields[self._time]!r} is neither 13 digits (ms) nor 16 digits (µs) since the epoch"
            ) from None
        maker = fields[self._maker]
        if maker not in _TAKER_SIDE:
            raise BadLine("bad boolean", f"{self._columns[self._maker]} {maker!r} is not True or False")
        raise BadLine("bad line", f"cannot read {','.join(fields)!r}")  # not reached: every check above passed


def _timestamp(text: str) -> datetime:
    """The UTC time of a 13-digit ms or 16-digit µs epoch value.

    `from_epoch_us`, inlined: the extra call is 7% of a line's parse time."""
    if not text.isdigit():  # int() would also take signs, spaces and underscores
        raise _Invalid
    if len(text) == _US_DIGITS:
        return EPOCH + timedelta(0, 0, int(text))
    if len(text) == _MS_DIGITS:
        return EPOCH + timedelta(0, 0, int(text) * 1000)
    raise _Invalid


def _decimal(cache: dict[str, Decimal], text: str, *, positive: bool) -> Decimal:
    """`text` as a Decimal, remembered in `cache`; raises on NaN, infinity, negatives (and 0 if `positive`)."""
    value = Decimal(text)
    if not value.is_finite() or value.is_signed() or (positive and not value):
        raise _Invalid
    if len(cache) >= _DECIMAL_CACHE_SIZE:
        cache.clear()
    cache[text] = value
    return value


def _check_number(column: str, text: str, *, positive: bool) -> None:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise BadLine("bad number", f"{column} {text!r} is not a number") from None
    if not value.is_finite():
        raise BadLine("bad number", f"{column} {text!r} is not a number")
    if value.is_signed() or (positive and value == 0):
        raise BadLine("bad number", f"{column} {text!r} is not {'positive' if positive else 'zero or more'}")


class BinanceAggTrades(_BinanceTradeFile):
    """`--format binance-aggtrades`: one Trade per aggregate trade."""

    name = "binance-aggtrades"
    _kind = "aggTrades"
    _columns = ("agg_trade_id", "price", "qty", "first_trade_id", "last_trade_id", "transact_time", "is_buyer_maker", "is_best_match")
    _time = 5
    _maker = 6


class BinanceTrades(_BinanceTradeFile):
    """`--format binance-trades`: one Trade per trade."""

    name = "binance-trades"
    _kind = "trades"
    _columns = ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match")
    _time = 4
    _maker = 5
