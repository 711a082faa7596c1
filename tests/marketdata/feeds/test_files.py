"""FileSource: lines through a format, in time order, every bad line reported with file:line and nothing else lost."""

import gzip
import logging
import zipfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import ClassVar

import pytest

from marketdata.events import MarketEvent, Trade
from marketdata.feeds.files import LOGGED_PER_KIND, BadLine, ClockOffsets, FeedError, FileSource, Problems, first_line
from marketdata.symbols import SymbolMap

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class SecondsCsv:
    """A toy format: `seconds,price` per line."""

    name: ClassVar[str] = "toy"
    reorder: ClassVar[timedelta] = timedelta(0)
    clocks: ClassVar[tuple[str, ...]] = ("exchange",)

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        pass

    @classmethod
    def sniff(cls, path: Path, first_line: str) -> bool:
        return True

    def parse(self, line: str) -> Iterable[MarketEvent]:
        fields = line.split(",")
        if len(fields) != 2:
            raise BadLine("wrong column count", f"{len(fields)} columns, expected 2")
        if not fields[1].replace(".", "", 1).isdigit():
            raise BadLine("bad number", f"price {fields[1]!r} is not a number")
        return (Trade("X", T0 + timedelta(seconds=int(fields[0])), Decimal(fields[1]), Decimal(1), "toy"),)


class Jittery(SecondsCsv):
    reorder: ClassVar[timedelta] = timedelta(seconds=2)


def source(path: Path, fmt: type[SecondsCsv] = SecondsCsv, *, strict: bool = False) -> FileSource:
    return FileSource(path=path, format=fmt(path=path, symbols=SymbolMap(instruments=[]), options={}), problems=Problems(strict=strict))


def seconds(events: Iterable[MarketEvent]) -> list[int]:
    return [int((e.ts - T0).total_seconds()) for e in events]


