"""HistData.com Generic ASCII tick files: FX quotes on a fixed EST clock."""

from __future__ import annotations

import logging
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.events import Quote
from marketdata.feeds.files import BadLine, FeedError, FileSource, Problems
from marketdata.feeds.histdata import HistDataTicks
from marketdata.symbols import SymbolMap

SAMPLES = Path(__file__).parent / "samples"
SAMPLE = SAMPLES / "histdata_eurusd_ticks.csv"


def ticks(path: Path | str = "DAT_ASCII_EURUSD_T_202401.csv", sm: SymbolMap | None = None, **options: str) -> HistDataTicks:
    return HistDataTicks(path=Path(path), symbols=sm or SymbolMap(instruments=["EURUSD"]), options=options)


def quote(line: str) -> Quote:
    (event,) = ticks().parse(line)
    assert isinstance(event, Quote)
    return event


def test_a_tick_line_becomes_one_quote() -> None:
    assert quote("20240102 170000123,1.104100,1.104200,0") == Quote(
        symbol="EURUSD",
        ts=datetime(2024, 1, 2, 22, 0, 0, 123000, tzinfo=UTC),
        bid=Decimal("1.104100"),
        ask=Decimal("1.104200"),
        source="histdata",
    )


def test_est_times_are_five_hours_behind_utc() -> None:
    assert quote("20240102 170000123,1.104100,1.104200,0").ts.isoformat() == "2024-01-02T22:00:00.123000+00:00"


def test_est_has_no_daylight_saving_in_summer_either() -> None:
    assert quote("20240702 170000000,1.071500,1.071600,0").ts.isoformat() == "2024-07-02T22:00:00+00:00"


def test_an_evening_tick_lands_on_the_next_utc_day() -> None:
    assert quote("20231231 235959999,1.104100,1.104200,0").ts.isoformat() == "2024-01-01T04:59:59.999000+00:00"


@pytest.mark.parametrize(
    ("line", "kind", "detail"),
    [
        ("20240102 170000123,1.104100", "wrong column count", "expected 4 fields (time, bid, ask, volume), found 2"),
        ("20240102 170000,1.104100,1.104200,0", "bad time", "time '20240102 170000' is not YYYYMMDD HHMMSSNNN"),
        ("20241302 170000123,1.104100,1.104200,0", "bad time", "time '20241302 170000123' is not a date and time: month must be in 1..12"),
        ("2024-01-02 17:00:00,1.104100,1.104200,0", "bad time", "time '2024-01-02 17:00:00' is not YYYYMMDD HHMMSSNNN"),
        ("20240102 170000123,1.1O4100,1.104200,0", "bad number", "bid '1.1O4100' is not a number"),
        ("20240102 170000123,1.104100,-1.1,0", "bad number", "ask '-1.1' is not a positive number"),
        ("20240102 170000123,1.104300,1.104200,0", "crossed quote", "bid 1.104300 is above ask 1.104200"),
    ],
)
def test_bad_lines_say_which_field_and_value(line: str, kind: str, detail: str) -> None:
    with pytest.raises(BadLine) as caught:
        ticks().parse(line)
    assert (caught.value.kind, caught.value.detail) == (kind, detail)


def test_a_locked_quote_is_not_crossed() -> None:
    assert quote("20240102 170000123,1.104200,1.104200,0").bid == Decimal("1.104200")


def test_the_pair_comes_from_the_official_file_and_zip_names() -> None:
    sm = SymbolMap(instruments=["EURUSD", "USDJPY"])
    assert ticks("DAT_ASCII_EURUSD_T_202401.csv", sm).symbol == "EURUSD"
    assert ticks("downloads/HISTDATA_COM_ASCII_USDJPY_T202401.zip", sm).symbol == "USDJPY"


def test_the_symbol_option_wins_and_a_plain_name_asks_for_it() -> None:
    aliased = SymbolMap(instruments=["EUR/USD"], aliases={("histdata", "EURUSD"): "EUR/USD"})
    assert ticks(SAMPLE, aliased, symbol="EURUSD").symbol == "EUR/USD"
    with pytest.raises(
        FeedError, match=r"cannot tell the symbol from the file name histdata_eurusd_ticks\.csv \(HistData .*; pass --symbol"
    ):
        ticks(SAMPLE)
    with pytest.raises(FeedError, match="pair"):
        ticks(pair="EURUSD")


