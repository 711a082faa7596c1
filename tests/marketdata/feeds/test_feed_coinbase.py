import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import pytest

from marketdata.events import BookDelta, BookSnapshot, MarketEvent, Quote, Trade
from marketdata.feeds.binance_ws import BinanceCapture
from marketdata.feeds.coinbase import CoinbaseCapture, CoinbaseState, SequenceGap, parse_message
from marketdata.feeds.files import BadLine, FileSource, Problems, first_line
from marketdata.symbols import SymbolMap

SAMPLE = Path(__file__).parent / "samples" / "coinbase_capture.jsonl"
T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def book(*levels: tuple[str, str]) -> tuple[tuple[D, D], ...]:
    return tuple((D(price), D(qty)) for price, qty in levels)


# The sample in time order. Trades of the market_trades snapshot (line 5, sent newest first) come
# first, by their own times, marked as backfill; books and quotes are at their message's timestamp, nanoseconds dropped.
# Subscriptions, heartbeats, candles and the BTC-USD ticker_batch entry without best bid/ask give nothing.
EXPECTED: list[MarketEvent] = [
    Trade("BTC-USD", at(-400), D("60000.00"), D("0.02"), "coinbase", "sell", 100, backfill=True),
    Trade("BTC-USD", at(-200), D("60000.01"), D("0.01"), "coinbase", "buy", 101, backfill=True),
    BookSnapshot(
        "BTC-USD", at(100), book(("60000.00", "1.5"), ("59999.99", "0.25")), book(("60000.01", "0.75"), ("60000.50", "2")), "coinbase"
    ),
    BookDelta("BTC-USD", at(200), book(("60000.00", "1.75")), book(("60000.01", "0")), "coinbase", source_id=3),  # its sequence_num
    Trade("BTC-USD", at(440), D("60000.50"), D("0.1"), "coinbase", "buy", 102),
    Trade("ETH-USD", at(441), D("3000.25"), D("1.5"), "coinbase", "sell", 55),
    Quote("BTC-USD", at(500), D("60000.00"), D("60000.50"), "coinbase"),
    Quote("ETH-USD", at(700), D("3000.20"), D("3000.30"), "coinbase"),
    BookDelta("BTC-USD", at(800), (), book(("60000.02", "0.3")), "coinbase", source_id=9),
]


class RecordingProblems(Problems):
    def __init__(self) -> None:
        super().__init__()
        self.reported: list[tuple[str, str]] = []

    def report(self, where: str, problem: BadLine) -> None:
        self.reported.append((where, problem.kind))
        super().report(where, problem)


def read(path: Path) -> tuple[list[MarketEvent], RecordingProblems, CoinbaseCapture]:
    capture = CoinbaseCapture(path=path, symbols=SymbolMap(instruments=["BTC-USD", "ETH-USD"]), options={})
    problems = RecordingProblems()
    return list(FileSource(path=path, format=capture, problems=problems)), problems, capture


