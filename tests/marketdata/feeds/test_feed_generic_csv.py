"""Any CSV with a header, read through a column mapping (`--format csv`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.events import MarketEvent, Quote, Trade
from marketdata.feeds.files import BadLine, FeedError, FileSource, Problems
from marketdata.feeds.generic_csv import GenericCsv
from marketdata.symbols import SymbolMap

SAMPLES = Path(__file__).parent / "samples"
TRADES = SAMPLES / "generic_trades.csv"
QUOTES = SAMPLES / "generic_quotes.csv"
CONFIG = SAMPLES / "generic_quotes.toml"


def csv_format(sm: SymbolMap | None = None, /, **options: str) -> GenericCsv:
    return GenericCsv(path=Path("data.csv"), symbols=sm or SymbolMap(instruments=["AAPL", "EURUSD"]), options=options)


def parse(fmt: GenericCsv, header: str, *lines: str) -> list[MarketEvent]:
    assert list(fmt.parse(header)) == []
    return [event for line in lines for event in fmt.parse(line)]


def times(time_format: str, value: str, **options: str) -> datetime:
    fmt = csv_format(time="t", symbol="AAPL", price="p", time_format=time_format, **options)
    (trade,) = parse(fmt, "t,p", f'"{value}",1')
    return trade.ts


# --- time formats -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("time_format", "value"),
    [
        ("epoch_s", "1704067200"),
        ("epoch_ms", "1704067200000"),
        ("epoch_us", "1704067200000000"),
        ("epoch_ns", "1704067200000000000"),
    ],
)
def test_each_epoch_unit_reads_the_same_instant(time_format: str, value: str) -> None:
    assert times(time_format, value) == datetime(2024, 1, 1, tzinfo=UTC)


def test_epoch_fractions_are_exact_and_nanoseconds_are_cut_to_microseconds() -> None:
    assert times("epoch_s", "1704067200.123456") == datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    assert times("epoch_ms", "1704067200123.5") == datetime(2024, 1, 1, 0, 0, 0, 123500, tzinfo=UTC)
    assert times("epoch_ns", "1704067200123456789") == datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)


def test_iso_times_keep_their_offset_and_z_means_utc() -> None:
    assert times("iso", "2024-01-02T17:00:00.5+01:00") == datetime(2024, 1, 2, 16, 0, 0, 500000, tzinfo=UTC)
    assert times("iso", "2024-01-02T17:00:00Z") == datetime(2024, 1, 2, 17, tzinfo=UTC)


def test_iso_is_the_default_and_a_time_without_offset_is_read_in_tz() -> None:
    fmt = csv_format(time="t", symbol="AAPL", price="p", tz="America/New_York")
    winter, summer = parse(fmt, "t,p", "2024-01-02 09:30:00,1", "2024-07-02 09:30:00,1")
    assert winter.ts == datetime(2024, 1, 2, 14, 30, tzinfo=UTC)
    assert summer.ts == datetime(2024, 7, 2, 13, 30, tzinfo=UTC)  # EDT: daylight saving applies


def test_ms_of_day_counts_from_midnight_of_date_in_tz() -> None:
    assert times("ms_of_day", "34200500", date="2024-01-02") == datetime(2024, 1, 2, 9, 30, 0, 500000, tzinfo=UTC)
    assert times("ms_of_day", "34200500", date="2024-01-02", tz="America/New_York") == datetime(2024, 1, 2, 14, 30, 0, 500000, tzinfo=UTC)


def test_s_of_day_reads_seconds_with_a_fraction_from_midnight_of_date_in_tz() -> None:
    assert times("s_of_day", "34200.0005", date="2024-01-02") == datetime(2024, 1, 2, 9, 30, 0, 500, tzinfo=UTC)
    summer = times("s_of_day", "34713.685155243", date="2012-06-21", tz="America/New_York")
    assert summer == datetime(2012, 6, 21, 13, 38, 33, 685155, tzinfo=UTC)  # EDT; nanoseconds cut to microseconds
    assert times("s_of_day", "57600", date="2024-01-02", tz="America/New_York") == datetime(2024, 1, 2, 21, tzinfo=UTC)


def test_a_strptime_pattern_reads_local_times_in_tz_and_honours_a_z_offset() -> None:
    assert times("%d.%m.%Y %H:%M:%S", "02.01.2024 09:00:00", tz="Europe/Berlin") == datetime(2024, 1, 2, 8, tzinfo=UTC)
    assert times("%Y%m%d %H%M%S %z", "20240102 090000 +0200", tz="Europe/Berlin") == datetime(2024, 1, 2, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    ("time_format", "value", "detail", "options"),
    [
        ("epoch_ms", "17040672OO000", "time '17040672OO000' is not a number", {}),
        ("epoch_ms", "", "time '' is not a number", {}),
        ("epoch_s", "1e30", "time '1e30' is out of range", {}),
        ("iso", "02/01/2024", "time '02/01/2024' is not ISO 8601", {}),
        ("ms_of_day", "9:30", "time '9:30' is not a whole number of milliseconds", {"date": "2024-01-02"}),
        ("ms_of_day", "3²", "time '3²' is not a whole number of milliseconds", {"date": "2024-01-02"}),
        ("s_of_day", "-34200.5", "time '-34200.5' is not seconds since midnight (e.g. 34200.123456)", {"date": "2024-01-02"}),
        ("s_of_day", "3.42e4", "time '3.42e4' is not seconds since midnight (e.g. 34200.123456)", {"date": "2024-01-02"}),
        ("s_of_day", "34200.", "time '34200.' is not seconds since midnight (e.g. 34200.123456)", {"date": "2024-01-02"}),
        ("s_of_day", "86401", "time '86401' is not seconds since midnight (e.g. 34200.123456)", {"date": "2024-01-02"}),
        ("%Y-%m-%d", "2024-13-01", "time '2024-13-01' does not match '%Y-%m-%d'", {}),
    ],
)
def test_unreadable_times_are_bad_time(time_format: str, value: str, detail: str, options: dict[str, str]) -> None:
    with pytest.raises(BadLine) as caught:
        times(time_format, value, **options)
    assert (caught.value.kind, caught.value.detail) == ("bad time", detail)


# --- prices and rows ---------------------------------------------------------------------------------


def test_price_divisor_turns_ticks_into_prices() -> None:
    fmt = csv_format(time="t", symbol="EURUSD", bid="b", ask="a", time_format="epoch_s", price_divisor="10000")
    (q,) = parse(fmt, "t,b,a", "1704067200,10941,10942")
    assert (q.bid, q.ask) == (Decimal("1.0941"), Decimal("1.0942"))  # type: ignore[union-attr]


def test_a_row_with_price_and_quote_gives_a_trade_and_a_quote() -> None:
    fmt = csv_format(time="t", symbol_column="s", price="p", size="q", bid="b", ask="a", time_format="epoch_ms")
    ts = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse(fmt, "t,s,p,q,b,a", "1704067200000,AAPL,185.65,20,185.64,185.66") == [
        Trade(symbol="AAPL", ts=ts, price=Decimal("185.65"), size=Decimal("20"), source="csv"),
        Quote(symbol="AAPL", ts=ts, bid=Decimal("185.64"), ask=Decimal("185.66"), source="csv"),
    ]


def test_without_a_size_column_trades_have_size_zero() -> None:
    fmt = csv_format(time="t", symbol="AAPL", price="p", time_format="epoch_s")
    (trade,) = parse(fmt, "t,p", "1704067200,185.65")
    assert trade.size == Decimal(0)  # type: ignore[union-attr]


def test_quoted_fields_may_hold_the_delimiter_and_columns_are_found_by_name() -> None:
    fmt = csv_format(time="when", symbol_column="name", price="px", time_format="epoch_s")
    (trade,) = parse(fmt, "px,note,when,name", '185.65,"bought, at last",1704067200,"AAPL"')
    assert (trade.symbol, trade.price) == ("AAPL", Decimal("185.65"))  # type: ignore[union-attr]


def test_symbols_resolve_through_the_map_under_the_source_name() -> None:
    sm = SymbolMap(instruments=["EUR/USD"], aliases={("bank", "EURUSD"): "EUR/USD"})
    fmt = csv_format(sm, time="t", symbol_column="s", price="p", time_format="epoch_s", source="bank")
    events = parse(fmt, "t,s,p", "1704067200,EURUSD,1.09", "1704067201,GBPUSD,1.27")
    assert [(e.symbol, e.source) for e in events] == [("EUR/USD", "bank")]
    assert sm.unknown == {"GBPUSD": 1}


@pytest.mark.parametrize(
    ("line", "kind", "detail"),
    [
        ("1704067200,AAPL,185.65", "wrong column count", "expected 6 fields (t, s, p, q, b, a), found 3"),
        ("1704067200,AAPL,185.6x,1,,", "bad number", "price '185.6x' is not a number"),
        ("1704067200,AAPL,-185.6,1,,", "bad number", "price '-185.6' is not positive"),
        ("1704067200,AAPL,185.6,-1,,", "bad number", "size '-1' is negative"),
        ("1704067200,AAPL,,,185.7,185.6", "crossed quote", "bid 185.7 is above ask 185.6"),
        ("1704067200,AAPL,,,185.7,", "no price", "neither price nor bid and ask are set"),
        ("1704067200,,185.6,1,,", "no symbol", "column s is empty"),
    ],
)
def test_bad_rows_say_which_field_and_value(line: str, kind: str, detail: str) -> None:
    fmt = csv_format(time="t", symbol_column="s", price="p", size="q", bid="b", ask="a", time_format="epoch_s")
    with pytest.raises(BadLine) as caught:
        parse(fmt, "t,s,p,q,b,a", line)
    assert (caught.value.kind, caught.value.detail) == (kind, detail)


# --- options and config ------------------------------------------------------------------------------


def test_a_header_without_a_mapped_column_names_it_and_the_header_found() -> None:
    fmt = csv_format(time="timestamp", symbol_column="ticker", price="last")
    with pytest.raises(FeedError, match=r"column\(s\) ticker, last not in the header; found: timestamp, symbol, price"):
        fmt.parse("timestamp,symbol,price")


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"symbol": "AAPL", "price": "p"}, "option time is required"),
        ({"time": "t", "price": "p"}, "option symbol"),
        ({"time": "t", "symbol_column": "s", "symbol": "AAPL", "price": "p"}, "symbol"),
        ({"time": "t", "symbol_column": "s"}, "option price"),
        ({"time": "t", "symbol_column": "s", "bid": "b"}, "options bid and ask"),
        ({"time": "t", "symbol_column": "s", "price": "p", "colour": "red"}, "colour"),
        ({"time": "t", "symbol_column": "s", "price": "p", "time_format": "unix"}, "option time_format 'unix'"),
        ({"time": "t", "symbol_column": "s", "price": "p", "time_format": "ms_of_day"}, "needs option date"),
        ({"time": "t", "symbol_column": "s", "price": "p", "time_format": "ms_of_day", "date": "02.01.2024"}, "option date '02.01.2024'"),
        ({"time": "t", "symbol_column": "s", "price": "p", "time_format": "s_of_day"}, "time_format s_of_day needs option date"),
        ({"time": "t", "symbol_column": "s", "price": "p", "tz": "Mars/Olympus"}, "option tz 'Mars/Olympus'"),
        ({"time": "t", "symbol_column": "s", "price": "p", "price_divisor": "0.01"}, "option price_divisor '0.01'"),
        ({"time": "t", "symbol_column": "s", "price": "p", "price_divisor": "0"}, "option price_divisor '0'"),
        ({"time": "t", "symbol_column": "s", "price": "p", "delimiter": ";;"}, "option delimiter ';;'"),
        ({"time": "t", "symbol_column": "s", "price": "p", "config": "/nonexistent/livefolio.toml"}, "option config"),
    ],
)
def test_bad_options_are_refused_naming_the_option(options: dict[str, str], named: str) -> None:
    with pytest.raises(FeedError) as caught:
        csv_format(**options)
    assert named in str(caught.value)


def test_a_tab_delimiter_can_be_spelled_out() -> None:
    fmt = csv_format(time="t", symbol="AAPL", price="p", time_format="epoch_s", delimiter="tab")
    (trade,) = parse(fmt, "t\tp", "1704067200\t185.65")
    assert trade.price == Decimal("185.65")  # type: ignore[union-attr]


def test_a_toml_config_supplies_the_mapping_and_the_command_line_wins(tmp_path: Path) -> None:
    fmt = GenericCsv(path=QUOTES, symbols=SymbolMap(instruments=["EURUSD"]), options={"config": str(CONFIG)})
    assert (fmt.source, fmt.delimiter, fmt.divisor, str(fmt.tz)) == ("bank", ";", Decimal(10000), "Europe/Berlin")
    overridden = GenericCsv(
        path=QUOTES, symbols=SymbolMap(instruments=["EURUSD"]), options={"config": str(CONFIG), "tz": "UTC", "source": "ecb"}
    )
    (q,) = parse(overridden, "local_time;instrument;bid;ask", "02.01.2024 09:00:00.250;EURUSD;10941;10942")
    assert (q.ts, q.source) == (datetime(2024, 1, 2, 9, 0, 0, 250000, tzinfo=UTC), "ecb")
    bad = tmp_path / "bad.toml"
    bad.write_text('time = "t"\nsymbol = ["a", "b"]\n')
    with pytest.raises(FeedError, match=r"option symbol in .*bad\.toml"):
        GenericCsv(path=QUOTES, symbols=SymbolMap(instruments=[]), options={"config": str(bad)})


def test_sniff_never_claims_a_file() -> None:
    assert not GenericCsv.sniff(TRADES, "time,symbol,price,size,bid,ask")


# --- sample files through FileSource ---------------------------------------------------------------


def read(path: Path, **options: str) -> tuple[FileSource, Problems]:
    problems = Problems()
    fmt = GenericCsv(path=path, symbols=SymbolMap(instruments=["AAPL", "EURUSD"]), options=options)
    return FileSource(path=path, format=fmt, problems=problems), problems


def test_the_trades_sample_reads_trades_and_quotes_and_reports_each_bad_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    source, problems = read(
        TRADES, time="time", time_format="epoch_ms", symbol_column="symbol", price="price", size="size", bid="bid", ask="ask"
    )
    summary = [
        (type(e).__name__, e.ts.isoformat(), str(e.price) if isinstance(e, Trade) else f"{e.bid}/{e.ask}")  # type: ignore[union-attr]
        for e in source
    ]
    assert summary == [
        ("Trade", "2024-01-01T00:00:00+00:00", "185.64"),
        ("Quote", "2024-01-01T00:00:00.250000+00:00", "185.63/185.65"),
        ("Trade", "2024-01-01T00:00:00.500000+00:00", "185.65"),
        ("Quote", "2024-01-01T00:00:00.500000+00:00", "185.64/185.66"),
        ("Trade", "2024-01-01T00:00:02+00:00", "185.67"),
    ]
    assert problems.skipped == {"wrong column count": 1, "bad number": 1, "bad time": 1, "time goes backwards": 1, "crossed quote": 1}
    logged = "\n".join(caplog.messages)
    for line, kind in [(5, "wrong column count"), (6, "bad number"), (7, "bad time"), (8, "time goes backwards"), (9, "crossed quote")]:
        assert f"{TRADES}:{line}: {kind}: " in logged


def test_the_quotes_sample_reads_through_its_toml_config(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    source, problems = read(QUOTES, config=str(CONFIG))
    assert list(source) == [
        Quote("EURUSD", datetime(2024, 1, 2, 8, 0, 0, 250000, tzinfo=UTC), Decimal("1.0941"), Decimal("1.0942"), "bank"),
        Quote("EURUSD", datetime(2024, 1, 2, 8, 0, 0, 500000, tzinfo=UTC), Decimal("1.0943"), Decimal("1.0944"), "bank"),
        Quote("EURUSD", datetime(2024, 1, 2, 8, 0, 3, tzinfo=UTC), Decimal("1.0951"), Decimal("1.0952"), "bank"),
    ]
    assert problems.skipped == {"wrong column count": 1, "bad number": 1, "bad time": 1, "crossed quote": 1, "time goes backwards": 1}
    logged = "\n".join(caplog.messages)
    for line, kind in [(4, "wrong column count"), (5, "bad number"), (6, "bad time"), (7, "crossed quote"), (8, "time goes backwards")]:
        assert f"{QUOTES}:{line}: {kind}: " in logged


def test_a_second_pass_for_loop_skips_the_header_again() -> None:
    source, problems = read(QUOTES, config=str(CONFIG))
    assert list(source) == list(source)
    assert sum(problems.skipped.values()) == 2 * 5
