"""LOBSTER message + orderbook files: an L2 book from L3 messages, verified row by row against the orderbook file."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.events import BookDelta, BookSnapshot, MarketEvent, Trade
from marketdata.feeds.files import BadLine, FeedError, FileSource, Problems, first_line
from marketdata.feeds.lobster import LobsterMessages
from marketdata.feeds.registry import format_detect
from marketdata.symbols import SymbolMap
from marketdata.worker.book import OrderBook

SAMPLES = Path(__file__).parent / "samples"
MESSAGES = SAMPLES / "AAPL_2012-06-21_34200000_57600000_message_2.csv"
ORDERBOOK = SAMPLES / "AAPL_2012-06-21_34200000_57600000_orderbook_2.csv"


def lobster(path: Path = MESSAGES, sm: SymbolMap | None = None, **options: str) -> LobsterMessages:
    return LobsterMessages(path=path, symbols=sm or SymbolMap(instruments=["AAPL"]), options=options)


def at(seconds: float) -> datetime:
    """Seconds after midnight of the sample day in New York (EDT, UTC−4) as UTC."""
    return datetime(2012, 6, 21, 4, tzinfo=UTC) + timedelta(seconds=seconds)


def d(text: str) -> Decimal:
    return Decimal(text)


def per_line(fmt: LobsterMessages, path: Path = MESSAGES) -> list[list[MarketEvent] | str]:
    """Each message line's events, or the kind of its BadLine."""
    fmt.reset()
    out: list[list[MarketEvent] | str] = []
    for line in path.read_text().splitlines():
        try:
            out.append(list(fmt.parse(line)))
        except BadLine as problem:
            out.append(problem.kind)
    fmt.close()
    return out


def test_the_first_row_seeds_the_book_and_each_message_becomes_a_delta_or_a_trade() -> None:
    lines = per_line(lobster())
    src = "lobster"
    assert lines[0] == [
        BookSnapshot(
            "AAPL", at(34200), ((d("11.8500"), d(400)), (d("11.8400"), d(500))), ((d("11.8600"), d(100)), (d("11.8700"), d(200))), src
        )
    ]
    assert lines[1] == [BookDelta("AAPL", at(34200.5), ((d("11.8500"), d(450)),), (), src, source_id=12)]
    assert lines[2] == [
        Trade("AAPL", at(34201.25), d("11.8600"), d(40), src, "buy"),  # a sell limit order executed: the taker bought
        BookDelta("AAPL", at(34201.25), (), ((d("11.8600"), d(60)),), src, source_id=11),
    ]
    # The ask at 118.60 is deleted; 118.80 comes into view from below (no message names it).
    assert lines[3] == [BookDelta("AAPL", at(34202), (), ((d("11.8600"), d(0)), (d("11.8800"), d(300))), src, source_id=11)]
    assert lines[4] == [Trade("AAPL", at(34203), d("11.8650"), d(25), src, None)]  # hidden: no side, book unchanged
    # A new bid level pushes 118.40 below the two levels of the file: it leaves the book.
    assert lines[5] == [BookDelta("AAPL", at(34204), ((d("11.8450"), d(10)), (d("11.8400"), d(0))), (), src, source_id=13)]
    assert lines[6] == [BookDelta("AAPL", at(34205), ((d("11.8500"), d(400)),), (), src, source_id=12)]


def test_a_book_mismatch_is_a_bad_line_and_the_next_row_seeds_the_book_again() -> None:
    lines = per_line(lobster())
    assert lines[7] == "book mismatch"
    assert lines[8] == [
        BookSnapshot(
            "AAPL",
            at(34207),
            ((d("11.8500"), d(400)), (d("11.8450"), d(4))),
            ((d("11.8700"), d(200)), (d("11.8750"), d(100))),
            "lobster",
        )
    ]
    assert lines[9] == [
        Trade("AAPL", at(34208), d("11.8450"), d(4), "lobster", "sell"),  # a buy limit order executed: the taker sold
        BookDelta("AAPL", at(34208), ((d("11.8450"), d(0)), (d("11.8400"), d(500))), (), "lobster", source_id=13),
    ]


def test_a_mismatch_names_the_level_and_both_quantities() -> None:
    fmt = lobster()
    with pytest.raises(BadLine) as caught:
        for line in MESSAGES.read_text().splitlines():
            fmt.parse(line)
    fmt.close()
    assert (
        caught.value.detail
        == "after type 2 of order 13, bid level 2 is 11.8450 × 5 from the messages and 11.8450 × 4 in the orderbook file"
    )


def test_halts_give_nothing_and_a_cross_is_a_trade_without_side() -> None:
    lines = per_line(lobster())
    assert lines[10] == []
    assert lines[11] == [Trade("AAPL", at(34210), d("11.8600"), d(1000), "lobster", None)]


def test_the_replayed_book_equals_every_orderbook_row() -> None:
    book = OrderBook("AAPL")
    rows = ORDERBOOK.read_text().splitlines()
    for number, events in enumerate(per_line(lobster())):
        if isinstance(events, str):
            continue  # the mismatched line: the next row reseeds
        for event in events:
            if isinstance(event, BookSnapshot | BookDelta):
                book.apply(event)
        bids, asks = book.top(2)
        fields = [int(field) for field in rows[number].split(",")]
        expected_asks = [(Decimal(fields[i]).scaleb(-4), Decimal(fields[i + 1])) for i in (0, 4)]
        expected_bids = [(Decimal(fields[i]).scaleb(-4), Decimal(fields[i + 1])) for i in (2, 6)]
        assert book.synced
        assert (bids, asks) == (expected_bids, expected_asks), f"after message {number + 1}"


