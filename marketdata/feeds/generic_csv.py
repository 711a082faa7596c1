"""Any CSV of trades or quotes with a header row, read through a column mapping (`--format csv`).

The file is RFC 4180 CSV (https://www.rfc-editor.org/rfc/rfc4180) read with the csv module, so
quoted fields may hold the delimiter; a quoted field may not hold a line break (lines are read
one at a time). The first line is the header; the options name the columns:

- `time` (required): the column holding the time, read per `time_format`:
  `epoch_s`, `epoch_ms`, `epoch_us`, `epoch_ns` (a number since 1970-01-01 UTC, fractions
  allowed, below a microsecond cut off), `iso` (ISO 8601, e.g. `2024-01-02T17:00:00.5+01:00`
  or `...Z`), `ms_of_day` (milliseconds elapsed since midnight of `date`, `YYYY-MM-DD`, in
  `tz`; on a daylight-saving day that is elapsed time, not the wall clock), `s_of_day` (the
  same in seconds with a decimal fraction, as LOBSTER writes `34200.000123456`; below a
  microsecond cut off), or a
  `strptime` pattern containing `%` (https://docs.python.org/3/library/datetime.html#format-codes).
  Default `iso`.
- `tz`: IANA zone for times that carry no offset (iso, ms_of_day, s_of_day, patterns without %z);
  default UTC.
- `symbol_column` (the column naming each row's symbol) or `symbol` (one symbol for the whole
  file, what `replay_feed --symbol` gives): one is required.
- `price`, `size`: a row with a price gives a Trade (size 0 when there is no size column);
  `bid`, `ask`: a row with both gives a Quote; a row with both kinds gives both events.
  At least `price` or `bid` with `ask` is required.
- `price_divisor`: a positive integer the price, bid and ask are divided by (prices stored in
  ticks, e.g. 10000).
- `delimiter`: one character, default `,` (`tab` or `\\t` for a tab).
- `source`: the source name events carry and symbols resolve under; default `csv`.
- `config`: a TOML file holding any of these keys at top level
  (https://docs.python.org/3/library/tomllib.html); options given on the command line win.

Bad lines: "wrong column count", "bad number", "bad time", "crossed quote" (bid above ask),
"no price" (neither price nor bid and ask set), "no symbol" (empty symbol cell), "bad csv". A bad option, or a header without a mapped
column, stops the run with FeedError. This format is never detected: pass `--format csv`.
"""

from __future__ import annotations

import csv
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marketdata.events import EPOCH, MarketEvent, Quote, Trade
from marketdata.feeds.files import COMMON_OPTIONS, EXCHANGE, BadLine, FeedError
from marketdata.symbols import SymbolMap

OPTIONS = frozenset(
    {"config", "time", "time_format", "tz", "date", "symbol_column", "symbol", "price", "size", "bid", "ask"}
    | {"price_divisor", "delimiter", "source"}
)
# Option naming a column → what the column holds.
COLUMN_OPTIONS = {"time": "time", "symbol_column": "symbol", "price": "price", "size": "size", "bid": "bid", "ask": "ask"}
# Power of ten from each epoch unit to microseconds.
EPOCH_UNITS = {"epoch_s": 6, "epoch_ms": 3, "epoch_us": 0, "epoch_ns": -3}
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # s_of_day: seconds with an optional fraction


