"""QuantConnect Lean US equity tick files (AlgoSeek trades and quotes): `--format lean-equity`.

Format (Lean's `Data/equity/readme.md`, "Tick File Format",
https://github.com/QuantConnect/Lean/blob/master/Data/equity/readme.md):

- One file per day, symbol and kind: `/data/equity/usa/tick/spy/20131007_trade.zip` holding
  `20131007_spy_Trade_Tick.csv` (likewise `_quote.zip` / `_Quote_Tick.csv`). The rows name neither
  the day nor the symbol: both come from the name of the csv (inside the zip), else the day from the
  zip's name and the symbol from its folder. No header; unquoted.
- Trade rows: `Time, TradeSale, Trade Volume, Exchange, Trade Sale Condition, Suspicious`,
  e.g. `14400009.367,137450,100,D,1,0`.
- Quote rows: `Time, Bid Sale, Bid Size, Ask Sale, Ask Size, Exchange, Quote Sale Condition,
  Suspicious`; each quote tick carries one side only (the other price and size are 0).
- Time is milliseconds since midnight (a fraction allowed) in the data's zone, New York for US
  equities: read on the wall clock of the file's day (`dayclock`), so EST or EDT as it was.
- Prices are deci-cents: the integer × 10⁻⁴ dollars (`137450` → 13.7450).
- The condition is a hexadecimal set of flags (readme "Tick Sale Conditions": `40` opening print,
  `80` closing print, `80000000` odd lot, ...); Suspicious is AlgoSeek's flag for a tick far from
  the market that may be reversed (`1`/`0`). Lean's own bars leave suspicious ticks out.

Events: a trade row gives `Trade(side=None)` (the rows do not say who took); a quote row sets the
latest bid or ask, and once both are known gives `Quote` of the latest of each, as Lean's quote
bars take them. A quote row with both sides 0 (halt and resume messages) gives nothing.

Options: `symbol` (`--symbol`) and `date` (`YYYYMMDD` or `YYYY-MM-DD`) override the file name;
`tz` (default America/New_York); filters, for candles to match a vendor's bars:
`exchanges=N,P,T` (keep only these exchange codes), `exclude_conditions=40,80,odd_lot` (drop ticks
with any of these flags, in hex or by the names in `CONDITION_NAMES`), `drop_crosses=true` (the
opening, closing and re-opening prints, crossing-session trades and the official open and close
reports), `drop_suspicious=true`. Filtered ticks are counted, not reported as bad lines; the count is
logged after each pass.

Bad lines: "wrong column count", "bad time", "bad number" (a price not > 0 on a trade, or not a
whole number of deci-cents; a size below 0), "bad value" (a condition that is not hexadecimal),
"bad boolean" (suspicious not 0/1), "crossed quote" (the latest bid above the latest ask).
"""

from __future__ import annotations

import logging
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import ClassVar

from marketdata.events import MarketEvent, Quote, Trade
from marketdata.feeds.dayclock import NEW_YORK, DayClock, zone_named
from marketdata.feeds.files import EXCHANGE, BadLine, FeedError, NamedSymbol
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

SOURCE = "lean"
OPTIONS = frozenset({"symbol", "date", "tz", "exchanges", "exclude_conditions", "drop_crosses", "drop_suspicious"})
TRADE_COLUMNS = ("time", "price", "size", "exchange", "condition", "suspicious")
QUOTE_COLUMNS = ("time", "bid", "bid_size", "ask", "ask_size", "exchange", "condition", "suspicious")

# Trade condition flags by name (Lean readme "Tick Sale Conditions" / "Trade Ticks"), for exclude_conditions.
CONDITION_NAMES = {
    "regular": 0x1,
    "cash": 0x2,
    "next_day": 0x4,
    "seller": 0x8,
    "yellow_flag": 0x10,
    "intermarket_sweep": 0x20,
    "opening": 0x40,
    "closing": 0x80,
    "reopening": 0x100,
    "derivatively_priced": 0x200,
    "form_t": 0x400,
    "sold_last": 0x800,
    "stopped": 0x1000,
    "extended_hours": 0x2000,
    "outside_hours": 0x4000,
    "split": 0x8000,
    "acquisition": 0x10000,
    "bunched": 0x20000,
    "stock_option": 0x40000,
    "distribution": 0x80000,
    "average_price": 0x100000,
    "cross": 0x200000,
    "price_variation": 0x400000,
    "rule_155": 0x800000,
    "official_close": 0x1000000,
    "prior_reference_price": 0x2000000,
    "official_open": 0x4000000,
    "cap_election": 0x8000000,
    "auto_execution": 0x10000000,
    "trade_through_exempt": 0x20000000,
    "odd_lot": 0x80000000,
}
# drop_crosses: the auction prints and their official reports (each a duplicate of the cross's price).
CROSS_CONDITIONS = ("opening", "closing", "reopening", "cross", "official_open", "official_close")

