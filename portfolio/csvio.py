"""The ledger as CSV: parsing and writing one portfolio's transactions (format in docs/csv-format.md).

`parse` and `write` are pure apart from the streams: instruments are passed in,
so parsing makes no query per row. `csv_import` and `csv_export` tie them to
`portfolio.services` and the database; the command, the admin page and the
benchmarks all go through them.

Both stream: a file of any length is read row by row and never held whole.
An import keeps each row only until it is written (in batches) and sorted
for the ledger check (in runs that spill to temporary files); problems are
listed up to MAX_PROBLEMS and counted beyond.

Problems carry `ref` = the physical line of the file (the header is line 1)
and `field` = the column, so a message reads "line 7, quantity: 'abc' is not
a number" wherever it is shown.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol, TypeVar

from django.db.models import QuerySet
from django.utils import timezone

from marketdata.models import Instrument
from portfolio import services
from portfolio.ledger import ONE, ZERO, Book, plain
from portfolio.models import Kind, Portfolio, Transaction
from portfolio.services import Draft, Problem, ProblemLog

COLUMNS = ("executed_at", "kind", "symbol", "quantity", "price", "fee", "currency", "fx_rate", "note")
REQUIRED = ("executed_at", "kind", "quantity")
HEADER = ",".join(COLUMNS)

# A plain decimal: no thousands separators, no NaN/Infinity, no `1_000` (which Decimal() would accept).
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# The database columns hold 28 digits, 10 of them after the point: anything finer would be rounded
# silently on write (PostgreSQL) after the ledger was checked with the exact value.
_PLACES, _INTEGER_DIGITS = 10, 18
_STORED = Decimal(1).scaleb(-_PLACES)
_NOTE_LENGTH = Transaction._meta.get_field("note").max_length or 200
_KINDS = tuple(Kind.values)  # Kind.values builds a new list on every access
# Kinds whose price column carries meaning that no default can guess.
_PRICE_REQUIRED: dict[str, str] = {Kind.BUY: "the price per share", Kind.SELL: "the price per share"}
# The services name the instrument field; the file calls it `symbol`.
_COLUMN_OF_FIELD = {"instrument": "symbol"}


# OWASP "CSV injection": a spreadsheet runs a cell that starts with one of these as a formula
# (`=HYPERLINK(...)`, `+cmd|' /C calc'!A0`, `@SUM(...)`, `-2+3+cmd...`). Free-text cells that start so are
# written after a `'`, which spreadsheets take as "this is text"; reading removes it again (`_text_in`).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Cells that hold text anyone may type; the others are numbers, times, kinds and codes written by `_cells`.
_TEXT_COLUMNS = ("symbol", "note")

# Problems listed (in the admin, on stderr); the rest are counted. A million bad rows make one short page.
MAX_PROBLEMS = 500

_T = TypeVar("_T")
_NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # stands in for a bad time; its row is never drafted


class _Bad(ValueError):
    """One cell's problem; its message is shown after "line N, column: "."""


class TextOut(Protocol):
    def write(self, s: str, /) -> object: ...


# --- Reading -------------------------------------------------------------------


def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _decimal(text: str) -> Decimal:
    if not _NUMBER.fullmatch(text):
        if "," in text:
            raise _Bad(f"{_shown(text)} is not a number: write decimals with '.' and no thousands separators")
        raise _Bad(f"{_shown(text)} is not a number")
    value = Decimal(text)
    if value and value.adjusted() >= _INTEGER_DIGITS:
        raise _Bad(f"{_shown(text)} is too large")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _PLACES:
        raise _Bad(f"{_shown(text)} has more than {_PLACES} decimal places")
    return value


def _time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _Bad(f"{_shown(text)} is not an ISO 8601 time such as 2025-03-14T15:30:00Z") from None
    if timezone.is_naive(value):
        raise _Bad(f"{_shown(text)} needs a timezone: add Z or an offset, e.g. 2025-03-14T15:30:00Z or 2025-03-14T15:30:00-04:00")
    return value


