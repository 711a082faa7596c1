"""Daily closes from a vendor's CSV download: pure parsing, no database (the `import_prices` command writes).

The format is told by the header (names compared without case or spaces):

- **Yahoo Finance** history download: ``Date,Open,High,Low,Close,Adj Close,Volume``;
  one symbol per file, given with ``--symbol``. ``Close`` is taken (Yahoo adjusts it
  for splits, not dividends); ``adjusted=True`` takes ``Adj Close`` (dividends
  reinvested: what a total-return benchmark wants). Yahoo writes ``null`` on days
  it has no price: such a row is reported, not guessed.
- **Stooq** daily download: ``Date,Open,High,Low,Close,Volume`` (sometimes with
  ``OpenInt``); one symbol per file, given with ``--symbol``.
- **Generic**: ``date,symbol,close``, any number of symbols.

Dates are ISO (``2024-01-31``) or ``20240131``. A close must be a positive number.
Every bad row is reported with its line number and why; the good ones are kept.
A date given twice for one symbol is reported on its second line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

YAHOO, STOOQ, GENERIC = "yahoo", "stooq", "csv"


@dataclass(frozen=True, slots=True)
class Close:
    line: int
    symbol: str
    date: date
    close: Decimal


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str


class FormatError(ValueError):
    """The file as a whole cannot be read (unknown header, a symbol missing for a one-symbol format)."""


def _key(name: str) -> str:
    return "".join(name.split()).lower()


def detect(header: list[str]) -> str:
    names = {_key(name) for name in header}
    if {"date", "close", "adjclose"} <= names:
        return YAHOO
    if {"date", "open", "high", "low", "close"} <= names:
        return STOOQ
    if {"date", "symbol", "close"} <= names:
        return GENERIC
    raise FormatError(
        f"Unknown header {','.join(header)!r}: expected Yahoo Finance (Date,Open,High,Low,Close,Adj Close,Volume), "
        "Stooq (Date,Open,High,Low,Close,Volume) or date,symbol,close."
    )


def parse_date(text: str) -> date:
    text = text.strip()
    for layout in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, layout).date()  # noqa: DTZ007 (a calendar date, no time of day)
        except ValueError:
            continue
    raise ValueError(f"date {text!r} is not YYYY-MM-DD")


def parse_close(text: str, column: str) -> Decimal:
    text = text.strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{column} {text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"{column} {text!r} must be a positive number")
    return value


@dataclass
class Parsed:
    format: str
    closes: list[Close]
    bad: list[BadRow]


def parse(lines: Iterable[str], *, symbol: str = "", adjusted: bool = False) -> Parsed:
    """Every close of the file and every bad row; raises FormatError when the file cannot be read at all."""
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise FormatError("The file is empty.")
    kind = detect(header)
    if kind in (YAHOO, STOOQ) and not symbol:
        raise FormatError(f"A {kind} file holds one symbol's prices: name it with --symbol.")
    if adjusted and kind != YAHOO:
        raise FormatError("--adjusted takes Yahoo's Adj Close; this file has no such column.")
    columns = {_key(name): i for i, name in enumerate(header)}
    close_column = "adjclose" if adjusted else "close"
    label = "Adj Close" if adjusted else "Close"
    closes: list[Close] = []
    bad: list[BadRow] = []
    seen: dict[tuple[str, date], int] = {}
    for line, row in _numbered(reader):
        if not any(cell.strip() for cell in row):
            continue
        try:
            if len(row) < len(header):
                raise ValueError(f"{len(row)} fields, the header has {len(header)}")
            row_symbol = row[columns["symbol"]].strip() if kind == GENERIC else symbol
            if not row_symbol:
                raise ValueError("no symbol")
            day = parse_date(row[columns["date"]])
            value = parse_close(row[columns[close_column]], label)
        except ValueError as exc:
            bad.append(BadRow(line, str(exc)))
            continue
        first = seen.setdefault((row_symbol, day), line)
        if first != line:
            bad.append(BadRow(line, f"{row_symbol} on {day} is already on line {first}"))
            continue
        closes.append(Close(line, row_symbol, day, value))
    return Parsed(kind, closes, bad)


def _numbered(reader: Iterator[list[str]]) -> Iterator[tuple[int, list[str]]]:
    # csv.reader counts physical lines (a quoted field may span several): report the line a row starts on.
    start = reader.line_num + 1  # type: ignore[attr-defined]
    for row in reader:
        yield start, row
        start = reader.line_num + 1  # type: ignore[attr-defined]