_CSV_NAME = re.compile(r"(\d{8})_(.+)_(trade|quote)_tick\.csv", re.IGNORECASE)
_ZIP_NAME = re.compile(r"(\d{8})_(trade|quote)\.zip", re.IGNORECASE)
_NAMES = "Lean names them <YYYYMMDD>_<symbol>_Trade_Tick.csv, in <symbol>/<YYYYMMDD>_trade.zip"
_HEX = re.compile(r"[0-9A-Fa-f]+")
_MS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_TRUE, _FALSE = frozenset({"1", "true"}), frozenset({"0", "false"})


class LeanEquityTicks:
    """`--format lean-equity`: one Trade per trade tick, a Quote per quote tick once both sides are known."""

    name: ClassVar[str] = "lean-equity"
    reorder: ClassVar[timedelta] = timedelta(0)
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE,)  # the exchange's time of day in New York; no receive time

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        unknown = set(options) - OPTIONS
        if unknown:
            raise FeedError(
                f"{path}: unknown option(s) {', '.join(sorted(unknown))} for --format {self.name}; it takes: {', '.join(sorted(OPTIONS))}"
            )
        self.path = path
        named_day, named_symbol, kind = _from_name(path)
        day = _day(options["date"]) if options.get("date") else named_day
        raw_symbol = options.get("symbol") or named_symbol
        if day is None:
            raise FeedError(f"{path}: cannot tell the day from the file name ({_NAMES}); pass --option date=YYYYMMDD")
        if not raw_symbol:
            raise FeedError(f"{path}: cannot tell the symbol from the file name ({_NAMES}); pass --symbol")
        self.raw_symbol = raw_symbol
        self.clock = DayClock(day, zone_named(options.get("tz") or NEW_YORK))
        self._named_kind = kind
        self.exchanges = _exchanges(options.get("exchanges"))
        self.excluded = _conditions(options.get("exclude_conditions"))
        if _flag(options, "drop_crosses"):
            for name in CROSS_CONDITIONS:
                self.excluded |= CONDITION_NAMES[name]
        self.drop_suspicious = _flag(options, "drop_suspicious")
        self.named = NamedSymbol(self.raw_symbol, symbols, source=SOURCE)
        self.symbol = self.named.symbol
        self.dropped: Counter[str] = Counter()  # filtered ticks by reason, this pass
        self.reset()

    def reset(self) -> None:
        """Before each pass (--loop): no side of the quote is known yet."""
        self.kind = self._named_kind  # "trade" or "quote"; from the first row when the name did not say
        self._bid: Decimal | None = None
        self._ask: Decimal | None = None
        self.dropped = Counter()

    def close(self) -> None:
        if self.dropped:
            reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(self.dropped.items()))
            log.info("%s: %s ticks left out by the filters (%s)", self.path, f"{self.dropped.total():,}", reasons)

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        if _CSV_NAME.match(path.name) or (path.suffix == ".gz" and _CSV_NAME.match(path.stem)):
            return True
        # `YYYYMMDD_trade.zip` is also Lean's name for minute bars: only tick rows have an exchange letter.
        fields = first_line.split(",")
        exchange = {6: 3, 8: 5}.get(len(fields))
        return bool(_ZIP_NAME.match(path.name) and exchange is not None and _MS.fullmatch(fields[0]) and fields[exchange].isalpha())

    def parse(self, line: str) -> Iterable[MarketEvent]:
        fields = line.split(",")
        if self.kind is None:
            self.kind = {len(TRADE_COLUMNS): "trade", len(QUOTE_COLUMNS): "quote"}.get(len(fields))
            if self.kind is None:
                raise BadLine(
                    "wrong column count",
                    f"expected 6 fields ({', '.join(TRADE_COLUMNS)}) or 8 ({', '.join(QUOTE_COLUMNS)}), found {len(fields)}",
                )
        columns = TRADE_COLUMNS if self.kind == "trade" else QUOTE_COLUMNS
        if len(fields) != len(columns):
            raise BadLine("wrong column count", f"expected {len(columns)} fields ({', '.join(columns)}), found {len(fields)}")
        ts = self.clock.utc(_microseconds(fields[0]))
        exchange, condition, suspicious = fields[-3].strip(), _condition(fields[-2]), _suspicious(fields[-1])
        if self.kind == "trade":
            price, size = _price("price", fields[1], positive=True), _size("size", fields[2])
        else:
            bid, ask = _price("bid", fields[1], positive=False), _price("ask", fields[3], positive=False)
            _size("bid_size", fields[2])
            _size("ask_size", fields[4])
        reason = self._filtered(exchange, condition, suspicious)
        if reason is not None:
            self.dropped[reason] += 1
            return ()
        if self.kind == "trade":
            if self.symbol is None:
                return self.named.skipped()
            return (Trade(self.symbol, ts, price, size, SOURCE),)
        if not (bid or ask):
            return ()  # both sides 0: a halt or resume message, no price
        if bid:
            self._bid = bid
        if ask:
            self._ask = ask
        if self._bid is None or self._ask is None:
            return ()
        if self._bid > self._ask:
            raise BadLine("crossed quote", f"bid {self._bid} is above ask {self._ask}")
        if self.symbol is None:
            return self.named.skipped()
        return (Quote(self.symbol, ts, self._bid, self._ask, SOURCE),)

    def _filtered(self, exchange: str, condition: int, suspicious: bool) -> str | None:
        """Why a tick is left out by the options, or None to keep it."""
        if self.drop_suspicious and suspicious:
            return "suspicious"
        if condition & self.excluded:
            return "condition"
        if self.exchanges is not None and exchange.upper() not in self.exchanges:
            return "exchange"
        return None