def _header_problems(header: list[str]) -> list[Problem]:
    problems = []
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        listed = ", ".join(_shown(c) for c in unknown)
        problems.append(Problem(1, "", f"unknown column{'s' if len(unknown) > 1 else ''} {listed}; the columns are {HEADER}"))
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        problems.append(Problem(1, "", f"column {', '.join(repeated)} appears more than once"))
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        problems.append(Problem(1, "", f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}"))
    return problems


def _quoted(text: str) -> bool:
    """Whether a text cell is written after a `'`: it starts a formula, or it is a `'` before what would need one
    (so that reading removes exactly the `'` writing added)."""
    return text.startswith(_FORMULA_START) or (text[:1] == "'" and (text[1:2] == "'" or text[1:].startswith(_FORMULA_START)))


def _text_out(text: str) -> str:
    return f"'{text}" if _quoted(text) else text


def _text_in(text: str) -> str:
    return text[1:] if text[:1] == "'" and _quoted(text[1:]) else text


class _Row:
    """One data row's cells by column, collecting its problems."""

    def __init__(self, line: int, cells: dict[str, str]) -> None:
        self.line, self.cells = line, cells
        self.problems: list[Problem] = []
        self.unknown_symbol: str | None = None
        self.ok = True

    def cell(self, column: str) -> str:
        return self.cells.get(column, "")

    def problem(self, column: str, message: str) -> None:
        self.problems.append(Problem(self.line, column, message))
        self.ok = False

    def value(self, column: str, convert: Callable[[str], _T], default: _T) -> _T:
        text = self.cell(column)
        if not text:
            if column in REQUIRED:
                self.problem(column, "required")
            return default
        try:
            return convert(text)
        except _Bad as exc:
            self.problem(column, str(exc))
            return default


def _draft(row: _Row, instruments: Mapping[str, Instrument]) -> Draft | None:
    executed_at = row.value("executed_at", _time, _NEVER)
    quantity = row.value("quantity", _decimal, ZERO)
    price = row.value("price", _decimal, ONE)
    fee = row.value("fee", _decimal, ZERO)
    fx_rate = row.value("fx_rate", _decimal, None)
    kind = row.cell("kind").lower()
    if not kind:
        row.problem("kind", "required")
    elif kind not in _KINDS:
        row.problem("kind", f"{_shown(row.cell('kind'))} is not a kind: use one of {', '.join(_KINDS)}")
    elif kind in _PRICE_REQUIRED and not row.cell("price"):
        row.problem("price", f"required for a {kind}: {_PRICE_REQUIRED[kind]}")
    elif kind == Kind.TRANSFER_IN and row.cell("symbol") and not row.cell("price"):
        row.problem("price", "required for a transfer_in of shares: the cost per share carried over")
    instrument = None
    if symbol := row.cell("symbol"):
        instrument = instruments.get(symbol)
        if instrument is None:
            row.unknown_symbol = symbol
            row.ok = False
    note = row.cell("note")
    if len(note) > _NOTE_LENGTH:
        row.problem("note", f"{len(note)} characters; at most {_NOTE_LENGTH}")
    if not row.ok:
        return None
    return Draft(
        kind=kind,
        executed_at=executed_at,
        quantity=quantity,
        instrument=instrument,
        currency=row.cell("currency").upper(),
        price=price,
        fee=fee,
        fx_rate=fx_rate,
        note=note,
        ref=row.line,
    )


class _Problems(ProblemLog):
    """The import's problems, by line and then column; an unknown symbol's message says on how many rows it is.

    Those rows are counted over the whole file, but only for symbols whose
    problem is listed: once the list is full, no later symbol can be.
    """

    def __init__(self, instruments: Mapping[str, Instrument]) -> None:
        super().__init__(limit=MAX_PROBLEMS, order=_problem_order)
        self.instruments = instruments
        self.symbol_rows: dict[str, int] = {}
        self.unwritten: list[tuple[int, str]] = []  # (index in `kept`, symbol): messages written once the counts are known

    def add_row(self, row: _Row) -> None:
        symbol, found, placeholder = row.unknown_symbol, list(row.problems), None
        if symbol is not None:
            if symbol in self.symbol_rows:
                self.symbol_rows[symbol] += 1
            placeholder = Problem(row.line, "symbol", "")
            found.append(placeholder)
        for i in self.add(found):
            if symbol is not None and self.kept[i] is placeholder:
                self.symbol_rows.setdefault(symbol, 1)
                self.unwritten.append((i, symbol))

    def error(self) -> services.LedgerProblems:
        by_upper = {s.upper(): s for s in self.instruments}
        for i, symbol in self.unwritten:
            message = f"unknown instrument {_shown(symbol)}"
            if symbol.upper() in by_upper:
                message += f" (did you mean {by_upper[symbol.upper()]!r}?)"
            if (rows := self.symbol_rows[symbol]) > 1:
                message += f" (on {rows} rows)"
            self.kept[i] = Problem(self.kept[i].ref, "symbol", message)
        self.unwritten.clear()
        return super().error()


def parse(lines: Iterable[str], *, instruments: Mapping[str, Instrument], problems: _Problems) -> Iterator[Draft]:
    """Read a CSV ledger row by row: yields each sound row's draft (`ref` = line number), and adds every problem found
    to `problems`, in line order.

    `lines` is a text stream opened with newline="" (or any iterable of lines);
    `instruments` maps each known symbol to its instrument.
    """
    header: list[str] | None = None
    for line, cells in csv_records(lines):
        if isinstance(cells, Malformed):
            problems.add([Problem(line, "", cells.message)])
            break
        if header is None:
            header = [c.strip() for c in cells]
            if header:
                header[0] = header[0].removeprefix("\ufeff")
            if header_problems := _header_problems(header):
                problems.add(header_problems)
                return
            continue
        if len(cells) != len(header):
            problems.add([Problem(line, "", f"{len(cells)} cells, but the header has {len(header)} columns")])
            continue
        values = {c: v.strip() for c, v in zip(header, cells, strict=True)}
        for column in _TEXT_COLUMNS:
            if column in values:
                values[column] = _text_in(values[column])
        row = _Row(line, values)
        draft = _draft(row, instruments)
        if not row.ok:
            problems.add_row(row)
        if draft is not None:
            yield draft
    if header is None:
        problems.add([Problem(1, "", f"the file is empty: the first line must be the header {HEADER}")])


@dataclass(frozen=True)
class Malformed:
    """Where a CSV file stops being CSV, and why (`message`)."""

    message: str


def csv_records(lines: Iterable[str], delimiter: str = ",") -> Iterator[tuple[int, list[str] | Malformed]]:
    """Non-blank records with the physical line each starts on (a UTF-8 byte-order mark dropped from line 1);
    a malformed file ends with its line and `Malformed`. The one CSV reader of the importer, the presets and the wizard."""
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    end = 0  # the physical line the previous record ended on
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            yield end + 1, Malformed("the file is not UTF-8 text")
            return
        except csv.Error as exc:
            yield end + 1, Malformed(f"not valid CSV: {exc}")
            return
        start, end = end + 1, reader.line_num
        if any(c.strip() for c in cells):
            if start == 1 and cells:
                cells[0] = cells[0].removeprefix("\ufeff")
            yield start, cells


def _problem_order(problem: Problem) -> tuple[int, int]:
    line = problem.ref if isinstance(problem.ref, int) else 0
    field = _COLUMN_OF_FIELD.get(problem.field, problem.field)
    return line, COLUMNS.index(field) if field in COLUMNS else -1


def describe(problem: Problem) -> str:
    """One line for a person: "line 7, quantity: 'abc' is not a number"."""
    column = _COLUMN_OF_FIELD.get(problem.field, problem.field)
    where = f"line {problem.ref}" if problem.ref is not None else "file"
    return f"{where}, {column}: {problem.message}" if column else f"{where}: {problem.message}"


# --- Writing -------------------------------------------------------------------


def _cells(transaction: Transaction) -> list[str]:
    t, instrument = transaction, transaction.instrument
    base = t.portfolio.base_currency
    default_currency = instrument.quote_currency if instrument else base
    price_is_default = t.price == ONE and t.kind not in _PRICE_REQUIRED and not (t.kind == Kind.TRANSFER_IN and instrument)
    return [
        t.executed_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        t.kind,
        _text_out(instrument.symbol) if instrument else "",
        plain(t.quantity),
        "" if price_is_default else plain(t.price),
        "" if t.fee == ZERO else plain(t.fee),
        "" if t.currency == default_currency else t.currency,
        "" if t.currency == base else plain(t.fx_rate),
        _text_out(t.note),
    ]


def write(transactions: Iterable[Transaction], stream: TextOut) -> int:
    """Write the header and one row per transaction (each with its instrument and portfolio loaded); returns the row count."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for transaction in transactions:
        writer.writerow(_cells(transaction))
        count += 1
    return count


# --- Through the services ------------------------------------------------------


@dataclass(frozen=True)
class CsvImport:
    portfolio: Portfolio
    rows: int
    kinds: Counter[str]
    book: Book
    dry_run: bool

    def kind_counts(self) -> str:
        """'2 buy, 1 sell', in the order of the kinds."""
        return ", ".join(f"{self.kinds[k]} {k}" for k in _KINDS if self.kinds[k])

    def summary(self) -> str:
        """'3 rows → 3 transactions in "Demo" (2 buy, 1 sell)'."""
        kinds = self.kind_counts()
        counted = f"{self.rows} row{'s' if self.rows != 1 else ''} → {self.rows} transaction{'s' if self.rows != 1 else ''}"
        return f'{counted} in "{self.portfolio.name}"' + (f" ({kinds})" if kinds else "")

    def holdings(self) -> list[tuple[str, Decimal, Decimal]]:
        """Symbol, quantity and average cost (instrument currency, to the stored precision) of each open position."""
        return [(s, p.quantity, (p.cost / p.quantity).quantize(_STORED)) for s, p in sorted(self.book.open_positions().items())]

    def cash(self) -> list[tuple[str, Decimal]]:
        return sorted(self.book.cash_balances().items())


def instruments_by_symbol() -> dict[str, Instrument]:
    return {i.symbol: i for i in Instrument.objects.all()}


def csv_import(*, portfolio: Portfolio, lines: Iterable[str], dry_run: bool = False) -> CsvImport:
    """Import a CSV ledger all or nothing, streaming; raises LedgerProblems (refs are line numbers, in order) listing the
    first MAX_PROBLEMS problems, with `total` counting all of them.

    Rows that did not parse keep the ledger from being folded; each parsed row's own checks still apply.
    """
    instruments = instruments_by_symbol()
    problems = _Problems(instruments)
    kinds: Counter[str] = Counter()

    def counted(drafts: Iterable[Draft]) -> Iterator[Draft]:
        for draft in drafts:
            kinds[draft.kind] += 1
            yield draft

    drafts = counted(parse(lines, instruments=instruments, problems=problems))
    result = services.transactions_import_stream(portfolio=portfolio, drafts=drafts, problems=problems, dry_run=dry_run)
    return CsvImport(portfolio=portfolio, rows=result.created, kinds=kinds, book=result.book, dry_run=dry_run)


def ledger_rows(*, portfolio: Portfolio) -> QuerySet[Transaction]:
    """The portfolio's ledger, oldest first, ready for `write`."""
    return Transaction.objects.filter(portfolio=portfolio).select_related("instrument", "portfolio").order_by("executed_at", "id")


def csv_export(*, portfolio: Portfolio, stream: TextOut) -> int:
    return write(ledger_rows(portfolio=portfolio).iterator(chunk_size=2000), stream)
