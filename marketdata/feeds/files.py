"""Recorded files: read line by line through a format's parser, in time order, with bad lines reported.

Every recorded format is a module in this package with a class of this shape
(see `Format`): constructed from options, it turns one line into normalized
events or raises `BadLine`. `FileSource` does the rest for all of them: opens
plain, .gz or .zip files, numbers the lines, restores exchange-time order
within the format's `reorder` window, drops events whose time goes backwards,
and reports every bad line as `file:line: kind: detail` to `Problems`.

Clocks: a format replays on the exchange's clock (the time the exchange stamped) or, where each
line carries one, on the recorder's receive clock. `clocks` lists those it has, its default first;
the `clock` option (`replay_feed --clock`) chooses. A format with both also keeps `offsets`, a
`ClockOffsets` of receive − exchange over the lines that carry both, for the summary.
"""

from __future__ import annotations

import gzip
import heapq
import io
import logging
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar, Protocol

from marketdata.events import MarketEvent, Trade
from marketdata.symbols import SymbolMap

log = logging.getLogger(__name__)

# Bad lines of one kind logged per file before the rest are only counted.
LOGGED_PER_KIND = 10

EXCHANGE, RECEIVE = "exchange", "receive"
# Options every format takes besides its own: `clock` (exchange or receive).
COMMON_OPTIONS = frozenset({"clock"})


