"""QuantConnect Lean / AlgoSeek US equity tick files: New York wall-clock times, deci-cents, condition filters."""

from __future__ import annotations

import logging
import zipfile
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from marketdata.events import MarketEvent, Quote, Trade
from marketdata.feeds.dayclock import DayClock
from marketdata.feeds.files import BadLine, FeedError, FileSource, Problems, first_line
from marketdata.feeds.lean import LeanEquityTicks
from marketdata.feeds.registry import format_detect
from marketdata.symbols import SymbolMap

SAMPLES = Path(__file__).parent / "samples"
TRADES = SAMPLES / "20131007_spy_Trade_Tick.csv"
QUOTES = SAMPLES / "20131007_spy_Quote_Tick.csv"
NEW_YORK = ZoneInfo("America/New_York")


def lean(path: Path | str = TRADES, sm: SymbolMap | None = None, **options: str) -> LeanEquityTicks:
    return LeanEquityTicks(path=Path(path), symbols=sm or SymbolMap(instruments=["SPY"]), options=options)


def parse(fmt: LeanEquityTicks, *lines: str) -> list[MarketEvent]:
    return [event for line in lines for event in fmt.parse(line)]


def read(path: Path, **options: str) -> tuple[list[MarketEvent], Problems]:
    problems = Problems()
    return list(FileSource(path=path, format=lean(path, **options), problems=problems)), problems


def zipped(tmp_path: Path, sample: Path, kind: str) -> Path:
    """The sample as Lean ships it: `spy/20131007_<kind>.zip` holding the csv."""
    folder = tmp_path / "equity" / "usa" / "tick" / "spy"
    folder.mkdir(parents=True)
    path = folder / f"20131007_{kind}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(sample, sample.name)
    return path


# --- rows ----------------------------------------------------------------------------------------------


def test_a_trade_row_is_a_trade_in_dollars_at_new_york_time_in_utc() -> None:
    (trade,) = parse(lean(), "34200100,1686100,100,N,00000001,0")
    assert trade == Trade(
        symbol="SPY", ts=datetime(2013, 10, 7, 13, 30, 0, 100000, tzinfo=UTC), price=Decimal("168.6100"), size=Decimal(100), source="lean"
    )
    assert trade.side is None and trade.trade_id is None  # the rows say neither


def test_fractional_milliseconds_are_kept_to_the_microsecond() -> None:
    (trade,) = parse(lean(), "14400009.367,1685900,100,P,00000000,0")
    assert trade.ts == datetime(2013, 10, 7, 8, 0, 0, 9367, tzinfo=UTC)


def test_winter_days_are_five_hours_behind_utc_and_summer_days_four() -> None:
    winter = lean("20131202_spy_Trade_Tick.csv")
    assert parse(winter, "34200000,1686100,100,N,1,0")[0].ts == datetime(2013, 12, 2, 14, 30, tzinfo=UTC)
    assert parse(lean(), "34200000,1686100,100,N,1,0")[0].ts == datetime(2013, 10, 7, 13, 30, tzinfo=UTC)


def test_on_a_daylight_saving_day_times_are_read_on_the_wall_clock() -> None:
    spring = DayClock(date(2024, 3, 10), NEW_YORK)
    assert spring.utc(1 * 3600 * 10**6) == datetime(2024, 3, 10, 6, tzinfo=UTC)  # 01:00 EST
    assert spring.utc(3 * 3600 * 10**6) == datetime(2024, 3, 10, 7, tzinfo=UTC)  # 03:00 EDT, one hour later
    autumn = DayClock(date(2024, 11, 3), NEW_YORK)
    assert autumn.utc(9 * 3600 * 10**6 + 30 * 60 * 10**6) == datetime(2024, 11, 3, 14, 30, tzinfo=UTC)  # 09:30 EST


def test_quote_rows_carry_one_side_and_a_quote_comes_once_both_are_known() -> None:
    fmt = lean(QUOTES)
    assert parse(fmt, "34200000,1685900,500,0,0,P,00000001,0") == []
    (first,) = parse(fmt, "34200001,0,0,1686100,300,Q,00000001,0")
    assert first == Quote("SPY", datetime(2013, 10, 7, 13, 30, 0, 1000, tzinfo=UTC), Decimal("168.5900"), Decimal("168.6100"), "lean")
    (second,) = parse(fmt, "34200002,1686000,100,0,0,N,00000001,0")
    assert (second.bid, second.ask) == (Decimal("168.6000"), Decimal("168.6100"))