def test_bad_lines_are_reported_with_file_and_line_and_the_rest_come_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("1,10\n2,11,extra\n3,abc\n\n4,12\n2,13\n5,14")  # the last line lacks its newline: still read
    src = source(path)

    assert seconds(src) == [1, 4, 5]
    assert src.problems.skipped == {"wrong column count": 1, "bad number": 1, "time goes backwards": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert f"{path}:2: wrong column count: 3 columns, expected 2; line skipped" in messages
    assert f"{path}:3: bad number: price 'abc' is not a number; line skipped" in messages
    assert any(m.startswith(f"{path}:6: time goes backwards: 2026-01-01T00:00:02+00:00 after 2026-01-01T00:00:04") for m in messages)


def test_strict_stops_at_the_first_bad_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("1,10\n2,x\n3,12\n")
    with pytest.raises(FeedError, match=rf"^{path}:2: bad number: price 'x' is not a number$"):
        list(source(path, strict=True))


def test_a_format_with_a_reorder_window_sorts_late_lines_within_it_and_reports_those_beyond(tmp_path: Path) -> None:
    path = tmp_path / "capture.csv"
    path.write_text("10,1\n9,1\n12,1\n11,1\n15,1\n11,1\n16,1\n")
    src = source(path, Jittery)
    assert seconds(src) == [9, 10, 11, 12, 15, 16]
    assert src.problems.skipped == {"time goes backwards": 1}  # line 6: 11 s, after 12 s went out


def test_gzip_and_single_file_zip_read_like_the_plain_file(tmp_path: Path) -> None:
    text = "1,10\n2,11\n"
    (tmp_path / "a.csv").write_text(text)
    with gzip.open(tmp_path / "a.csv.gz", "wt") as gz:
        gz.write(text)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as archive:
        archive.writestr("a.csv", text)
    expected = list(source(tmp_path / "a.csv"))
    assert list(source(tmp_path / "a.csv.gz")) == expected
    assert list(source(tmp_path / "a.zip")) == expected
    assert first_line(tmp_path / "a.zip") == "1,10"


def test_a_zip_of_a_csv_and_its_notes_reads_the_csv(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "HISTDATA_COM_ASCII_EURUSD_T202401.zip", "w") as archive:
        archive.writestr("DAT_ASCII_EURUSD_T_202401.csv", "1,10\n")
        archive.writestr("DAT_ASCII_EURUSD_T_202401.txt", "status report\n")
    assert seconds(source(tmp_path / "HISTDATA_COM_ASCII_EURUSD_T202401.zip")) == [1]


def test_a_zip_with_several_files_or_an_unreadable_file_is_refused_clearly(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.csv", "1,1\n")
        archive.writestr("b.csv", "2,1\n")
    with pytest.raises(FeedError, match=r"expected one file \(or one .csv\) in the zip, found 2 files"):
        list(source(tmp_path / "two.zip"))
    (tmp_path / "binary.csv").write_bytes(b"1,10\n\xff\xfe\n")
    with pytest.raises(FeedError, match=r"binary.csv:\d+: cannot read"):
        list(source(tmp_path / "binary.csv"))


def test_floods_of_one_kind_are_counted_but_logged_only_a_few_times(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("".join(f"{n},x\n" for n in range(100)))
    caplog.set_level(logging.WARNING)
    src = source(path)
    assert list(src) == []
    assert src.problems.skipped == {"bad number": 100}
    assert len(caplog.records) == LOGGED_PER_KIND
    assert "further 'bad number' lines" in caplog.records[-1].getMessage()
    assert src.problems.summary() == "bad number 100"


class Closing(SecondsCsv):
    """Counts its passes the way a format holding a second file open would."""

    def __init__(self, *, path: Path, symbols: SymbolMap, options: Mapping[str, str]) -> None:
        self.opened = self.closed = 0

    def reset(self) -> None:
        self.opened += 1

    def close(self) -> None:
        self.closed += 1


def test_a_format_is_closed_after_each_pass_also_when_strict_stops_it(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("1,10\n2,11\n")
    src = source(path, Closing)
    fmt = src.format
    assert isinstance(fmt, Closing)
    assert seconds(src) == [1, 2] and seconds(src) == [1, 2]
    assert (fmt.opened, fmt.closed) == (2, 2)

    path.write_text("1,10\n2,x\n")
    strict = source(path, Closing, strict=True)
    with pytest.raises(FeedError):
        list(strict)
    assert strict.format.closed == 1  # type: ignore[attr-defined]


class Crashing(SecondsCsv):
    """A parser with a bug: line "boom" raises what no parser should."""

    def parse(self, line: str) -> Iterable[MarketEvent]:
        if line == "boom":
            return {}["missing"]  # type: ignore[no-any-return]
        return super().parse(line)


def test_a_parser_exception_is_a_reported_line_not_a_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("1,10\nboom\n2,11\n")
    src = source(path, Crashing)
    assert seconds(src) == [1, 2]
    assert src.problems.skipped == {"parser error": 1}
    assert f"{path}:2: parser error: KeyError: 'missing'; line skipped" in [r.getMessage() for r in caplog.records]
    with pytest.raises(FeedError, match=rf"^{path}:2: parser error: KeyError"):
        list(source(path, Crashing, strict=True))


def test_a_sniffer_that_raises_does_not_stop_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from marketdata.feeds import registry
    from marketdata.feeds.native import NativeJsonl

    def broken(cls: type, path: Path, first_line: str) -> bool:
        raise IndexError("sniffer bug")

    path = tmp_path / "BTCUSDT-aggTrades-2026-01-01.csv"
    path.write_text("3800397495,87648.21000000,0.08185000,5723703861,5723703861,1767225600039409,True,True\n")
    monkeypatch.setattr(NativeJsonl, "sniff", classmethod(broken))
    assert registry.format_detect(path).name == "binance-aggtrades"


def test_clock_offsets_summarise_median_and_extremes_over_all_sources() -> None:
    a, b = ClockOffsets(), ClockOffsets()
    for ms in (1200, 1270, 1300):
        a.note(T0 + timedelta(milliseconds=ms), T0)
    b.note(T0, T0 + timedelta(milliseconds=20))
    assert ClockOffsets.summary([a, b]) == "median +1.20 s, min -0.02 s, max +1.30 s (4 lines)"
    assert ClockOffsets.summary([ClockOffsets()]) is None