def test_a_renamed_zip_takes_the_pair_from_the_file_inside(tmp_path: Path) -> None:
    renamed = tmp_path / "january.zip"
    with zipfile.ZipFile(renamed, "w") as archive:
        archive.writestr("DAT_ASCII_USDJPY_T_202401.csv", "20240102 170000123,141.001,141.002,0\n")
        archive.writestr("DAT_ASCII_USDJPY_T_202401.txt", "status report\n")
    assert ticks(renamed, SymbolMap(instruments=["USDJPY"])).symbol == "USDJPY"


def test_the_symbol_option_overrides_the_official_file_name() -> None:
    sm = SymbolMap(instruments=["EURUSD", "EUR/USD"])
    assert ticks("DAT_ASCII_EURUSD_T_202401.csv", sm, symbol="EUR/USD").symbol == "EUR/USD"


def test_a_zip_with_neither_an_official_name_nor_an_official_file_inside_asks_for_the_symbol(tmp_path: Path) -> None:
    renamed = tmp_path / "january.zip"
    with zipfile.ZipFile(renamed, "w") as archive:
        archive.writestr("ticks.csv", "20240102 170000123,1.104100,1.104200,0\n")
    with pytest.raises(FeedError, match=r"file name january\.zip .*pass --symbol"):
        ticks(renamed)


def test_every_line_of_an_unknown_pair_is_counted_in_the_map() -> None:
    sm = SymbolMap(instruments=["EURUSD"])
    fmt = ticks("DAT_ASCII_GBPUSD_T_202401.csv", sm)
    for _ in range(4):
        assert list(fmt.parse("20240102 170000123,1.270100,1.270200,0")) == []
    assert sm.unknown == {"GBPUSD": 4}


def test_sniff_knows_the_official_names_and_the_tick_line() -> None:
    assert HistDataTicks.sniff(Path("DAT_ASCII_EURUSD_T_202401.csv"), "")
    assert HistDataTicks.sniff(Path("HISTDATA_COM_ASCII_EURUSD_T202401.zip"), "")
    assert HistDataTicks.sniff(Path("ticks.csv"), "20240102 170000123,1.104100,1.104200,0")
    assert not HistDataTicks.sniff(Path("ticks.csv"), "20120201 000000;1.306600;1.306600;1.306560;1.306560;0")  # M1 bars
    assert not HistDataTicks.sniff(Path("ticks.csv"), "3800397495,87648.21000000,0.08185000,1,1,1767225600039409,True,True")


def read(path: Path) -> tuple[list[Quote], Problems]:
    problems = Problems()
    events = list(FileSource(path=path, format=ticks(path, symbol="EURUSD"), problems=problems))
    return events, problems  # type: ignore[return-value]


def test_the_sample_file_reads_its_good_lines_and_reports_each_bad_one(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    events, problems = read(SAMPLE)
    assert [(e.ts.isoformat(), str(e.bid), str(e.ask)) for e in events] == [
        ("2024-01-02T22:00:00.123000+00:00", "1.104100", "1.104200"),
        ("2024-01-02T22:00:00.456000+00:00", "1.104110", "1.104210"),
        ("2024-01-02T22:00:03+00:00", "1.104160", "1.104260"),
    ]
    assert problems.skipped == {"bad time": 1, "bad number": 1, "crossed quote": 1, "wrong column count": 1, "time goes backwards": 1}
    logged = "\n".join(caplog.messages)
    for line, kind in [(3, "bad time"), (4, "bad number"), (5, "crossed quote"), (6, "wrong column count"), (7, "time goes backwards")]:
        assert f"{SAMPLE}:{line}: {kind}: " in logged


def test_the_downloaded_zip_reads_the_same_as_the_csv(tmp_path: Path) -> None:
    zipped = tmp_path / "HISTDATA_COM_ASCII_EURUSD_T202401.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.write(SAMPLE, "DAT_ASCII_EURUSD_T_202401.csv")
    problems = Problems()
    events = list(FileSource(path=zipped, format=ticks(zipped), problems=problems))
    assert events == read(SAMPLE)[0]
    assert sum(problems.skipped.values()) == 5
