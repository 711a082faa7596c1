"""Binance data.binance.vision trade files: aggTrades and trades CSV."""

from __future__ import annotations

import gzip
import logging
import shutil
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.events import Trade, from_epoch_us
from marketdata.feeds.binance_csv import BinanceAggTrades, BinanceTrades
from marketdata.feeds.files import BadLine, FeedError, FileSource, Problems
from marketdata.symbols import SymbolMap
from tests.conftest import AGGTRADES, needs_aggtrades

SAMPLES = Path(__file__).parent / "samples"
REAL = AGGTRADES

AGG_LINE = "3800397495,87648.21000000,0.08185000,5723703861,5723703861,1767225600039409,True,True"


def symbols(*instruments: str, aliases: dict[tuple[str, str], str] | None = None) -> SymbolMap:
    return SymbolMap(instruments=instruments or ["BTCUSDT"], aliases=aliases)


def agg(path: str = "BTCUSDT-aggTrades-2026-01-01.csv", sm: SymbolMap | None = None, **options: str) -> BinanceAggTrades:
    return BinanceAggTrades(path=Path(path), symbols=sm or symbols(), options=options)


def read(path: Path, fmt: BinanceAggTrades | BinanceTrades, *, strict: bool = False) -> tuple[list[Trade], Problems]:
    problems = Problems(strict=strict)
    events = list(FileSource(path=path, format=fmt, problems=problems))
    assert all(isinstance(e, Trade) for e in events)
    return events, problems  # type: ignore[return-value]


def test_an_aggtrades_line_becomes_one_trade_with_decimal_prices() -> None:
    assert list(agg().parse(AGG_LINE)) == [
        Trade(
            symbol="BTCUSDT",
            ts=datetime(2026, 1, 1, 0, 0, 0, 39409, tzinfo=UTC),
            price=Decimal("87648.21000000"),
            size=Decimal("0.08185000"),
            source="binance",
            side="sell",
            trade_id=3800397495,
        )
    ]


def test_the_trade_id_column_becomes_the_trade_id_and_must_be_digits() -> None:
    (trade,) = BinanceTrades(path=Path("BTCUSDT-trades-2024-03.csv"), symbols=symbols(), options={}).parse(
        "51175358,17.80180000,5.69000000,101.29224200,1583709433583,True,True"
    )
    assert isinstance(trade, Trade)
    assert trade.trade_id == 51175358
    fmt = agg()
    fmt.parse(AGG_LINE)  # past line 1, where a non-numeric id would be a header
    with pytest.raises(BadLine) as raised:
        fmt.parse(AGG_LINE.replace("3800397495,", "38003974x5,", 1))
    assert (raised.value.kind, raised.value.detail) == ("bad number", "agg_trade_id '38003974x5' is not a trade id")


def test_buyer_maker_means_the_taker_sold() -> None:
    fmt = agg()
    sold = next(iter(fmt.parse(AGG_LINE)))
    bought = next(iter(fmt.parse(AGG_LINE.replace(",True,True", ",False,True"))))
    assert (sold.side, bought.side) == ("sell", "buy")  # type: ignore[union-attr]
    futures_spelling = next(iter(fmt.parse(AGG_LINE.replace(",True,True", ",true,true"))))
    assert futures_spelling.side == "sell"  # type: ignore[union-attr]


def test_microsecond_timestamps_are_detected_by_their_16_digits() -> None:
    (trade,) = agg().parse(AGG_LINE)
    assert trade.ts == from_epoch_us(1767225600039409)
    assert trade.ts.isoformat() == "2026-01-01T00:00:00.039409+00:00"


def test_millisecond_timestamps_are_detected_by_their_13_digits() -> None:
    (trade,) = agg().parse(AGG_LINE.replace("1767225600039409", "1704067200003"))
    assert trade.ts == from_epoch_us(1704067200003000)
    assert trade.ts.isoformat() == "2024-01-01T00:00:00.003000+00:00"