def _from_name(path: Path) -> tuple[date | None, str | None, str | None]:
    """(day, symbol, "trade"/"quote") from Lean's names: the csv's (inside a zip), else the zip's and its folder."""
    names = [path.stem if path.suffix == ".gz" else path.name]
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                names = [PurePosixPath(member).name for member in archive.namelist()] + names
        except (OSError, zipfile.BadZipFile):
            pass  # reading the file reports it properly
    for name in names:
        found = _CSV_NAME.match(name)
        if found:
            return _named_day(found.group(1)), found.group(2).upper(), found.group(3).lower()
    found = _ZIP_NAME.match(path.name)
    if found:
        folder = path.parent.name
        return _named_day(found.group(1)), folder.upper() or None, found.group(2).lower()
    return None, None, None


def _named_day(text: str) -> date | None:
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None


def _day(text: str) -> date:
    day = _named_day(text) if len(text) == 8 and text.isdigit() else None
    if day is None:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise FeedError(f"option date {text!r} is not YYYYMMDD or YYYY-MM-DD") from None
    return day


def _exchanges(text: str | None) -> frozenset[str] | None:
    if not text:
        return None
    codes = frozenset(code.strip().upper() for code in text.split(",") if code.strip())
    if not codes or not all(code.isalpha() for code in codes):
        raise FeedError(f"option exchanges {text!r} must be exchange letters separated by commas, e.g. N,P,T")
    return codes


def _conditions(text: str | None) -> int:
    """The flags of exclude_conditions: hex codes as the Lean readme lists them, or names from CONDITION_NAMES."""
    flags = 0
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        if item.lower() in CONDITION_NAMES:
            flags |= CONDITION_NAMES[item.lower()]
        elif _HEX.fullmatch(item):
            flags |= int(item, 16)
        else:
            raise FeedError(
                f"option exclude_conditions: {item!r} is neither a hexadecimal flag (e.g. 40, 80000000) nor one of {', '.join(CONDITION_NAMES)}"
            )
    return flags


def _flag(options: Mapping[str, str], key: str) -> bool:
    text = options.get(key, "").strip().lower()
    if text in ("", "false", "0", "no"):
        return False
    if text in ("true", "1", "yes"):
        return True
    raise FeedError(f"option {key} {options[key]!r} must be true or false")


def _microseconds(text: str) -> int:
    if not _MS.fullmatch(text):
        raise BadLine("bad time", f"time {text!r} is not milliseconds since midnight (e.g. 34200000.5)")
    whole, _, fraction = text.partition(".")
    microseconds = int(whole) * 1000 + int((fraction + "000")[:3])
    if microseconds > 86_401_000_000:
        raise BadLine("bad time", f"time {text!r} is past the end of the day")
    return microseconds


def _price(column: str, text: str, *, positive: bool) -> Decimal:
    # Whole deci-cents only: 137450 is $13.7450. A fraction or sign means a differently written file.
    if not text.isascii() or not text.isdigit():
        raise BadLine("bad number", f"{column} {text!r} is not a whole number of deci-cents")
    if positive and int(text) == 0:
        raise BadLine("bad number", f"{column} {text!r} is not positive")
    return Decimal(text).scaleb(-4)


def _size(column: str, text: str) -> Decimal:
    if not text.isascii() or not text.replace(".", "", 1).isdigit():
        raise BadLine("bad number", f"{column} {text!r} is not a number of shares")
    return Decimal(text)


def _condition(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    if not _HEX.fullmatch(text):  # int(text, 16) alone would also take signs, "0x" and underscores
        raise BadLine("bad value", f"condition {text!r} is not a hexadecimal set of flags")
    return int(text, 16)


def _suspicious(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise BadLine("bad boolean", f"suspicious {text!r} is neither 1 nor 0")
