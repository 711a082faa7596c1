"""The import wizard's work, apart from its pages: what an upload is, how it is read, fixed and checked.

An upload (`ImportUpload`) holds the file's bytes, the format chosen for it
("livefolio", a preset's name, or "generic" with a column mapping) and the rows
the user fixed in the browser (`edits`, by the line each record starts on).
Every step reads the bytes again as a stream, with the edits applied record by
record (`edited_lines`): an edited record is written back on its first line and
a skipped one is blanked, each padded to the lines it spanned, so every other
line keeps its number and problems point at the user's own file.

`check` runs the import (a dry run or for real) through the one importer for
the format (`csvio.csv_import` or `brokers.broker_import`), which lists format
and ledger problems in one pass, by line.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.utils import timezone

from portfolio import brokers, csvio
from portfolio.brokers import PRESETS, BrokerFile, ColumnMapping, GenericCsv, RowPreset
from portfolio.models import ImportMapping, ImportUpload, Portfolio
from portfolio.services import LedgerProblems, Problem

OURS = "livefolio"
MAPPED = "generic"
UPLOAD_TTL = timedelta(hours=24)  # an upload left in the wizard longer than this is deleted
PREVIEW_ROWS = 20  # rows shown as they will be recorded
FIX_ROWS = 50  # problem rows offered for fixing at once
MAX_EDITS = 1000  # rows fixed per upload, over all rounds
DELIMITERS = (",", ";", "\t", "|")
_SAMPLE_RECORDS = 10  # records read to find a header


# --- Reading an upload -----------------------------------------------------------


def raw_lines(upload: ImportUpload) -> Iterator[str]:
    """The upload's physical lines, decoded as they are read."""
    return io.TextIOWrapper(io.BytesIO(bytes(upload.data)), encoding="utf-8", newline="")


def delimiter_of(upload: ImportUpload) -> str:
    if upload.format == MAPPED:
        return str(upload.mapping.get("delimiter") or ",")
    return ","


def edits_of(upload: ImportUpload) -> dict[int, dict[str, Any]]:
    return {int(line): edit for line, edit in (upload.edits or {}).items()}