def test_timestamps_are_exact_like_from_epoch_us() -> None:
    fmt = agg()
    for us in (0 + 10**15, 1767225600039409, 1767225600999999, 1767226339347397, 9999999999999999):
        (trade,) = fmt.parse(AGG_LINE.replace("1767225600039409", str(us)))
        assert trade.ts == from_epoch_us(us)
    for ms in (1000000000000, 1704067200003, 1735689599999):
        (trade,) = fmt.parse(AGG_LINE.replace("1767225600039409", str(ms)))
        assert trade.ts == from_epoch_us(ms * 1000)


@pytest.mark.parametrize(
    "value", ["1767225600", "176722560003940", "1767225600039409000", "+767225600039", "17672256_00039", "", "1.767225600039e15"]
)
def test_times_of_any_other_length_or_shape_are_bad_time(value: str) -> None:
    with pytest.raises(BadLine) as caught:
        agg().parse(AGG_LINE.replace("1767225600039409", value))
    assert caught.value.kind == "bad time"
    assert f"transact_time {value!r}" in caught.value.detail


@pytest.mark.parametrize(
    ("price", "qty", "detail"),
    [
        ("abc", "0.1", "price 'abc' is not a number"),
        ("NaN", "0.1", "price 'NaN' is not a number"),
        ("Infinity", "0.1", "price 'Infinity' is not a number"),
        ("0", "0.1", "price '0' is not positive"),
        ("-1.5", "0.1", "price '-1.5' is not positive"),
        ("87648.21", "", "qty '' is not a number"),
        ("87648.21", "-0.1", "qty '-0.1' is not zero or more"),
    ],
)
def test_bad_numbers_name_the_field_and_the_value(price: str, qty: str, detail: str) -> None:
    line = f"1,{price},{qty},1,1,1767225600039409,True,True"
    with pytest.raises(BadLine) as caught:
        agg().parse(line)
    assert (caught.value.kind, caught.value.detail) == ("bad number", detail)


def test_a_cached_price_is_still_checked_on_its_first_sight_only() -> None:
    fmt = agg()
    first = next(iter(fmt.parse(AGG_LINE)))
    again = next(iter(fmt.parse(AGG_LINE)))
    assert first == again
    assert first.price is again.price  # type: ignore[union-attr]  # one Decimal for a repeated price


def test_wrong_column_count_says_what_was_expected() -> None:
    with pytest.raises(BadLine) as caught:
        agg().parse("3800397495,87648.21000000,0.08")
    assert caught.value.kind == "wrong column count"
    assert "expected 8 fields" in caught.value.detail and "found 3" in caught.value.detail


def test_is_buyer_maker_must_be_a_boolean() -> None:
    with pytest.raises(BadLine) as caught:
        agg().parse(AGG_LINE.replace(",True,True", ",1,True"))
    assert (caught.value.kind, caught.value.detail) == ("bad boolean", "is_buyer_maker '1' is not True or False")


def test_a_header_on_line_one_is_skipped_silently_but_not_later() -> None:
    fmt = agg()
    header = "agg_trade_id,price,qty,first_trade_id,last_trade_id,transact_time,is_buyer_maker,is_best_match"
    assert list(fmt.parse(header)) == []
    assert len(list(fmt.parse(AGG_LINE))) == 1
    with pytest.raises(BadLine):
        fmt.parse(header)
    fmt.reset()  # the next pass of --loop starts at line 1 again
    assert list(fmt.parse(header)) == []

    late = agg()
    assert len(list(late.parse(AGG_LINE))) == 1
    with pytest.raises(BadLine) as caught:
        late.parse(header)
    assert caught.value.kind == "bad number"


def test_the_symbol_option_wins_over_the_file_name() -> None:
    sm = symbols("BTCUSDT", "ETHUSDT")
    assert agg("ETHUSDT-aggTrades-2026-01-01.csv", sm, symbol="BTCUSDT").symbol == "BTCUSDT"


def test_the_symbol_comes_from_the_official_file_name() -> None:
    sm = symbols("BNBUSDT")
    assert agg("BNBUSDT-aggTrades-2026-01-01.zip", sm).symbol == "BNBUSDT"
    assert BinanceTrades(path=Path("data/BNBUSDT-trades-2019-01.csv.gz"), symbols=sm, options={}).symbol == "BNBUSDT"


