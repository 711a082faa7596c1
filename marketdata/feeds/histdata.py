"""HistData.com "Generic ASCII" tick files: FX top of book, one quote per line.

Format (HistData F.A.Q. "data files detailed specification", http://histdata.com/?p=21,
section "2. Generic ASCII in Ticks"):

- File `DAT_ASCII_EURUSD_T_202401.csv`, downloaded as `HISTDATA_COM_ASCII_EURUSD_T202401.zip`
  (one month, one pair). The pair is only in the file name, never in the rows.
- Rows `DateTime Stamp,Bid Quote,Ask Quote,Volume`, no header, e.g.
  `20240102 170000123,1.104100,1.104200,0`.
- DateTime Stamp is `YYYYMMDD HHMMSSNNN` (NNN milliseconds) in Eastern Standard Time WITHOUT
  daylight saving adjustments: a fixed UTC−5 all year. So `20240102 170000123` is
  2024-01-02T22:00:00.123Z, and `20240702 170000000` is 22:00Z too, not 21:00Z.
- Volume is always 0 in these files and is not used.

Each line yields `Quote(symbol, ts, bid, ask, source="histdata")`.
Symbol: `options["symbol"]` (`--symbol`) wins; else the pair in the official file name, or in the
name of the file inside a renamed .zip; otherwise FeedError saying so.
Bad lines: "wrong column count", "bad number" (bid or ask not a positive number), "bad time",
"crossed quote" (bid above ask).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path, PurePosixPath
from typing import ClassVar

from marketdata.events import MarketEvent, Quote
from marketdata.feeds.files import COMMON_OPTIONS, EXCHANGE, BadLine, FeedError, NamedSymbol
from marketdata.symbols import SymbolMap

SOURCE = "histdata"
EST = timezone(timedelta(hours=-5), "EST")  # HistData's clock: no daylight saving, ever

_NAME = re.compile(r"(?:DAT_ASCII_|HISTDATA_COM_ASCII_)([A-Za-z0-9]+)_T_?\d{6}", re.IGNORECASE)
_LINE = re.compile(r"\d{8} \d{9},[0-9.]+,[0-9.]+,\d+")  # for sniffing only


class HistDataTicks:
    """`--format histdata`: one Quote per line."""

    name: ClassVar[str] = "histdata"
    reorder: ClassVar[timedelta] = timedelta(0)
    clocks: ClassVar[tuple[str, ...]] = (EXCHANGE,)

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        unknown = set(options) - {"symbol"} - COMMON_OPTIONS
        if unknown:
            raise FeedError(f"{path}: unknown option(s) {', '.join(sorted(unknown))} for --format {self.name}; it takes: symbol")
        self.raw_symbol = options.get("symbol") or _symbol_from_name(path)
        self.named = NamedSymbol(self.raw_symbol, symbols, source=SOURCE)
        self.symbol = self.named.symbol

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        return bool(_NAME.match(path.name) or _LINE.fullmatch(first_line))

    def parse(self, line: str) -> Iterable[MarketEvent]:
        fields = line.split(",")
        if len(fields) != 4:
            raise BadLine("wrong column count", f"expected 4 fields (time, bid, ask, volume), found {len(fields)}")
        stamp, bid_text, ask_text, _volume = fields
        ts = _utc(stamp)
        bid = _price("bid", bid_text)
        ask = _price("ask", ask_text)
        if bid > ask:
            raise BadLine("crossed quote", f"bid {bid_text} is above ask {ask_text}")
        if self.symbol is None:
            return self.named.skipped()
        return (Quote(self.symbol, ts, bid, ask, SOURCE),)


def _symbol_from_name(path: Path) -> str:
    """The pair in HistData's file name; for a renamed .zip, in the name of the file inside it."""
    names = [path.name]
    if path.suffix.lower() == ".zip" and not _NAME.match(path.name):
        try:
            with zipfile.ZipFile(path) as archive:
                names += [PurePosixPath(member).name for member in archive.namelist()]
        except (OSError, zipfile.BadZipFile):
            pass  # opening the file for reading reports it properly
    for name in names:
        found = _NAME.match(name)
        if found is not None:
            return found.group(1).upper()
    raise FeedError(
        f"cannot tell the symbol from the file name {path.name} (HistData names its files DAT_ASCII_<PAIR>_T_<YYYYMM>.csv "
        "and HISTDATA_COM_ASCII_<PAIR>_T<YYYYMM>.zip); pass --symbol"
    )


def _utc(stamp: str) -> datetime:
    """`YYYYMMDD HHMMSSNNN` on HistData's fixed EST clock, as UTC."""
    if len(stamp) != 18 or stamp[8] != " " or not (stamp[:8].isdigit() and stamp[9:].isdigit()):
        raise BadLine("bad time", f"time {stamp!r} is not YYYYMMDD HHMMSSNNN")
    try:
        local = datetime(
            int(stamp[0:4]),
            int(stamp[4:6]),
            int(stamp[6:8]),
            int(stamp[9:11]),
            int(stamp[11:13]),
            int(stamp[13:15]),
            int(stamp[15:18]) * 1000,
            tzinfo=EST,
        )
    except ValueError as exc:
        raise BadLine("bad time", f"time {stamp!r} is not a date and time: {exc}") from None
    return local.astimezone(UTC)


def _price(column: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BadLine("bad number", f"{column} {text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise BadLine("bad number", f"{column} {text!r} is not a positive number")
    return value