def read_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options with those of the `config` TOML file under them (the command line wins)."""
    merged: dict[str, str] = {}
    config = options.get("config")
    if config:
        try:
            with open(config, "rb") as stream:
                table = tomllib.load(stream)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise FeedError(f"option config: cannot read {config}: {exc}") from exc
        for key, value in table.items():
            # TOML has integers (price_divisor = 10000); a table or list has no meaning here.
            if not isinstance(value, str | int) or isinstance(value, bool):
                raise FeedError(f"option {key} in {config}: expected a string or an integer, found {value!r}")
            merged[key] = str(value)
    merged.update((key, value) for key, value in options.items() if key != "config")
    return merged


class GenericCsv:
    """`--format csv`: trades and quotes from any CSV with a header, by column mapping."""

    name: ClassVar[str] = "csv"
    reorder: ClassVar[timedelta] = timedelta(0)
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE,)  # the time column, whoever stamped it

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        self.path = path
        self.symbols = symbols
        opts = read_options(options)
        unknown = set(opts) - OPTIONS - COMMON_OPTIONS
        if unknown:
            raise FeedError(f"unknown option(s) {', '.join(sorted(unknown))} for --format csv; it takes: {', '.join(sorted(OPTIONS))}")
        self.columns = {held: opts[option] for option, held in COLUMN_OPTIONS.items() if opts.get(option)}
        if "time" not in self.columns:
            raise FeedError("option time is required: the name of the column holding the time")
        self.symbol_value = opts.get("symbol") or None
        if ("symbol" in self.columns) == (self.symbol_value is not None):
            raise FeedError("give exactly one of option symbol_column (a column) or option symbol (one symbol for the file)")
        if ("bid" in self.columns) != ("ask" in self.columns):
            raise FeedError("options bid and ask go together: give both columns or neither")
        if "price" not in self.columns and "bid" not in self.columns:
            raise FeedError("option price, or options bid and ask, are required: nothing to read prices from")
        self.source = opts.get("source") or "csv"
        self.delimiter = _delimiter(opts.get("delimiter", ","))
        self.divisor = _divisor(opts.get("price_divisor"))
        self.tz = _zone(opts.get("tz") or "UTC")
        self.to_utc = self._time_reader(opts.get("time_format") or "iso", opts.get("date"))
        self._header: list[str] | None = None  # the first line, which names the columns
        self._index: dict[str, int] = {}  # option → column number

    def reset(self) -> None:
        """Before each pass over the file (--loop): the first line is the header again."""
        self._header = None

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        return False  # any CSV would match: this format is chosen with --format csv only

    def parse(self, line: str) -> Iterable[MarketEvent]:
        if self._header is None:
            self._use_header(line)
            return ()
        try:
            row = next(csv.reader((line,), delimiter=self.delimiter))
        except csv.Error as exc:
            raise BadLine("bad csv", str(exc)) from None
        if len(row) != len(self._header):
            raise BadLine("wrong column count", f"expected {len(self._header)} fields ({', '.join(self._header)}), found {len(row)}")
        cell = self._cell
        ts = self.to_utc(cell(row, "time"))
        raw = self.symbol_value or cell(row, "symbol")
        if not raw:
            raise BadLine("no symbol", f"column {self.columns['symbol']} is empty")
        trade: tuple[Decimal, Decimal] | None = None
        quote: tuple[Decimal, Decimal] | None = None
        price_text = cell(row, "price")
        if price_text:
            size_text = cell(row, "size") if "size" in self._index else "0"
            size = _number("size", size_text)
            if size < 0:
                raise BadLine("bad number", f"size {size_text!r} is negative")
            trade = self._price("price", price_text), size
        bid_text, ask_text = cell(row, "bid"), cell(row, "ask")
        if bid_text and ask_text:
            quote = self._price("bid", bid_text), self._price("ask", ask_text)
            if quote[0] > quote[1]:
                raise BadLine("crossed quote", f"bid {bid_text} is above ask {ask_text}")
        if trade is None and quote is None:
            raise BadLine("no price", "neither price nor bid and ask are set")
        # Resolved only for a good line, so that a bad one is not also counted as an unknown symbol.
        symbol = self.symbols.resolve(raw, source=self.source)
        if symbol is None:
            return ()
        events: list[MarketEvent] = []
        if trade is not None:
            events.append(Trade(symbol=symbol, ts=ts, price=trade[0], size=trade[1], source=self.source))
        if quote is not None:
            events.append(Quote(symbol=symbol, ts=ts, bid=quote[0], ask=quote[1], source=self.source))
        return events

    def _use_header(self, line: str) -> None:
        row = next(csv.reader((line.lstrip("\ufeff"),), delimiter=self.delimiter))
        header = [name.strip() for name in row]
        missing = [name for name in self.columns.values() if name not in header]
        if missing:
            raise FeedError(f"{self.path}: column(s) {', '.join(missing)} not in the header; found: {', '.join(header)}")
        self._header = header
        self._index = {key: header.index(name) for key, name in self.columns.items()}

    def _cell(self, row: list[str], key: str) -> str:
        index = self._index.get(key)
        return "" if index is None else row[index].strip()

    def _price(self, column: str, text: str) -> Decimal:
        value = _number(column, text)
        if value <= 0:
            raise BadLine("bad number", f"{column} {text!r} is not positive")
        return value / self.divisor if self.divisor != 1 else value

    def _time_reader(self, time_format: str, day: str | None) -> Callable[[str], datetime]:
        """The function turning a time cell into an aware UTC datetime, per `time_format`."""
        zone = self.tz
        if time_format in EPOCH_UNITS:
            places = EPOCH_UNITS[time_format]
            return lambda text: _epoch(text, places)
        if time_format == "iso":
            return lambda text: _iso(text, zone)
        if time_format in ("ms_of_day", "s_of_day"):
            if not day:
                raise FeedError(f"time_format {time_format} needs option date (YYYY-MM-DD)")
            try:
                midnight = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=zone).astimezone(UTC)
            except ValueError:
                raise FeedError(f"option date {day!r} is not YYYY-MM-DD") from None
            if time_format == "s_of_day":
                return lambda text: _s_of_day(text, midnight)
            return lambda text: _ms_of_day(text, midnight)
        if "%" in time_format:
            return lambda text: _pattern(text, time_format, zone)
        raise FeedError(
            f"option time_format {time_format!r} is not one of epoch_s, epoch_ms, epoch_us, epoch_ns, iso, ms_of_day, s_of_day "
            "or a strptime pattern with %"
        )


def _number(column: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadLine("bad number", f"{column} {text!r} is not a number") from None
    if not value.is_finite():
        raise BadLine("bad number", f"{column} {text!r} is not a number")
    return value


def _epoch(text: str, places: int) -> datetime:
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise BadLine("bad time", f"time {text!r} is not a number")
    try:
        # Exact: Decimal arithmetic, then whole microseconds (int() cuts nanoseconds off).
        return EPOCH + timedelta(microseconds=int(value.scaleb(places)))
    except OverflowError:
        raise BadLine("bad time", f"time {text!r} is out of range") from None


def _iso(text: str, zone: tzinfo) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadLine("bad time", f"time {text!r} is not ISO 8601") from None
    return _aware(value, zone)


def _ms_of_day(text: str, midnight: datetime) -> datetime:
    if not text.isascii() or not text.isdigit():  # isdigit() alone takes '²', which int() refuses
        raise BadLine("bad time", f"time {text!r} is not a whole number of milliseconds")
    return midnight + timedelta(milliseconds=int(text))


def _s_of_day(text: str, midnight: datetime) -> datetime:
    # ASCII digits only: Decimal would also take signs, exponents and NaN, and isdigit() takes '²', which int() refuses.
    whole, _, fraction = text.partition(".")
    if not _SECONDS.fullmatch(text) or int(whole) > 86_400:  # a day has at most 86,400 s (with a leap second)
        raise BadLine("bad time", f"time {text!r} is not seconds since midnight (e.g. 34200.123456)")
    # Exact: whole microseconds from the digits, anything below a microsecond cut off.
    return midnight + timedelta(seconds=int(whole), microseconds=int((fraction + "000000")[:6]))


def _pattern(text: str, pattern: str, zone: tzinfo) -> datetime:
    try:
        value = datetime.strptime(text, pattern)  # noqa: DTZ007 (the zone is applied by _aware)
    except ValueError:
        raise BadLine("bad time", f"time {text!r} does not match {pattern!r}") from None
    return _aware(value, zone)


def _aware(value: datetime, zone: tzinfo) -> datetime:
    """In UTC; a time without offset is read on `zone`'s clock."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def _delimiter(text: str) -> str:
    if text in ("tab", "\\t"):
        return "\t"
    if len(text) != 1:
        raise FeedError(f"option delimiter {text!r} must be one character (or tab)")
    return text


def _divisor(text: str | None) -> Decimal:
    if text is None:
        return Decimal(1)
    if not text.strip().isdigit() or int(text) == 0:
        raise FeedError(f"option price_divisor {text!r} must be a positive integer")
    return Decimal(int(text))


def _zone(name: str) -> tzinfo:
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FeedError(f"option tz {name!r} is not an IANA time zone (e.g. America/New_York)") from None