def test_the_symbol_comes_from_any_file_name_part_the_map_knows() -> None:
    sm = symbols("BTCUSDT")
    assert agg("binance_spot_btcusdt_aggtrades_2026-01-01_first5000.csv", sm).symbol == "BTCUSDT"
    aliased = symbols("BTC/USDT", aliases={("binance", "BTCUSDT"): "BTC/USDT"})
    assert agg("my.btcusdt.dump.csv", aliased).symbol == "BTC/USDT"
    # Probing the name's parts does not count them as unknown symbols.
    assert not sm.unknown and not aliased.unknown


def test_a_file_name_without_a_known_symbol_asks_for_one() -> None:
    with pytest.raises(FeedError, match=r"cannot tell the symbol from the file name binance_trades_ms\.csv; pass --symbol"):
        BinanceTrades(path=SAMPLES / "binance_trades_ms.csv", symbols=symbols(), options={})


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(FeedError, match="symbl"):
        agg(symbl="BTCUSDT")


def test_every_line_of_an_unknown_symbol_is_counted_in_the_map() -> None:
    sm = SymbolMap(instruments=["ETHUSDT"])
    fmt = agg("XYZUSDT-aggTrades-2026-01-01.csv", sm)
    assert fmt.symbol is None
    for _ in range(3):
        assert list(fmt.parse(AGG_LINE)) == []
    assert sm.unknown == {"XYZUSDT": 3}


def test_sniff_knows_the_official_names_and_the_row_shapes() -> None:
    assert BinanceAggTrades.sniff(Path("BTCUSDT-aggTrades-2026-01-01.zip"), "")
    assert not BinanceTrades.sniff(Path("BTCUSDT-aggTrades-2026-01-01.zip"), "")
    assert BinanceAggTrades.sniff(Path("x.csv"), AGG_LINE)
    trade_line = "51175358,17.80180000,5.69000000,101.29224200,1583709433583,True,True"
    assert BinanceTrades.sniff(Path("x.csv"), trade_line)
    assert not BinanceAggTrades.sniff(Path("x.csv"), trade_line)
    assert not BinanceAggTrades.sniff(Path("x.csv"), '{"e":"aggTrade"}')


def test_the_hand_made_trades_file_reads_its_good_lines_and_reports_each_bad_one(caplog: pytest.LogCaptureFixture) -> None:
    path = SAMPLES / "binance_trades_ms.csv"
    caplog.set_level(logging.WARNING)
    events, problems = read(path, BinanceTrades(path=path, symbols=symbols(), options={"symbol": "BTCUSDT"}))
    assert [(str(e.price), str(e.size), e.ts.isoformat(), e.side) for e in events] == [
        ("42283.58000000", "0.00120000", "2024-01-01T00:00:00.003000+00:00", "sell"),
        ("42283.59000000", "0.01500000", "2024-01-01T00:00:00.117000+00:00", "buy"),
        ("42283.55000000", "0.03000000", "2024-01-01T00:00:01.006000+00:00", "sell"),
        ("42283.57000000", "0.00310000", "2024-01-01T00:00:01.006000+00:00", "buy"),
    ]
    assert problems.skipped == {"wrong column count": 2, "bad number": 1, "bad time": 1, "time goes backwards": 1, "bad boolean": 1}
    logged = "\n".join(caplog.messages)
    for line, kind in [
        (4, "wrong column count"),
        (5, "bad number"),
        (6, "bad time"),
        (7, "time goes backwards"),
        (8, "wrong column count"),
        (9, "bad boolean"),
    ]:
        assert f"{path}:{line}: {kind}: " in logged
    assert "price '42283.6O000000' is not a number" in logged
    assert "time '1704067200' is neither 13 digits (ms) nor 16 digits (µs)" in logged


# --- the real file: 5,000 rows of Binance's BTCUSDT aggTrades for 2026-01-01 ---------------------


