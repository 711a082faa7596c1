"""A broker's export → our CSV ledger lines → `csvio.csv_import`, with every problem at the line of the BROKER's file.

`BrokerFile` streams: it reads the export row by row and yields ledger lines
(header first), remembering for each ledger line the broker line it came from
(one broker row may give several ledger rows, e.g. a Coinbase Convert is a sell
and a buy). `broker_import` feeds those lines to the importer unchanged and
maps the line of every problem back.

A row the preset cannot map is written as a placeholder row with no kind.
The importer then counts one problem there, as for any of its own bad rows,
and so does not check the ledger without that row (a missing buy would read
as an oversell later on). `broker_import` replaces that problem with the
preset's own message.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC

from portfolio import csvio
from portfolio.ledger import plain
from portfolio.models import Portfolio
from portfolio.services import LedgerProblems, Problem, ProblemLog

from .base import Context, LedgerRow, Row, RowError, RowPreset, Skip

# Lines searched for the header: exports such as Coinbase's start with a few lines about the account.
HEADER_SEARCH_LINES = 10
# Skipped lines listed in the preview; the rest are counted by reason.
MAX_SKIPPED_LISTED = 200
# Exactly one importer problem ("kind: required"), whatever the portfolio.
_PLACEHOLDER = "1970-01-01T00:00:00Z,,,1,,,,,"
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class UnknownFormat(ValueError):
    """No preset recognises the file's header (or the chosen one does not)."""


@dataclass
class Skipped:
    line: int
    reason: str


@dataclass
class BrokerFile:
    """One broker export being converted. Iterate `ledger_lines()` once; the counts fill in as it is read."""

    lines: Iterable[str]
    preset: RowPreset
    context: Context
    delimiter: str = ","
    header_line: int = 0
    rows_read: int = 0
    rows_written: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    problems: ProblemLog = field(default_factory=lambda: ProblemLog(limit=csvio.MAX_PROBLEMS))
    # broker line of each ledger line (index 0 = our header = line 1); 'I' holds 4-byte lines compactly
    source_line: array[int] = field(default_factory=lambda: array("I", [0]))
    placeholders: set[int] = field(default_factory=set)  # our line numbers

    def ledger_lines(self) -> Iterator[str]:
        records = csvio.csv_records(self.lines, self.delimiter)
        header = _find_header(records, self.preset, self.problems)
        if header is None:
            return
        self.header_line, names = header
        self.source_line[0] = self.header_line
        yield csvio.HEADER + "\n"
        for line, cells in records:
            if isinstance(cells, csvio.Malformed):  # the file ends in a malformed record: keep the import from passing
                self.problems.add([Problem(line, "", cells.message)])
                self.source_line.append(line)
                self.placeholders.add(len(self.source_line))
                yield _PLACEHOLDER + "\n"
                return
            if _repeated_header(cells, names):
                continue  # IBKR writes a header per account or section
            self.rows_read += 1
            try:
                mapped = self.preset.map_row(Row(names, cells), self.context)
            except RowError as exc:
                self.problems.add([Problem(line, exc.column, exc.message)])
                self.source_line.append(line)
                self.placeholders.add(len(self.source_line))
                yield _PLACEHOLDER + "\n"
                continue
            if isinstance(mapped, Skip):
                self.skipped_by_reason[mapped.reason] += 1
                if len(self.skipped) < MAX_SKIPPED_LISTED:
                    self.skipped.append(Skipped(line, mapped.reason))
                continue
            for row in mapped:
                self.source_line.append(line)
                self.rows_written += 1
                yield render(row)

    def broker_line(self, our_line: object) -> object:
        if isinstance(our_line, int) and 1 <= our_line <= len(self.source_line):
            return self.source_line[our_line - 1]
        return our_line


@dataclass(frozen=True)
class BrokerImport:
    result: csvio.CsvImport
    file: BrokerFile

    def summary(self) -> str:
        f = self.file
        skipped = sum(f.skipped_by_reason.values())
        return f"{f.preset.label}: {f.rows_read} row{'s' if f.rows_read != 1 else ''} read, {skipped} skipped; " + self.result.summary()


def broker_import(*, portfolio: Portfolio, file: BrokerFile, dry_run: bool = True) -> BrokerImport:
    """Import a broker export through `csvio.csv_import`, all or nothing. Raises LedgerProblems whose refs are the broker
    file's lines: the preset's problems and the importer's, merged in line order, the first MAX_PROBLEMS listed."""
    try:
        result = csvio.csv_import(portfolio=portfolio, lines=file.ledger_lines(), dry_run=dry_run)
    except LedgerProblems as exc:
        raise _merged(file, exc) from None
    if file.problems.total:  # pragma: no cover - every preset problem leaves a placeholder row the importer refuses
        raise file.problems.error()
    return BrokerImport(result=result, file=file)


def _merged(file: BrokerFile, exc: LedgerProblems) -> LedgerProblems:
    if not file.header_line:  # nothing reached the importer; its "the file is empty" would mislead
        return file.problems.error()
    theirs = [Problem(file.broker_line(p.ref), p.field, p.message) for p in exc.problems if p.ref not in file.placeholders]
    ours = file.problems.kept
    merged = sorted([*ours, *theirs], key=lambda p: p.ref if isinstance(p.ref, int) else 0)  # stable: ours first on a line
    total = exc.total - len(file.placeholders) + file.problems.total
    return LedgerProblems(merged[: csvio.MAX_PROBLEMS], total=total)


def render(row: LedgerRow) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(
        [
            row.executed_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            row.kind,
            _text(row.symbol),
            plain(row.quantity),
            "" if row.price is None else plain(row.price),
            "" if row.fee is None else plain(row.fee),
            row.currency,
            "" if row.fx_rate is None else plain(row.fx_rate),
            _text(row.note),
        ]
    )
    return out.getvalue()


def _text(text: str) -> str:
    """As csvio writes free text (docs/csv-format.md, "Formulas are never written"), so reading gives back `text`."""
    quoted = text.startswith(_FORMULA_START) or (text[:1] == "'" and (text[1:2] == "'" or text[1:].startswith(_FORMULA_START)))
    return f"'{text}" if quoted else text


def _find_header(
    records: Iterator[tuple[int, list[str] | csvio.Malformed]], preset: RowPreset, problems: ProblemLog
) -> tuple[int, list[str]] | None:
    for _, (line, cells) in zip(range(HEADER_SEARCH_LINES), records, strict=False):
        if isinstance(cells, csvio.Malformed):
            problems.add([Problem(line, "", cells.message)])
            return None
        names = [c.strip() for c in cells]
        if preset.detect(names):
            return line, names
    problems.add([Problem(1, "", f"no {preset.label} header in the first {HEADER_SEARCH_LINES} lines")])
    return None


def _repeated_header(cells: list[str], names: list[str]) -> bool:
    return [c.strip() for c in cells] == names