def edited_lines(lines: Iterable[str], edits: Mapping[int, Mapping[str, Any]], delimiter: str = ",") -> Iterator[str]:
    """`lines` with each edited record replaced and each skipped one blanked, every record keeping its line count."""
    source = iter(lines)
    if not edits:
        yield from source
        return
    buffer: list[str] = []

    def fed() -> Iterator[str]:
        for line in source:
            buffer.append(line)
            yield line

    reader = csv.reader(fed(), delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            next(reader)
        except StopIteration:
            break
        except (csv.Error, UnicodeDecodeError):  # the importer reports it: pass the rest through untouched
            yield from buffer
            yield from source
            return
        edit, spanned = edits.get(start), len(buffer)
        if edit is None:
            yield from buffer
        elif edit.get("skip"):
            yield from ["\n"] * spanned
        else:
            out = io.StringIO()
            csv.writer(out, delimiter=delimiter, lineterminator="\n").writerow(edit.get("cells", []))
            yield out.getvalue()
            yield from ["\n"] * (spanned - 1)
        start += spanned
        buffer.clear()


def records(lines: Iterable[str], delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Non-blank records with the line each starts on; stops quietly at malformed CSV (the importer reports it)."""
    for line, cells in csvio.csv_records(lines, delimiter):
        if isinstance(cells, csvio.Malformed):
            return
        yield line, cells


# --- Detecting the format ----------------------------------------------------------


@dataclass(frozen=True)
class Detected:
    ours: bool  # the header is our own CSV ledger's
    presets: list[RowPreset]  # every preset that recognises the file
    delimiter: str  # the likeliest, for mapping columns
    header: list[str]  # the first record, read with `delimiter`
    signature: str  # what a remembered mapping is found by
    saved: ImportMapping | None  # the user's mapping for this header

    @property
    def suggested(self) -> str:
        if self.ours:
            return OURS
        if self.saved is not None:
            return MAPPED
        return self.presets[0].name if len(self.presets) == 1 else MAPPED


def signature(header: Iterable[str], delimiter: str) -> str:
    return hashlib.sha256("\x1f".join([delimiter, *(h.strip() for h in header)]).encode()).hexdigest()


def _sniff(first: str) -> str:
    counts = {d: len(next(csv.reader([first], delimiter=d), [])) for d in DELIMITERS}
    return max(DELIMITERS, key=lambda d: (counts[d], -DELIMITERS.index(d)))


def detect(upload: ImportUpload) -> Detected:
    first = next((line for line in raw_lines(upload) if line.strip()), "")
    delimiter = _sniff(first) if first else ","
    header = [c.strip() for c in next(records(raw_lines(upload), delimiter), (0, []))[1]]
    ours_header = [c.strip() for c in next(records(raw_lines(upload)), (0, []))[1]]
    ours = bool(ours_header) and set(ours_header) <= set(csvio.COLUMNS) and set(csvio.REQUIRED) <= set(ours_header)
    sig = signature(header, delimiter)
    saved = ImportMapping.objects.filter(owner_id=upload.owner_id, signature=sig).first()
    return Detected(
        ours=ours,
        presets=[] if ours else brokers.detect_all(raw_lines(upload)),
        delimiter=delimiter,
        header=header,
        signature=sig,
        saved=saved,
    )


def mapping_remember(*, upload: ImportUpload, detected: Detected, mapping: ColumnMapping) -> ImportMapping:
    saved, _ = ImportMapping.objects.update_or_create(
        owner_id=upload.owner_id, signature=detected.signature, defaults={"header": detected.header, "mapping": mapping.to_dict()}
    )
    return saved


def preset_of(upload: ImportUpload) -> RowPreset | None:
    """The preset the upload is read with; None for our own format."""
    if upload.format == OURS:
        return None
    if upload.format == MAPPED:
        return GenericCsv(ColumnMapping.from_dict(upload.mapping))
    return PRESETS[upload.format]


def label_of(upload: ImportUpload) -> str:
    if upload.format == OURS:
        return "Livefolio CSV"
    if upload.format == MAPPED:
        return "Your column mapping"
    preset = PRESETS.get(upload.format)
    return preset.label if preset else upload.format


def header_record(upload: ImportUpload) -> tuple[int, list[str]]:
    """The line and the column names of the header the chosen format reads."""
    preset, delimiter = preset_of(upload), delimiter_of(upload)
    for line, cells in itertools.islice(records(raw_lines(upload), delimiter), _SAMPLE_RECORDS):
        names = [c.strip() for c in cells]
        if preset is None or preset.detect(names):
            return line, names
    return 0, []


# --- Checking and importing -------------------------------------------------------


@dataclass
class Outcome:
    """A check (or an import) of the upload as it stands."""

    problems: list[Problem] = field(default_factory=list)
    total: int = 0  # problems found, listed or not
    rows: list[tuple[object, dict[str, str]]] = field(default_factory=list)  # (file line, our columns) for the first rows
    holdings: list[tuple[str, Decimal, Decimal]] = field(default_factory=list)
    cash: list[tuple[str, Decimal]] = field(default_factory=list)
    summary: str = ""
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (file line, reason): rows a preset leaves out on purpose
    skipped_total: int = 0

    @property
    def ok(self) -> bool:
        return not self.total

    def messages(self) -> list[str]:
        return [csvio.describe(p) for p in self.problems]

    def lines(self) -> list[int]:
        """The data lines with problems, in order (the header's problems are fixed by choosing the format)."""
        return sorted({p.ref for p in self.problems if isinstance(p.ref, int) and p.ref > 1})


class _Shown:
    """The first ledger lines that pass by, kept for the preview."""

    def __init__(self, limit: int) -> None:
        self.limit, self.lines = limit, list[str]()

    def tap(self, lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            if len(self.lines) <= self.limit:  # the header and `limit` rows
                self.lines.append(line)
            yield line


def _rows(shown: list[str], line_of: Callable[[int], object], hidden: set[int]) -> list[tuple[object, dict[str, str]]]:
    """The shown ledger lines as rows of our columns, with the file's line; `hidden` = ledger lines standing in for rows
    a preset could not map (listed as problems instead)."""
    out: list[tuple[object, dict[str, str]]] = []
    header: list[str] | None = None
    for line, cells in records(shown):
        if header is None:
            header = [c.strip() for c in cells]
        elif len(cells) == len(header) and line not in hidden:
            out.append((line_of(line), dict(zip(header, cells, strict=True))))
    return out[:PREVIEW_ROWS]


def check(*, upload: ImportUpload, portfolio: Portfolio, dry_run: bool = True) -> Outcome:
    """Read the upload (edits applied) through the importer for its format; nothing is written on a dry run or when
    any problem is found."""
    lines = edited_lines(raw_lines(upload), edits_of(upload), delimiter_of(upload))
    shown, preset, outcome = _Shown(PREVIEW_ROWS), preset_of(upload), Outcome()
    file: _TappedFile | None = None
    try:
        if preset is None:
            result = csvio.csv_import(portfolio=portfolio, lines=shown.tap(lines), dry_run=dry_run)
            outcome.summary = result.summary()
        else:
            context = brokers.context_for(portfolio=portfolio)
            file = _TappedFile(lines=lines, preset=preset, context=context, delimiter=delimiter_of(upload), shown=shown)
            imported = brokers.broker_import(portfolio=portfolio, file=file, dry_run=dry_run)
            result, outcome.summary = imported.result, imported.summary()
    except LedgerProblems as exc:
        outcome.problems, outcome.total = exc.problems, exc.total
    else:
        outcome.holdings, outcome.cash = result.holdings(), result.cash()
    # Our own rows are the file's lines; a preset's are mapped back to the broker's.
    if file is not None:
        outcome.rows = _rows(shown.lines, file.broker_line, file.placeholders)
    else:
        outcome.rows = _rows(shown.lines, lambda n: n, set())
    if file is not None:
        outcome.skipped = [(s.line, s.reason) for s in file.skipped]
        outcome.skipped_total = sum(file.skipped_by_reason.values())
    return outcome


@dataclass
class _TappedFile(BrokerFile):
    shown: _Shown = field(default_factory=lambda: _Shown(PREVIEW_ROWS))

    def ledger_lines(self) -> Iterator[str]:
        return self.shown.tap(super().ledger_lines())


# --- Fixing rows -------------------------------------------------------------------


def rows_at(upload: ImportUpload, lines: Iterable[int]) -> dict[int, list[str]]:
    """The cells of the records starting on `lines` (edits applied), as the user will edit them."""
    wanted = set(lines)
    found: dict[int, list[str]] = {}
    if not wanted:
        return found
    last = max(wanted)
    for line, cells in records(edited_lines(raw_lines(upload), edits_of(upload), delimiter_of(upload)), delimiter_of(upload)):
        if line in wanted:
            found[line] = cells
        if line >= last:
            break
    return found


def edits_apply(*, upload: ImportUpload, changes: Mapping[int, Mapping[str, Any]]) -> int:
    """Merge fixed rows into the upload; returns how many changed. A cell's line breaks become spaces, so every record
    still spans the lines it did."""
    edits = {str(line): edit for line, edit in (upload.edits or {}).items()}
    changed = 0
    for line, change in changes.items():
        if str(line) not in edits and len(edits) >= MAX_EDITS:
            break
        if change.get("skip"):
            edit: dict[str, Any] = {"skip": True}
        else:
            edit = {"cells": [" ".join(str(c).splitlines()) for c in change.get("cells", [])]}
        if edits.get(str(line)) != edit:
            edits[str(line)] = edit
            changed += 1
    upload.edits = edits
    upload.save(update_fields=["edits"])
    return changed


def uploads_expire(*, now: Any = None) -> int:
    """Delete uploads left in the wizard longer than UPLOAD_TTL; returns how many."""
    deleted, _ = ImportUpload.objects.filter(created_at__lt=(now or timezone.now()) - UPLOAD_TTL).delete()
    return deleted
