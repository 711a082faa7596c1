"""Recorded files: read line by line through a format's parser, in time order, with bad lines reported.

Every recorded format is a module in this package with a class of this shape
(see `Format`): constructed from options, it turns one line into normalized
events or raises `BadLine`. `FileSource` does the rest for all of them: opens
plain, .gz or .zip files, numbers the lines, restores exchange-time order
within the format's `reorder` window, drops events whose time goes backwards,
and reports every bad line as `file:line: kind: detail` to `Problems`.
"""

from __future__ import annotations

import gzip
import heapq
import io
import logging
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar, Protocol

from marketdata.events import MarketEvent
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

# Bad lines of one kind logged per file before the rest are only counted.
LOGGED_PER_KIND = 10


class BadLine(ValueError):
    """A line that cannot be used. `kind` is what the summary counts by: bad json, wrong column count, ..."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class FeedError(Exception):
    """Stops a replay: a bad line under --strict, or a file that cannot be read at all."""


class Problems:
    """Bad lines of one run, counted by kind. With `strict` the first one stops the run."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.skipped: Counter[str] = Counter()
        self._logged: Counter[tuple[str, str]] = Counter()

    def report(self, where: str, problem: BadLine) -> None:
        if self.strict:
            raise FeedError(f"{where}: {problem}")
        self.skipped[problem.kind] += 1
        file = where.rpartition(":")[0]
        self._logged[(file, problem.kind)] += 1
        logged = self._logged[(file, problem.kind)]
        if logged <= LOGGED_PER_KIND:
            suffix = f" (further '{problem.kind}' lines in {file} are counted, not logged)" if logged == LOGGED_PER_KIND else ""
            log.warning("%s: %s; line skipped%s", where, problem, suffix)

    def summary(self) -> str:
        return ", ".join(f"{kind} {count:,}" for kind, count in sorted(self.skipped.items())) or "none"


class Format(Protocol):
    """One recorded-file format (one module per format in `marketdata.feeds`)."""

    name: ClassVar[str]  # the `--format` value
    # How far lines may run ahead of exchange time (captures are in receive order); 0 for files written in order.
    reorder: ClassVar[timedelta]

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None: ...

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        """Whether a file whose first non-empty line is `first_line` is in this format (for auto-detection)."""
        ...

    def parse(self, line: str) -> Iterable[MarketEvent]:
        """Events of one line (none for lines that carry nothing, e.g. heartbeats); raises BadLine.

        A format that keeps state between lines (the latest exchange time, a sequence
        number) also defines `reset()`, called before each pass over the file (--loop),
        and one that holds something open or counted across a pass (LOBSTER's orderbook
        file beside the messages) defines `close()`, called after each pass, however it ended.
        """
        ...


def open_text(path: Path) -> io.TextIOBase:
    """A text stream of `path`: plain, gzip (.gz) or a zip holding one file, or one .csv beside notes
    (Binance's daily .zip; HistData's, which adds a .txt status report)."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    if path.suffix == ".zip":
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.namelist() if not m.endswith("/")]
        if len(members) > 1:
            members = [m for m in members if m.lower().endswith(".csv")]
        if len(members) != 1:
            raise FeedError(f"{path}: expected one file (or one .csv) in the zip, found {len(archive.namelist())} files")
        return io.TextIOWrapper(archive.open(members[0]), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def first_line(path: Path) -> str:
    """The first non-empty line of a file, for sniffing its format."""
    try:
        with open_text(path) as stream:
            for line in stream:
                if line.strip():
                    return line.strip()
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile, EOFError) as exc:
        raise FeedError(f"{path}: cannot read: {exc}") from exc
    return ""


class FileSource:
    """The events of one file in exchange-time order; iterable again from the start (for --loop)."""

    def __init__(self, *, path: Path, format: Format, problems: Problems) -> None:
        self.path = path
        self.format = format
        self.problems = problems
        self.lines = 0

    def __iter__(self) -> Iterator[MarketEvent]:
        window = self.format.reorder
        last: datetime | None = None
        if not window:
            for number, event in self._parsed():
                if last is not None and event.ts < last:
                    self.problems.report(
                        self.where(number), BadLine("time goes backwards", f"{event.ts.isoformat()} after {last.isoformat()}")
                    )
                    continue
                last = event.ts
                yield event
            return
        # Receive order differs from exchange time by network jitter: hold events in a heap
        # for `window` of exchange time and release them in order; later stragglers are bad lines.
        held: list[tuple[datetime, int, MarketEvent]] = []
        newest: datetime | None = None
        for n, (number, event) in enumerate(self._parsed()):
            if last is not None and event.ts < last:
                self.problems.report(self.where(number), BadLine("time goes backwards", f"{event.ts.isoformat()} after {last.isoformat()}"))
                continue
            heapq.heappush(held, (event.ts, n, event))
            if newest is None or event.ts > newest:
                newest = event.ts
            while held and held[0][0] <= newest - window:
                last, _, ready = heapq.heappop(held)
                yield ready
        while held:
            last, _, ready = heapq.heappop(held)
            yield ready

    def where(self, line: int) -> str:
        return f"{self.path}:{line}"

    def _parsed(self) -> Iterator[tuple[int, MarketEvent]]:
        reset = getattr(self.format, "reset", None)
        if reset is not None:
            reset()
        parse, report = self.format.parse, self.problems.report
        try:
            with open_text(self.path) as stream:
                for number, line in enumerate(stream, 1):
                    self.lines = number
                    if not line.strip():
                        continue
                    try:
                        events = parse(line.rstrip("\r\n"))
                    except BadLine as problem:
                        report(self.where(number), problem)
                        continue
                    for event in events:
                        yield number, event
        except (OSError, UnicodeDecodeError, zipfile.BadZipFile, EOFError) as exc:
            raise FeedError(f"{self.where(self.lines)}: cannot read: {exc}") from exc
        finally:
            close = getattr(self.format, "close", None)
            if close is not None:
                close()