def message(channel: str, timestamp: str, events: list[dict[str, Any]], sequence: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": channel, "client_id": "", "timestamp": timestamp}
    if sequence is not None:
        body["sequence_num"] = sequence
    body["events"] = events
    return body


def trades(time: str, *items: dict[str, str], kind: str = "update", sequence: int | None = None) -> dict[str, Any]:
    return message("market_trades", time, [{"type": kind, "trades": list(items)}], sequence)


def trade(trade_id: str, time: str, price: str = "60000", side: str = "BUY", product: str = "BTC-USD") -> dict[str, str]:
    return {"trade_id": trade_id, "product_id": product, "price": price, "size": "1", "side": side, "time": time}


def line(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def test_the_sample_capture_yields_every_event_exactly_in_time_order() -> None:
    events, problems, capture = read(SAMPLE)
    assert events == EXPECTED
    assert problems.reported == []
    assert capture.gaps == 0


def test_nanosecond_timestamps_are_cut_to_the_microsecond() -> None:
    body = message("l2_data", "2024-05-01T10:00:00.123456789Z", [{"type": "update", "product_id": "BTC-USD", "updates": []}])
    (delta,) = parse_message(body, symbols=SymbolMap(instruments=["BTC-USD"]), state=CoinbaseState())
    assert delta.ts == at(123) + timedelta(microseconds=456)


def test_a_market_trade_names_the_maker_side_so_the_taker_is_the_other() -> None:
    body = trades("2024-05-01T10:00:00Z", trade("1", "2024-05-01T10:00:00Z", side="BUY"), trade("2", "2024-05-01T10:00:00Z", side="SELL"))
    events = parse_message(body, symbols=SymbolMap(instruments=["BTC-USD"]), state=CoinbaseState())
    assert [e.side for e in events if isinstance(e, Trade)] == ["sell", "buy"]


def test_a_sequence_gap_is_counted_and_logged_while_its_events_still_come_through(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [
        line(trades("2024-05-01T10:00:00.000Z", trade("1", "2024-05-01T10:00:00.000Z"), sequence=11)),
        line(trades("2024-05-01T10:00:00.100Z", trade("2", "2024-05-01T10:00:00.100Z"), sequence=12)),
        line(trades("2024-05-01T10:00:00.200Z", trade("3", "2024-05-01T10:00:00.200Z"), sequence=17)),
        line(trades("2024-05-01T10:00:00.300Z", trade("4", "2024-05-01T10:00:00.300Z"), sequence=18)),
    ]
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n")

    with caplog.at_level(logging.WARNING, logger="marketdata.feeds.coinbase"):
        events, problems, capture = read(path)

    assert [e.ts for e in events] == [at(0), at(100), at(200), at(300)]
    assert problems.reported == []
    assert (capture.gaps, capture.missed) == (1, 4)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: sequence_num 17 after 12: 4 message(s) lost; order books stale until the next l2_data snapshot"
    ]


def test_a_live_connector_learns_of_a_gap_even_from_a_message_it_cannot_use() -> None:
    symbols, state = SymbolMap(instruments=["BTC-USD"]), CoinbaseState()
    parse_message(trades("2024-05-01T10:00:00Z", sequence=4), symbols=symbols, state=state)
    assert state.take_gaps() == []

    bad = trades("2024-05-01T10:00:01Z", trade("9", "not a time"), sequence=9)
    with pytest.raises(BadLine) as raised:
        parse_message(bad, symbols=symbols, state=state)
    assert raised.value.kind == "bad time"

    gaps = state.take_gaps()
    assert gaps == [SequenceGap(after=4, got=9)]
    assert gaps[0].missed == 4
    assert state.take_gaps() == []  # taken once


def test_a_new_connection_is_no_gap_and_its_trade_snapshot_repeats_nothing_already_seen(tmp_path: Path) -> None:
    lines = [
        line(trades("2024-05-01T10:00:00.000Z", trade("100", "2024-05-01T09:59:59.900Z"), kind="snapshot", sequence=0)),
        line(trades("2024-05-01T10:00:00.500Z", trade("101", "2024-05-01T10:00:00.400Z"), sequence=1)),
        # The recorder reconnected: numbering starts again with a snapshot of recent trades.
        line(
            trades(
                "2024-05-01T10:00:01.000Z",
                trade("102", "2024-05-01T10:00:00.900Z"),
                trade("101", "2024-05-01T10:00:00.400Z"),
                trade("100", "2024-05-01T09:59:59.900Z"),
                kind="snapshot",
                sequence=0,
            )
        ),
    ]
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n")

    events, problems, capture = read(path)

    assert [e.ts for e in events] == [at(-100), at(400), at(900)]
    assert problems.reported == []
    assert capture.gaps == 0
    assert capture.state.restarts == 1


def test_broken_lines_are_reported_at_their_line_and_every_other_event_still_comes_through(tmp_path: Path) -> None:
    s = SAMPLE.read_text().splitlines()
    ticker = {"type": "ticker", "product_id": "BTC-USD", "price": "1", "best_bid": "60,000.00", "best_ask": "60000.50"}
    l2_update = {
        "type": "update",
        "product_id": "BTC-USD",
        "updates": [{"side": "bid", "event_time": "2024-05-01T10:00:00Z", "new_quantity": "1"}],
    }
    broken = [
        ('{"channel":"market_trades","client_id":"","timestamp":"2024-05-01T10:00:00.3', "bad json"),
        (line(message("ticker", "2024-05-01T10:00:00.5Z", [{"type": "update", "tickers": [ticker]}])), "bad number"),
        (line(message("l2_data", "2024-05-01T10:00:00.6Z", [l2_update])), "missing field"),
        (line(message("ticker", "2024-05-01 at ten", [])), "bad time"),
        ('{"ts":"2024-05-01T10:00:00.9Z","data":"{\\"channel\\":\\"l2_data\\",\\"timestamp\\":\\"2024-05-01T1', "bad json"),
        # A minute before what has been released by then: beyond the 2 s window.
        (line(trades("2024-05-01T10:00:05Z", trade("7", "2024-05-01T09:59:05Z"))), "time goes backwards"),
    ]
    # Moves exchange time on far enough for the sample's events to be released before the last line.
    later = line(message("ticker", "2024-05-01T10:00:05Z", [{"type": "update", "tickers": [{**ticker, "best_bid": "60000.40"}]}]))
    lines = [*s[:2], broken[0][0], *s[2:5], broken[1][0], broken[2][0], *s[5:8], broken[3][0], *s[8:], broken[4][0], later, broken[5][0]]
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n")

    events, problems, capture = read(path)

    assert events == [*EXPECTED, Quote("BTC-USD", at(5000), D("60000.40"), D("60000.50"), "coinbase")]
    assert problems.reported == [(f"{path}:{lines.index(text) + 1}", kind) for text, kind in broken]
    assert [lines.index(text) + 1 for text, _ in broken] == [3, 7, 8, 12, 16, 18]
    assert capture.gaps == 0


def test_messages_of_channels_without_prices_give_nothing_and_are_no_problem() -> None:
    symbols, state = SymbolMap(instruments=["BTC-USD"]), CoinbaseState()
    for channel in ("heartbeats", "subscriptions", "candles", "status", "futures_balance_summary"):
        assert parse_message(message(channel, "2024-05-01T10:00:00Z", [{}]), symbols=symbols, state=state) == []
    assert state.unknown_channels == {"futures_balance_summary"}


def test_an_error_message_from_coinbase_is_a_bad_line() -> None:
    with pytest.raises(BadLine) as raised:
        parse_message({"type": "error", "message": "failure to subscribe"}, symbols=SymbolMap(instruments=[]), state=CoinbaseState())
    assert (raised.value.kind, raised.value.detail) == ("error message", "'failure to subscribe'")


def test_an_envelope_may_hold_the_message_as_a_string_or_as_an_object() -> None:
    body = message(
        "ticker", "2024-05-01T10:00:00Z", [{"type": "update", "tickers": [{"product_id": "BTC-USD", "best_bid": "1", "best_ask": "2"}]}]
    )
    capture = CoinbaseCapture(path=Path("x"), symbols=SymbolMap(instruments=["BTC-USD"]), options={})
    as_string = capture.parse(line({"ts": 1714557600001, "data": line(body)}))
    as_object = capture.parse(line({"ts": "2024-05-01T10:00:00.001Z", "data": body}))
    assert as_string == as_object == [Quote("BTC-USD", T0, D("1"), D("2"), "coinbase")]


def test_a_capture_is_recognised_from_its_first_line() -> None:
    assert CoinbaseCapture.sniff(SAMPLE, first_line(SAMPLE))
    enveloped = line({"ts": 1714557600000, "data": line(message("heartbeats", "2024-05-01T10:00:00Z", []))})
    assert CoinbaseCapture.sniff(SAMPLE, enveloped)
    assert not BinanceCapture.sniff(SAMPLE, first_line(SAMPLE))
    assert not CoinbaseCapture.sniff(SAMPLE, '{"ts":1,"data":"not json"}')


GOOD_ITEM: dict[str, object] = {
    "trade_id": "41",
    "product_id": "BTC-USD",
    "price": "60000.10",
    "size": "0.5",
    "side": "SELL",
    "time": "2024-05-01T10:00:00.123456789Z",
}
CHANGES = [
    {},
    {"trade_id": "abc"},  # an id that is no number: kept as text by the checked path
    {"trade_id": ""},
    {"trade_id": 41},
    {"trade_id": None},
    {"time": "2024-05-01T10:00:00"},  # no offset
    {"time": "2024-05-01T12:00:00+02:00"},
    {"time": "yesterday"},
    {"time": 1714557600},
    {"price": "sixty"},
    {"price": "NaN"},
    {"price": 60000},
    {"size": "-Infinity"},
    {"side": "buy"},
    {"side": None},
]


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("missing", [None, "trade_id", "price", "size", "side", "time"])
def test_a_market_trade_reads_as_the_field_by_field_check_reads_it(change: dict[str, object], missing: str | None) -> None:
    """The fast path for well-formed trades gives what the checked path gives, trades and bad lines alike."""
    from marketdata.feeds import coinbase

    item = {k: v for k, v in (GOOD_ITEM | change).items() if k != missing}

    def outcome(read: Any) -> object:
        try:
            return read()
        except BadLine as problem:
            return (problem.kind, problem.detail)

    trade_id = item.get("trade_id")
    number = coinbase._trade_number(trade_id)
    fast = outcome(lambda: coinbase._trade("BTC-USD", item, trade_id, number, backfill=False))
    assert fast == outcome(lambda: coinbase._trade_checked("BTC-USD", item, backfill=False))