def test_a_quote_with_both_sides_zero_gives_nothing_and_changes_nothing() -> None:
    fmt = lean(QUOTES)
    parse(fmt, "34200000,1685900,500,0,0,P,1,0", "34200001,0,0,1686100,300,Q,1,0")
    assert parse(fmt, "34200003,0,0,0,0,T,00002000,0") == []
    (after,) = parse(fmt, "34200004,1686000,100,0,0,N,1,0")
    assert after.ask == Decimal("168.6100")


def test_a_second_pass_forgets_the_quote_sides() -> None:
    fmt = lean(QUOTES)
    parse(fmt, "34200000,1685900,500,0,0,P,1,0")
    fmt.reset()
    assert parse(fmt, "34200001,0,0,1686100,300,Q,1,0") == []


@pytest.mark.parametrize(
    ("path", "line", "kind", "detail"),
    [
        (
            TRADES,
            "34200250,1686100,100,N,00000001",
            "wrong column count",
            "expected 6 fields (time, price, size, exchange, condition, suspicious), found 5",
        ),
        (TRADES, "9:30:00,1686100,100,N,1,0", "bad time", "time '9:30:00' is not milliseconds since midnight (e.g. 34200000.5)"),
        (TRADES, "-34200000,1686100,100,N,1,0", "bad time", "time '-34200000' is not milliseconds since midnight (e.g. 34200000.5)"),
        (TRADES, "99999999999,1686100,100,N,1,0", "bad time", "time '99999999999' is past the end of the day"),
        (TRADES, "34200350,168.61,100,N,1,0", "bad number", "price '168.61' is not a whole number of deci-cents"),
        (TRADES, "34200350,0,100,N,1,0", "bad number", "price '0' is not positive"),
        (TRADES, "34200350,1686100,-5,N,1,0", "bad number", "size '-5' is not a number of shares"),
        (TRADES, "34200350,1686100,100,N,0x40,0", "bad value", "condition '0x40' is not a hexadecimal set of flags"),
        (TRADES, "34200350,1686100,100,N,1,maybe", "bad boolean", "suspicious 'maybe' is neither 1 nor 0"),
        (
            QUOTES,
            "34200000,1685900,500,0,0,P,1",
            "wrong column count",
            "expected 8 fields (time, bid, bid_size, ask, ask_size, exchange, condition, suspicious), found 7",
        ),
        (QUOTES, "34200000,1685900,lots,0,0,P,1,0", "bad number", "bid_size 'lots' is not a number of shares"),
    ],
)
def test_bad_rows_say_which_field_and_value(path: Path, line: str, kind: str, detail: str) -> None:
    with pytest.raises(BadLine) as caught:
        lean(path).parse(line)
    assert (caught.value.kind, caught.value.detail) == (kind, detail)


def test_a_crossed_quote_is_a_bad_line_and_the_next_uncrossed_one_comes_through() -> None:
    fmt = lean(QUOTES)
    parse(fmt, "34200000,1685900,500,0,0,P,1,0", "34200001,0,0,1686100,300,Q,1,0")
    with pytest.raises(BadLine) as caught:
        fmt.parse("34200004,1686200,100,0,0,Z,1,0")
    assert (caught.value.kind, caught.value.detail) == ("crossed quote", "bid 168.6200 is above ask 168.6100")
    (quote,) = parse(fmt, "34200005,0,0,1686300,100,Z,1,0")
    assert (quote.bid, quote.ask) == (Decimal("168.6200"), Decimal("168.6300"))


# --- filters -------------------------------------------------------------------------------------------


def prices(events: list[MarketEvent]) -> list[str]:
    return [str(e.price) for e in events if isinstance(e, Trade)]


def test_without_filters_every_good_trade_comes_through_as_recorded() -> None:
    events, problems = read(TRADES)
    assert prices(events) == ["168.5900", "168.6000", "168.6100", "168.6200", "169.0000", "168.6300", "168.7000"]
    assert problems.skipped == {"wrong column count": 1, "bad number": 1}


def test_drop_crosses_leaves_out_the_opening_and_closing_prints() -> None:
    events, _ = read(TRADES, drop_crosses="true")
    assert prices(events) == ["168.5900", "168.6100", "168.6200", "169.0000", "168.6300"]


def test_drop_suspicious_and_excluded_conditions_by_hex_or_name() -> None:
    by_hex, _ = read(TRADES, drop_suspicious="true", exclude_conditions="80000000")
    by_name, _ = read(TRADES, drop_suspicious="true", exclude_conditions="odd_lot")
    assert prices(by_hex) == prices(by_name) == ["168.5900", "168.6000", "168.6100", "168.6300", "168.7000"]


def test_exchanges_keeps_only_those_codes() -> None:
    events, _ = read(TRADES, exchanges="n, z")
    assert prices(events) == ["168.6100", "168.6300"]