class BadLine(ValueError):
    """A line that cannot be used. `kind` is what the summary counts by: bad json, wrong column count, ..."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class FeedError(Exception):
    """Stops a replay: a bad line under --strict, or a file that cannot be read at all."""


class PassOver(Exception):  # not an error: control flow for lines that are not market data
    """A line that is fine but carries no market data (a recorder's connect or HTTP line): counted by `kind`, never logged."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Problems:
    """Bad lines of one run, counted by kind. With `strict` the first one stops the run."""

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.skipped: Counter[str] = Counter()
        self.passed_over: Counter[str] = Counter()  # lines that carry no market data, by kind (see PassOver)
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


class ClockOffsets:
    """receive − exchange time over the lines that carry both, to the millisecond (a histogram, so any length of file fits)."""

    def __init__(self) -> None:
        self.ms: Counter[int] = Counter()

    def note(self, received: datetime, exchange: datetime) -> None:
        self.ms[(received - exchange) // _MS] += 1

    def note_us(self, received_us: int, exchange_us: int) -> None:
        self.ms[(received_us - exchange_us) // 1000] += 1

    def clear(self) -> None:
        self.ms.clear()

    @staticmethod
    def summary(offsets: Iterable[ClockOffsets]) -> str | None:
        """`median +1.27 s, max +2.50 s (3,120 lines)` over all of them, or None when no line had both clocks."""
        total: Counter[int] = Counter()
        for each in offsets:
            total.update(each.ms)
        count = sum(total.values())
        if not count:
            return None
        ordered = sorted(total)
        seen, median = 0, ordered[-1]
        for ms in ordered:
            seen += total[ms]
            if seen * 2 >= count:
                median = ms
                break
        return f"median {median / 1000:+.2f} s, min {ordered[0] / 1000:+.2f} s, max {ordered[-1] / 1000:+.2f} s ({count:,} lines)"


_MS = timedelta(milliseconds=1)


class Format(Protocol):
    """One recorded-file format (one module per format in `marketdata.feeds`)."""

    name: ClassVar[str]  # the `--format` value
    # How far lines may run ahead of exchange time (captures are in receive order); 0 for files written in order.
    reorder: ClassVar[timedelta]
    # The clocks it can replay on (EXCHANGE, RECEIVE), its default first; the `clock` option chooses.
    clocks: ClassVar[tuple[str, ...]]

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None: ...

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        """Whether a file whose first non-empty line is `first_line` is in this format (for auto-detection)."""
        ...

    def parse(self, line: str) -> Iterable[MarketEvent]:
        """Events of one line (none for lines that carry nothing, e.g. heartbeats); raises BadLine, or PassOver.

        A format that keeps state between lines (the latest exchange time, a sequence
        number) also defines `reset()`, called before each pass over the file (--loop),
        and one that holds something open or counted across a pass (LOBSTER's orderbook
        file beside the messages) defines `close()`, called after each pass, however it ended;
        one that holds lines back (a snapshot spread over rows) `finish()`, which returns what
        it holds at the end of the file. One with a receive clock keeps `offsets`
        (ClockOffsets) and `clock`, the clock chosen.
        """
        ...


def clock_choose(cls: type[Format], path: Path, options: Mapping[str, str]) -> str:
    """The clock the `clock` option asks for, else the format's default; FeedError for one it does not have."""
    clock = options.get("clock") or cls.clocks[0]
    if clock not in (EXCHANGE, RECEIVE):
        raise FeedError(f"option clock={clock!r}: choose {EXCHANGE} or {RECEIVE}")
    if clock not in cls.clocks:
        raise FeedError(
            f"{path}: --format {cls.name} has no {clock} clock (its lines carry only the {' and '.join(cls.clocks)} time); "
            f"replay it without --clock {clock}"
        )
    return clock


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


class NamedSymbol:
    """The one symbol a whole file is about (from `--symbol` or the file's name), resolved once.

    Unknown, each of its lines is skipped and counted in the symbol map as a feed counts each event
    (`skipped`); resolving it here already counted the first.
    """

    def __init__(self, raw: str, symbols: SymbolMap, *, source: str) -> None:
        self.raw, self._symbols, self._source = raw, symbols, source
        self.symbol = symbols.resolve(raw, source=source)
        self._counted_ahead = self.symbol is None

    def skipped(self) -> tuple[()]:
        """Count one line of the unknown symbol; no events."""
        if self._counted_ahead:
            self._counted_ahead = False
        else:
            self._symbols.resolve(self.raw, source=self._source)
        return ()


class FileSource:
    """The events of one file in exchange-time order; iterable again from the start (for --loop)."""

    def __init__(self, *, path: Path, format: Format, problems: Problems) -> None:
        self.path = path
        self.format = format
        self.problems = problems
        self.lines = 0

    @property
    def clock(self) -> str:
        """The clock this file replays on."""
        return getattr(self.format, "clock", None) or self.format.clocks[0]

    @property
    def offsets(self) -> ClockOffsets | None:
        return getattr(self.format, "offsets", None)

    def __iter__(self) -> Iterator[MarketEvent]:
        # A backfill trade (sent again on subscribing, from before the session) older than what has gone
        # out already passes as it is: it is kept out of prices and candles, so it is no straggler.
        window = self.format.reorder
        last: datetime | None = None
        if not window:
            for number, event in self._parsed():
                if last is not None and event.ts < last:
                    if type(event) is Trade and event.backfill:
                        yield event
                        continue
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
                if type(event) is Trade and event.backfill:
                    yield event
                    continue
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
        number = 0
        try:
            with open_text(self.path) as stream:
                for number, line in enumerate(stream, 1):
                    self.lines = number
                    if not line.strip():
                        continue
                    try:
                        # A list, so that a generator's errors surface here, at their line.
                        events = list(parse(line.rstrip("\r\n")))
                    except BadLine as problem:
                        report(self.where(number), problem)
                        continue
                    except PassOver as over:
                        self.problems.passed_over[over.kind] += 1
                        continue
                    except FeedError:
                        raise  # the file as a whole cannot be used
                    except Exception as exc:  # a parser's bug must cost one line, not the run
                        log.debug("%s: parser error", self.where(number), exc_info=True)
                        report(self.where(number), unexpected(exc))
                        continue
                    for event in events:
                        yield number, event
            finish = getattr(self.format, "finish", None)
            if finish is not None:
                try:
                    held = list(finish())
                except BadLine as problem:
                    report(self.where(number), problem)
                except FeedError:
                    raise
                except Exception as exc:
                    report(self.where(number), unexpected(exc))
                else:
                    for event in held:
                        yield number, event
        except (OSError, UnicodeDecodeError, zipfile.BadZipFile, EOFError) as exc:
            raise FeedError(f"{self.where(self.lines)}: cannot read: {exc}") from exc
        finally:
            close = getattr(self.format, "close", None)
            if close is not None:
                close()


def unexpected(exc: Exception) -> BadLine:
    """An exception a parser did not mean to raise, as the bad line it makes."""
    return BadLine("parser error", f"{type(exc).__name__}: {exc}")


def clock_summary(sources: Sequence[FileSource]) -> str:
    """`clock: exchange; receive − exchange: median +1.27 s, ...` for a run's summary line."""
    clocks = sorted({source.clock for source in sources})
    text = f"clock: {', '.join(clocks) or EXCHANGE}"
    offsets = ClockOffsets.summary(source.offsets for source in sources if source.offsets is not None)
    return f"{text}; receive − exchange: {offsets}" if offsets else text