def test_through_a_file_source_the_mismatch_is_reported_with_file_and_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    problems = Problems()
    fmt = lobster()
    events = list(FileSource(path=MESSAGES, format=fmt, problems=problems))
    assert problems.skipped == {"book mismatch": 1}
    assert any(message.startswith(f"{MESSAGES}:8: book mismatch: after type 2 of order 13") for message in caplog.messages)
    assert sum(isinstance(e, Trade) for e in events) == 4
    assert fmt._rows is None  # closed after the pass
    assert list(FileSource(path=MESSAGES, format=fmt, problems=problems)) == events  # --loop starts over


@pytest.mark.parametrize(
    ("line", "kind", "detail"),
    [
        ("34200.5,1,12,50,118500", "wrong column count", "expected 6 fields (time, type, order_id, size, price, direction), found 5"),
        ("9:30:00.5,1,12,50,118500,1", "bad time", "time '9:30:00.5' is not seconds after midnight (e.g. 34713.685155243)"),
        ("99999,1,12,50,118500,1", "bad time", "time '99999' is past the end of the day"),
        ("34200.5,1,12,50,11.85,1", "bad number", "price '11.85' is not a whole number"),
        ("34200.5,1,12,0,118500,1", "bad number", "size 0 is not positive"),
        ("34200.5,8,12,50,118500,1", "bad value", "type 8 is not 1 to 7"),
        ("34200.5,1,12,50,118500,0", "bad value", "direction 0 is neither 1 (buy) nor -1 (sell)"),
    ],
)
def test_bad_messages_say_which_field_and_value(line: str, kind: str, detail: str) -> None:
    fmt = lobster()
    with pytest.raises(BadLine) as caught:
        fmt.parse(line)
    fmt.close()
    assert (caught.value.kind, caught.value.detail) == (kind, detail)


def test_a_bad_message_reseeds_the_book_from_the_next_row(tmp_path: Path) -> None:
    messages = tmp_path / MESSAGES.name
    lines = MESSAGES.read_text().splitlines()
    lines[1] = "34200.5,1,12,fifty,118500,1"  # the bid at 118.50 never gets its 50 from the messages
    messages.write_text("\n".join(lines) + "\n")
    shutil.copy(ORDERBOOK, tmp_path / ORDERBOOK.name)
    out = per_line(lobster(messages), messages)
    assert out[1] == "bad number"
    assert isinstance(out[2][-1], BookSnapshot) and out[2][-1].bids[0] == (d("11.8500"), d(450))


def test_a_short_or_broken_orderbook_file_is_reported_as_bad_orderbook(tmp_path: Path) -> None:
    messages = tmp_path / MESSAGES.name
    shutil.copy(MESSAGES, messages)
    rows = ORDERBOOK.read_text().splitlines()
    rows[1] = "118600,100,118500"
    (tmp_path / ORDERBOOK.name).write_text("\n".join(rows[:10]) + "\n")
    problems = Problems()
    list(FileSource(path=messages, format=lobster(messages), problems=problems))
    assert problems.skipped == {"bad orderbook": 3, "book mismatch": 1}


def test_without_the_orderbook_file_it_replays_unverified_from_an_empty_book_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    messages = tmp_path / MESSAGES.name
    shutil.copy(MESSAGES, messages)
    caplog.set_level(logging.WARNING)
    problems = Problems()
    events = list(FileSource(path=messages, format=lobster(messages), problems=problems))
    assert [m for m in caplog.messages if "no orderbook file" in m] == [
        f"{messages}: no orderbook file {ORDERBOOK.name} beside it: replaying without verification, from an empty book "
        "(orders resting before the first message are missing from it)"
    ]
    assert problems.skipped == {}
    assert events[0] == BookSnapshot("AAPL", at(34200), (), ((d("11.8600"), d(100)),), "lobster")
    assert events[1] == BookDelta("AAPL", at(34200.5), ((d("11.8500"), d(50)),), (), "lobster", source_id=12)
    assert sum(isinstance(e, Trade) for e in events) == 4  # the executions (types 4 and 5) and the cross (6)


def test_times_are_new_york_wall_clock_to_the_microsecond() -> None:
    fmt = lobster()
    (snapshot,) = fmt.parse("34713.685155243,1,11,100,118600,-1")
    fmt.close()
    assert snapshot.ts == datetime(2012, 6, 21, 13, 38, 33, 685155, tzinfo=UTC)


def test_ticker_from_the_name_the_symbol_option_overrides_and_unknown_ones_are_counted() -> None:
    sm = SymbolMap(instruments=["AAPL", "AAPL.O"])
    assert lobster(sm=sm).symbol == "AAPL"
    assert lobster(sm=sm, symbol="AAPL.O").symbol == "AAPL.O"
    unknown = SymbolMap(instruments=[])
    fmt = lobster(sm=unknown)
    assert [fmt.parse(line) for line in MESSAGES.read_text().splitlines()[:3]] == [[], [], []]
    fmt.close()
    assert unknown.unknown == {"AAPL": 3}


def test_a_file_not_named_as_lobster_names_it_is_refused() -> None:
    with pytest.raises(FeedError, match="not a LOBSTER message file name"):
        lobster(Path("aapl_messages.csv"))
    with pytest.raises(FeedError, match="unknown option"):
        lobster(levels="5")


def test_detection_knows_the_message_file_by_its_name() -> None:
    assert format_detect(MESSAGES) is LobsterMessages
    assert not LobsterMessages.sniff(ORDERBOOK, first_line(ORDERBOOK))