def test_the_filters_count_what_they_leave_out_and_log_it_after_the_pass(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="marketdata.feeds.lean")
    fmt = lean(TRADES, drop_crosses="true", drop_suspicious="true")
    list(FileSource(path=TRADES, format=fmt, problems=Problems()))
    assert fmt.dropped == {"condition": 2, "suspicious": 1}
    assert f"{TRADES}: 3 ticks left out by the filters (condition 2, suspicious 1)" in caplog.messages


def test_suspicious_quotes_can_be_dropped_before_they_cross_the_book() -> None:
    kept, kept_problems = read(QUOTES)
    dropped, dropped_problems = read(QUOTES, drop_suspicious="true")
    assert kept_problems.skipped == {"crossed quote": 2}
    assert dropped_problems.skipped == {"crossed quote": 1}
    assert [(str(q.bid), str(q.ask)) for q in dropped if isinstance(q, Quote)] == [
        ("168.5900", "168.6100"),
        ("168.6000", "168.6100"),
        ("168.6200", "168.6300"),
    ]
    assert len(kept) == len(dropped)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"exclude_conditions": "opening,blue"}, "'blue' is neither a hexadecimal flag"),
        ({"exchanges": "N,4"}, "option exchanges 'N,4'"),
        ({"drop_crosses": "sometimes"}, "option drop_crosses 'sometimes'"),
        ({"tz": "Mars/Olympus"}, "option tz 'Mars/Olympus'"),
        ({"date": "07.10.2013"}, "option date '07.10.2013'"),
        ({"colour": "red"}, "unknown option(s) colour"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, str], named: str) -> None:
    with pytest.raises(FeedError) as caught:
        lean(**options)
    assert named in str(caught.value)


# --- file names and detection -------------------------------------------------------------------------


def test_the_zip_as_lean_ships_it_gives_day_symbol_and_kind_and_reads_like_the_csv(tmp_path: Path) -> None:
    path = zipped(tmp_path, TRADES, "trade")
    fmt = lean(path)
    assert (fmt.raw_symbol, fmt.clock.day, fmt.kind) == ("SPY", date(2013, 10, 7), "trade")
    assert read(path)[0] == read(TRADES)[0]


def test_a_zip_without_the_csv_name_takes_the_symbol_from_its_folder_and_the_kind_from_the_row(tmp_path: Path) -> None:
    folder = tmp_path / "qqq"
    folder.mkdir()
    path = folder / "20131007_trade.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ticks.csv", "34200100,1686100,100,N,00000001,0\n")
    fmt = lean(path, SymbolMap(instruments=["QQQ"]))
    assert fmt.raw_symbol == "QQQ" and fmt.kind == "trade"
    (trade,) = parse(fmt, "34200100,1686100,100,N,00000001,0")
    assert trade.symbol == "QQQ"


def test_symbol_and_date_options_override_the_name_and_stand_in_for_it() -> None:
    sm = SymbolMap(instruments=["SPY", "SPY.US"])
    fmt = lean("ticks.csv", sm, symbol="SPY.US", date="2013-12-02")
    (trade,) = parse(fmt, "34200000,1686100,100,N,1,0")
    assert (trade.symbol, trade.ts) == ("SPY.US", datetime(2013, 12, 2, 14, 30, tzinfo=UTC))
    assert lean(TRADES, sm, symbol="SPY.US").symbol == "SPY.US"


def test_a_file_named_otherwise_asks_for_what_is_missing() -> None:
    with pytest.raises(FeedError, match=r"cannot tell the day .*pass --option date=YYYYMMDD"):
        lean("ticks.csv")
    with pytest.raises(FeedError, match=r"cannot tell the symbol .*pass --symbol"):
        lean("ticks.csv", date="20131007")


def test_every_line_of_an_unknown_symbol_is_counted_in_the_map() -> None:
    sm = SymbolMap(instruments=["SPY"])
    fmt = lean("20131007_qqq_Trade_Tick.csv", sm)
    for _ in range(3):
        assert list(fmt.parse("34200100,1686100,100,N,1,0")) == []
    assert sm.unknown == {"QQQ": 3}


def test_detection_knows_the_tick_files_and_not_lean_minute_bars(tmp_path: Path) -> None:
    assert format_detect(TRADES) is LeanEquityTicks
    assert format_detect(QUOTES) is LeanEquityTicks
    assert format_detect(zipped(tmp_path, QUOTES, "quote")) is LeanEquityTicks
    minute = tmp_path / "minute" / "spy" / "20131007_trade.zip"
    minute.parent.mkdir(parents=True)
    with zipfile.ZipFile(minute, "w") as archive:
        archive.writestr("20131007_spy_minute_trade.csv", "34200000,1686000,1686500,1685900,1686100,90000\n")
    assert not LeanEquityTicks.sniff(minute, first_line(minute))