def real_events(path: Path, **options: str) -> list[Trade]:
    events, problems = read(path, agg(str(path), symbols(), **options))
    assert problems.summary() == "none"
    return events


@needs_aggtrades
def test_the_real_file_gives_5000_trades_from_first_to_last_exactly() -> None:
    events = real_events(REAL)
    assert len(events) == 5000
    assert events[0] == Trade(
        "BTCUSDT",
        datetime(2026, 1, 1, 0, 0, 0, 39409, tzinfo=UTC),
        Decimal("87648.21000000"),
        Decimal("0.08185000"),
        "binance",
        "sell",
        3800397495,
    )
    assert events[-1] == Trade(
        "BTCUSDT",
        datetime(2026, 1, 1, 0, 12, 19, 347397, tzinfo=UTC),
        Decimal("87759.14000000"),
        Decimal("0.01614000"),
        "binance",
        "sell",
        3800402494,
    )
    assert events[1].side == "buy"


@needs_aggtrades
def test_zip_and_gzip_copies_of_the_real_file_read_the_same(tmp_path: Path) -> None:
    expected = real_events(REAL)
    zipped = tmp_path / "BTCUSDT-aggTrades-2026-01-01.zip"  # the official name: the symbol comes from it
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(REAL, "BTCUSDT-aggTrades-2026-01-01.csv")
    gzipped = tmp_path / (REAL.name + ".gz")
    with open(REAL, "rb") as source, gzip.open(gzipped, "wb") as target:
        shutil.copyfileobj(source, target)
    assert real_events(zipped) == expected
    assert real_events(gzipped) == expected


def corrupt_copy(tmp_path: Path) -> Path:
    """The real file with four bad lines: 10 truncated, 20 a bad price, 30 back in time, 40 a column too many."""
    lines = REAL.read_text().splitlines()
    lines[9] = lines[9][:30]
    fields = lines[19].split(",")
    fields[1] = "87648.2x"
    lines[19] = ",".join(fields)
    fields = lines[29].split(",")
    fields[5] = "1767225599000000"  # a second before the file starts
    lines[29] = ",".join(fields)
    lines[39] += ",True"
    path = tmp_path / REAL.name
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_aggtrades
def test_a_corrupted_copy_loses_exactly_its_four_bad_lines_each_reported_at_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = corrupt_copy(tmp_path)
    caplog.set_level(logging.WARNING)
    events, problems = read(path, agg(str(path)))
    assert len(events) == 4996
    assert problems.skipped == {"wrong column count": 2, "bad number": 1, "time goes backwards": 1}
    reported = [m for m in caplog.messages if "line skipped" in m]
    assert len(reported) == 4
    assert reported[0].startswith(f"{path}:10: wrong column count: expected 8 fields")
    assert reported[1].startswith(f"{path}:20: bad number: price '87648.2x' is not a number")
    assert reported[2].startswith(f"{path}:30: time goes backwards: 2025-12-31T23:59:59+00:00 after ")
    assert reported[3].startswith(f"{path}:40: wrong column count: expected 8 fields")


@needs_aggtrades
def test_strict_stops_at_the_first_bad_line_naming_file_and_line(tmp_path: Path) -> None:
    path = corrupt_copy(tmp_path)
    with pytest.raises(FeedError, match=rf"^{path}:10: wrong column count: "):
        read(path, agg(str(path)), strict=True)


@needs_aggtrades
def test_looping_over_the_file_again_gives_the_same_trades() -> None:
    source = FileSource(path=REAL, format=agg(str(REAL)), problems=Problems())
    first, again = list(source), list(source)
    assert len(first) == 5000 and first == again


def test_a_second_pass_for_loop_skips_the_header_again() -> None:
    path = SAMPLES / "binance_trades_ms.csv"
    problems = Problems()
    source = FileSource(path=path, format=BinanceTrades(path=path, symbols=symbols(), options={"symbol": "BTCUSDT"}), problems=problems)
    assert list(source) == list(source)
    assert sum(problems.skipped.values()) == 2 * 6
