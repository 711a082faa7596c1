"""Tardis.dev CSV: trades, incremental_book_L2, quotes and book_snapshot_25, on either clock."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from marketdata.events import BookDelta, BookSnapshot, MarketEvent, Quote, Trade
from marketdata.feeds.files import BadLine, FeedError, FileSource, Problems
from marketdata.feeds.registry import file_sources, format_detect
from marketdata.feeds.tardis import TardisCsv
from marketdata.symbols import SymbolMap

T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)
US = 1714557600000000  # T0 in µs


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


class RecordingProblems(Problems):
    def __init__(self) -> None:
        super().__init__()
        self.reported: list[tuple[int, str]] = []

    def report(self, where: str, problem: BadLine) -> None:
        self.reported.append((int(where.rpartition(":")[2]), problem.kind))
        super().report(where, problem)


def read(tmp_path: Path, lines: list[str], **options: str) -> tuple[list[MarketEvent], RecordingProblems, TardisCsv]:
    path = tmp_path / "binance_trades_2024-05-01_BTCUSDT.csv"
    path.write_text("\n".join(lines) + "\n")
    fmt = TardisCsv(path=path, symbols=SymbolMap(instruments=["BTCUSDT"]), options=options)
    problems = RecordingProblems()
    return list(FileSource(path=path, format=fmt, problems=problems)), problems, fmt


TRADES = [
    "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
    f"binance,BTCUSDT,{US + 1000},{US + 3500},5001,buy,60000.10,0.250",
    f"binance,BTCUSDT,{US + 2000},{US + 4500},5002,sell,60000.00,0.010",
    f"binance,BTCUSDT,{US + 3000},{US + 5500},,unknown,60000.00,0.5",
    f"binance,BTCUSDT,{US + 4000},{US + 6500},5004,buy,sixty,1",
]


def test_trades_carry_id_and_taker_side_at_the_exchange_time(tmp_path: Path) -> None:
    events, problems, fmt = read(tmp_path, TRADES)
    assert events == [
        Trade("BTCUSDT", at(1), D("60000.10"), D("0.250"), "binance", "buy", 5001),
        Trade("BTCUSDT", at(2), D("60000.00"), D("0.010"), "binance", "sell", 5002),
        Trade("BTCUSDT", at(3), D("60000.00"), D("0.5"), "binance", None, None),
    ]
    assert problems.reported == [(5, "bad number")]
    assert fmt.offsets.ms == {2: 4}  # local_timestamp − timestamp of every row (2.5 ms, to the ms below), the bad one too


def test_on_the_receive_clock_rows_are_at_their_local_timestamp(tmp_path: Path) -> None:
    events, _, _ = read(tmp_path, TRADES[:3], clock="receive")
    assert [e.ts for e in events] == [at(3.5), at(4.5)]


def test_incremental_book_rows_group_into_a_snapshot_then_deltas_by_time(tmp_path: Path) -> None:
    lines = [
        "exchange,symbol,timestamp,local_timestamp,is_snapshot,side,price,amount",
        f"binance,BTCUSDT,{US},{US + 100},true,ask,60000.10,0.8",
        f"binance,BTCUSDT,{US},{US + 100},true,bid,60000.00,1.5",
        f"binance,BTCUSDT,{US},{US + 100},true,bid,59999.90,2",
        f"binance,BTCUSDT,{US + 1000},{US + 1100},false,bid,60000.00,0",
        f"binance,BTCUSDT,{US + 1000},{US + 1100},false,ask,60000.20,0.5",
        f"binance,BTCUSDT,{US + 2000},{US + 2100},false,bid,59999.80,1",
        f"binance,BTCUSDT,{US + 3000},{US + 3100},maybe,bid,59999.80,1",
    ]
    events, problems, _ = read(tmp_path, lines)
    level = lambda p, q: (D(p), D(q))  # noqa: E731
    assert events == [
        BookSnapshot("BTCUSDT", T0, (level("60000.00", "1.5"), level("59999.90", "2")), (level("60000.10", "0.8"),), "binance"),
        BookDelta("BTCUSDT", at(1), (level("60000.00", "0"),), (level("60000.20", "0.5"),), "binance"),
        BookDelta("BTCUSDT", at(2), (level("59999.80", "1"),), (), "binance"),  # released at the end of the file
    ]
    assert problems.reported == [(8, "bad boolean")]


def test_quotes_become_quotes_and_one_sided_rows_are_passed_over(tmp_path: Path) -> None:
    lines = [
        "exchange,symbol,timestamp,local_timestamp,ask_amount,ask_price,bid_price,bid_amount",
        f"binance,BTCUSDT,{US},{US + 100},0.4,60000.10,60000.00,1.2",
        f"binance,BTCUSDT,{US + 1000},{US + 1100},,,60000.00,1.2",
        f"binance,BTCUSDT,{US + 2000},{US + 2100},0.4,60000.10,60000.20,1.2",
    ]
    events, problems, _ = read(tmp_path, lines)
    assert events == [Quote("BTCUSDT", T0, D("60000.00"), D("60000.10"), "binance")]
    assert problems.passed_over == {"one-sided quote": 1}
    assert problems.reported == [(4, "crossed quote")]


def test_book_snapshot_25_rows_are_whole_books_of_the_levels_present(tmp_path: Path) -> None:
    header = ["exchange", "symbol", "timestamp", "local_timestamp"]
    for n in range(25):
        header += [f"asks[{n}].price", f"asks[{n}].amount", f"bids[{n}].price", f"bids[{n}].amount"]
    cells = ["binance", "BTCUSDT", str(US), str(US + 100), "60000.10", "0.8", "60000.00", "1.5", "60000.20", "0.3", "59999.90", "2"]
    cells += [""] * (len(header) - len(cells))
    events, problems, _ = read(tmp_path, [",".join(header), ",".join(cells)])
    assert problems.reported == []
    assert events == [
        BookSnapshot(
            "BTCUSDT",
            T0,
            ((D("60000.00"), D("1.5")), (D("59999.90"), D("2"))),
            ((D("60000.10"), D("0.8")), (D("60000.20"), D("0.3"))),
            "binance",
        )
    ]


def test_a_tardis_file_is_detected_from_its_header_and_refuses_nothing_but_unknown_options(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text("\n".join(TRADES[:2]) + "\n")
    assert format_detect(path) is TardisCsv
    with pytest.raises(FeedError, match="unknown option"):
        TardisCsv(path=path, symbols=SymbolMap(instruments=[]), options={"time": "x"})


def test_formats_without_a_receive_clock_refuse_clock_receive(tmp_path: Path) -> None:
    path = tmp_path / "BTCUSDT-aggTrades-2026-01-01.csv"
    path.write_text("3800397495,87648.21000000,0.08185000,5723703861,5723703861,1767225600039409,True,True\n")
    with pytest.raises(FeedError, match="has no receive clock"):
        file_sources(paths=[path], format_name=None, symbols=SymbolMap(instruments=[]), options={"clock": "receive"}, problems=Problems())
    (source,) = file_sources(
        paths=[path], format_name=None, symbols=SymbolMap(instruments=["BTCUSDT"]), options={"clock": "exchange"}, problems=Problems()
    )
    assert source.clock == "exchange"
