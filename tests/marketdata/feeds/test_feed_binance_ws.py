import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

import pytest

from marketdata.events import BookDelta, BookSnapshot, MarketEvent, Quote, Trade
from marketdata.feeds.binance_ws import BinanceCapture, BinanceFrameState, parse_frame, parse_receive_time
from marketdata.feeds.coinbase import CoinbaseCapture
from marketdata.feeds.files import BadLine, ClockOffsets, FileSource, Problems, first_line
from marketdata.symbols import SymbolMap

SAMPLE = Path(__file__).parent / "samples" / "binance_ws_capture.jsonl"
T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)  # epoch ms 1714557600000


def at(ms: int) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def book(*levels: tuple[str, str]) -> tuple[tuple[D, D], ...]:
    return tuple((D(price), D(qty)) for price, qty in levels)


# The sample in exchange-time order: the BTC trade received after the ETH aggTrade of 10:00:01.195
# (line 10) is back at 10:00:00.390. Frames without an event time (the REST snapshot of line 6, the
# bookTickers of lines 7 and 11, the partial depth of line 14) take the newest exchange time E so far,
# not their receive time: line 11 was received at 10:00:01.500 but is stamped 10:00:01.200.
EXPECTED: list[MarketEvent] = [
    BookDelta("BTCUSDT", at(0), book(("60000.00", "1.500")), book(("60000.10", "0.800")), "binance", 1001, 1003),
    Trade("BTCUSDT", at(48), D("60000.10"), D("0.250"), "binance", "buy", 5001),
    Trade("ETHUSDT", at(79), D("3000.50"), D("1.2000"), "binance", "sell", 3001),
    BookDelta("BTCUSDT", at(100), book(("60000.00", "1.250")), book(("60000.10", "0"), ("60000.20", "0.500")), "binance", 1004, 1006),
    BookSnapshot(
        "BTCUSDT",
        at(100),
        book(("60000.00", "1.250"), ("59999.90", "2.000")),
        book(("60000.20", "0.500"), ("60000.30", "0.300")),
        "binance",
        1006,
    ),
    Quote("BTCUSDT", at(100), D("60000.00"), D("60000.20"), "binance", 1006),
    Trade("BTCUSDT", at(390), D("60000.00"), D("0.010"), "binance", "sell", 7003),
    BookDelta("BTCUSDT", at(1000), book(("60000.00", "0"), ("59999.90", "2.500")), (), "binance", 1007, 1009),
    Trade("ETHUSDT", at(1195), D("3001.00"), D("0.5000"), "binance", "buy", 9001),
    Quote("ETHUSDT", at(1200), D("3000.90"), D("3001.10"), "binance", 2001),
    BookDelta("ETHUSDT", at(1600), book(("3000.90", "4.0000")), book(("3001.10", "2.0000")), "binance", 2001, 2002),
    Trade("BTCUSDT", at(2499), D("60001.00"), D("0.100"), "binance", "buy", 7004),
    BookSnapshot("ETHUSDT", at(2500), book(("3000.90", "4.0000"), ("3000.80", "1.0000")), book(("3001.10", "2.0000")), "binance", 2002),
]


class RecordingProblems(Problems):
    def __init__(self) -> None:
        super().__init__()
        self.reported: list[tuple[str, str]] = []

    def report(self, where: str, problem: BadLine) -> None:
        self.reported.append((where, problem.kind))
        super().report(where, problem)


def read(path: Path, symbols: SymbolMap | None = None) -> tuple[list[MarketEvent], RecordingProblems]:
    symbols = symbols or SymbolMap(instruments=["BTCUSDT", "ETHUSDT"])
    problems = RecordingProblems()
    capture = BinanceCapture(path=path, symbols=symbols, options={})
    return list(FileSource(path=path, format=capture, problems=problems)), problems


def frame(stream: str, **data: object) -> str:
    return json.dumps({"stream": stream, "data": data}, separators=(",", ":"))


def sample_lines() -> list[str]:
    return SAMPLE.read_text().splitlines()


def test_the_sample_capture_yields_every_event_exactly_in_exchange_time_order() -> None:
    events, problems = read(SAMPLE)
    assert events == EXPECTED
    assert problems.reported == []
    assert all(isinstance(e.ts, datetime) and e.ts.tzinfo is UTC for e in events)


def test_a_frame_received_late_within_two_seconds_is_put_back_in_its_place() -> None:
    events, _ = read(SAMPLE)
    late = Trade("BTCUSDT", at(390), D("60000.00"), D("0.010"), "binance", "sell", 7003)
    # Received after the 10:00:01.195 ETH trade, released between the snapshot and the next delta.
    assert events.index(late) == 6
    assert [e.ts for e in events] == sorted(e.ts for e in events)


def test_broken_lines_are_reported_at_their_line_and_every_other_event_still_comes_through(tmp_path: Path) -> None:
    s = sample_lines()
    broken = [
        ('{"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":17145576', "bad json"),
        (
            frame(
                "btcusdt@aggTrade",
                e="aggTrade",
                E=1714557600100,
                s="BTCUSDT",
                a=1,
                p="60,000.10",
                q="1",
                f=1,
                l=1,
                T=1714557600100,
                m=False,
            ),
            "bad number",
        ),
        (frame("ethusdt@trade", e="trade", E=1714557600100, s="ETHUSDT", t=1, p="3000", T=1714557600100, m=True), "missing field"),
        (frame("btcusdt@kline_1m", e="kline", E=1714557600100, s="BTCUSDT", k={}), "unsupported stream"),
        ('{"lastUpdateId":1,"bids":[],"asks":[]}', "snapshot without symbol"),  # BTC and ETH depth both shown by then
        ("yesterday " + frame("btcusdt@bookTicker", u=1, s="BTCUSDT", b="1", B="1", a="2", A="1"), "not a frame"),
        # Ten seconds before what has already been released: beyond the 2 s window.
        (
            frame("btcusdt@trade", e="trade", E=1714557595000, s="BTCUSDT", t=1, p="59000", q="1", T=1714557595000, m=False),
            "time goes backwards",
        ),
    ]
    lines = [
        *s[:3],
        broken[0][0],
        *s[3:6],
        broken[1][0],
        *s[6:9],
        broken[2][0],
        broken[3][0],
        *s[9:12],
        broken[4][0],
        broken[5][0],
        *s[12:],
        broken[6][0],
    ]
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(lines) + "\n")

    events, problems = read(path)

    assert events == EXPECTED
    assert problems.reported == [(f"{path}:{lines.index(line) + 1}", kind) for line, kind in broken]
    assert [lines.index(line) + 1 for line, _ in broken] == [4, 8, 12, 13, 17, 18, 21]


def test_a_book_ticker_takes_the_newest_exchange_time_not_its_receive_time(tmp_path: Path) -> None:
    ticker = frame("btcusdt@bookTicker", u=1, s="BTCUSDT", b="1.0", B="1", a="1.1", A="1")
    path = tmp_path / "capture.jsonl"
    trade = frame("btcusdt@trade", e="trade", E=1714557600700, s="BTCUSDT", t=1, p="1.05", q="1", T=1714557600650, m=False)
    # Before any exchange time: nothing to go by on line 1, the receive time on line 2.
    path.write_text("\n".join([ticker, "1714557600600 " + ticker, trade, ticker, "1714557601970 " + ticker]) + "\n")

    events, problems = read(path)

    assert problems.reported == [(f"{path}:1", "no time")]
    # The old stamping put line 5 at its receive time, 1.27 s behind the book it belongs with.
    assert [(type(e).__name__, e.ts) for e in events] == [("Quote", at(600)), ("Trade", at(650)), ("Quote", at(700)), ("Quote", at(700))]
    assert [e.update_id for e in events if isinstance(e, Quote)] == [1, 1, 1]


def test_on_the_receive_clock_every_event_is_at_its_line_receive_time(tmp_path: Path) -> None:
    ticker = frame("btcusdt@bookTicker", u=9, s="BTCUSDT", b="1.0", B="1", a="1.1", A="1")
    trade = frame("btcusdt@trade", e="trade", E=1714557600700, s="BTCUSDT", t=1, p="1.05", q="1", T=1714557600650, m=False)
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(["1714557601970 " + trade, "1714557601980 " + ticker, trade]) + "\n")
    capture = BinanceCapture(path=path, symbols=SymbolMap(instruments=["BTCUSDT"]), options={"clock": "receive"})
    problems = RecordingProblems()

    events = list(FileSource(path=path, format=capture, problems=problems))

    assert [(type(e).__name__, e.ts) for e in events] == [("Trade", at(1970)), ("Quote", at(1980))]
    assert problems.reported == [(f"{path}:3", "no time")]  # no receive time to replay it on
    assert ClockOffsets.summary([capture.offsets]) == "median +1.27 s, min +1.27 s, max +1.27 s (1 lines)"


def test_a_capture_with_hftbacktest_nanosecond_prefixes_reads_exactly(tmp_path: Path) -> None:
    # hftbacktest's collector: `<local receive time in ns> <raw combined-stream frame>`.
    agg = frame(
        "btcusdt@aggTrade", e="aggTrade", E=1714557600050, s="BTCUSDT", a=5001, p="60000.10", q="0.25", f=1, l=2, T=1714557600048, m=False
    )
    ticker = frame("btcusdt@bookTicker", u=400900217, s="BTCUSDT", b="60000.00", B="1", a="60000.10", A="1")
    path = tmp_path / "btcusdt_20240501.dat"
    path.write_text(f"1714557601320123456 {agg}\n1714557601330999999 {ticker}\n")

    events, problems = read(path)

    assert problems.reported == []
    assert events == [
        Trade("BTCUSDT", at(48), D("60000.10"), D("0.25"), "binance", "buy", 5001),
        Quote("BTCUSDT", at(50), D("60000.00"), D("60000.10"), "binance", 400900217),
    ]
    receive = BinanceCapture(path=path, symbols=SymbolMap(instruments=["BTCUSDT"]), options={"clock": "receive"})
    assert [e.ts for e in FileSource(path=path, format=receive, problems=Problems())] == [
        at(1320) + timedelta(microseconds=123),
        at(1330) + timedelta(microseconds=999),
    ]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("1714557600", at(0)),
        ("1714557600.123456", at(123) + timedelta(microseconds=456)),
        ("1714557600123", at(123)),
        ("1714557600123.5", at(123) + timedelta(microseconds=500)),
        ("1714557600123456789", at(123) + timedelta(microseconds=456)),
        ("1714557600123456", at(123) + timedelta(microseconds=456)),
        ("2024-05-01T10:00:00.123456Z", at(123) + timedelta(microseconds=456)),
        ("2024-05-01T12:00:00.123+02:00", at(123)),
    ],
)
def test_the_receive_time_may_be_epoch_s_ms_us_ns_by_magnitude_or_iso_8601(prefix: str, expected: datetime) -> None:
    ts = parse_receive_time(prefix)
    assert ts == expected
    assert ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize("prefix", ["2024-05-01T10:00:00", "17145576OO123", "10:00:00", "99999999", "171455760012345678901"])
def test_a_receive_time_that_is_not_exact_utc_is_a_bad_time(prefix: str) -> None:
    with pytest.raises(BadLine) as raised:
        parse_receive_time(prefix)
    assert raised.value.kind == "bad time"
    assert prefix in raised.value.detail


def test_event_times_in_microseconds_are_read_exactly() -> None:
    state = BinanceFrameState()
    data = {"e": "trade", "E": 1714557600123457, "s": "BTCUSDT", "t": 1, "p": "1", "q": "1", "T": 1714557600123456, "m": False}
    (trade,) = parse_frame(
        {"stream": "btcusdt@trade", "data": data}, symbols=SymbolMap(instruments=["BTCUSDT"]), received=None, state=state
    )
    assert trade.ts == at(123) + timedelta(microseconds=456)
    assert state.latest == at(123) + timedelta(microseconds=457)


def test_a_rest_snapshot_goes_to_its_symbol_key_or_the_only_depth_stream_shown() -> None:
    symbols = SymbolMap(instruments=["BTCUSDT", "ETHUSDT"])
    state = BinanceFrameState()
    snapshot = {"lastUpdateId": 7, "bids": [["1.0", "2"]], "asks": [["1.1", "3"]]}
    received = at(5)

    with pytest.raises(BadLine) as raised:
        parse_frame(snapshot, symbols=symbols, received=received, state=state)
    assert raised.value.kind == "snapshot without symbol"
    assert '"symbol"' in raised.value.detail

    diff = {"e": "depthUpdate", "E": 1714557600001, "s": "ETHUSDT", "U": 1, "u": 6, "b": [], "a": []}
    parse_frame({"stream": "ethusdt@depth", "data": diff}, symbols=symbols, received=None, state=state)
    (guessed,) = parse_frame(snapshot, symbols=symbols, received=received, state=state)
    # At the newest exchange time (the diff's E), not the receive time.
    assert guessed == BookSnapshot("ETHUSDT", at(1), book(("1.0", "2")), book(("1.1", "3")), "binance", 7)

    # What a live connector does with its own REST call: says whose it is.
    (named,) = parse_frame({**snapshot, "symbol": "btcusdt"}, symbols=symbols, received=None, state=state)
    assert named == BookSnapshot("BTCUSDT", at(1), book(("1.0", "2")), book(("1.1", "3")), "binance", 7)


def test_subscription_replies_carry_nothing_and_error_replies_are_bad_lines() -> None:
    symbols, state = SymbolMap(instruments=[]), BinanceFrameState()
    assert parse_frame({"result": None, "id": 1}, symbols=symbols, received=None, state=state) == []
    with pytest.raises(BadLine) as raised:
        parse_frame({"error": {"code": 2, "msg": "Invalid request"}, "id": 3}, symbols=symbols, received=None, state=state)
    assert raised.value.kind == "error reply"


def test_events_of_unknown_symbols_are_skipped_and_counted_yet_still_keep_the_clock() -> None:
    symbols = SymbolMap(instruments=["BTCUSDT"])
    events, problems = read(SAMPLE, symbols)
    assert events == [e for e in EXPECTED if e.symbol == "BTCUSDT"]
    assert problems.reported == []
    assert symbols.unknown["ETHUSDT"] == 5

    # An unknown symbol's event time is still the exchange's clock for frames that carry none.
    state = BinanceFrameState()
    eth = {"e": "trade", "E": 1714557600777, "s": "ETHUSDT", "t": 1, "p": "1", "q": "1", "T": 1714557600776, "m": True}
    assert parse_frame({"stream": "ethusdt@trade", "data": eth}, symbols=symbols, received=None, state=state) == []
    ticker = {"u": 1, "s": "BTCUSDT", "b": "1", "B": "1", "a": "2", "A": "1"}
    (quote,) = parse_frame({"stream": "btcusdt@bookTicker", "data": ticker}, symbols=symbols, received=None, state=state)
    assert quote.ts == at(777)


def test_prices_stay_exact_decimals_even_when_a_recorder_wrote_json_numbers() -> None:
    data = {"e": "aggTrade", "E": 1714557600000, "s": "BTCUSDT", "a": 1, "p": 0.1, "q": 3, "f": 1, "l": 1, "T": 1714557600000, "m": True}
    line = json.dumps({"stream": "btcusdt@aggTrade", "data": data})
    capture = BinanceCapture(path=Path("x"), symbols=SymbolMap(instruments=["BTCUSDT"]), options={})
    (trade,) = capture.parse(line)
    assert isinstance(trade, Trade)
    assert (trade.price, trade.size) == (D("0.1"), D(3))


def test_partial_depth_streams_are_whole_snapshots_of_their_stream_symbol() -> None:
    capture = BinanceCapture(path=Path("x"), symbols=SymbolMap(instruments=["BNBBTC"]), options={})
    line = '1714557600000 {"stream":"bnbbtc@depth20","data":{"lastUpdateId":160,"bids":[["0.0024","10"]],"asks":[["0.0026","100"]]}}'
    assert capture.parse(line) == [BookSnapshot("BNBBTC", at(0), book(("0.0024", "10")), book(("0.0026", "100")), "binance", 160)]


def test_a_capture_is_recognised_from_its_first_line(tmp_path: Path) -> None:
    assert BinanceCapture.sniff(SAMPLE, first_line(SAMPLE))
    for line in (
        '1714557600005 {"stream":"btcusdt@trade","data":{}}',
        '2024-05-01T10:00:00Z {"lastUpdateId":1,"bids":[],"asks":[]}',
    ):
        assert BinanceCapture.sniff(SAMPLE, line)
    coinbase = Path(__file__).parent / "samples" / "coinbase_capture.jsonl"
    assert not BinanceCapture.sniff(coinbase, first_line(coinbase))
    assert not CoinbaseCapture.sniff(SAMPLE, first_line(SAMPLE))
    assert not BinanceCapture.sniff(SAMPLE, '{"type":"trade","ts":"2026-01-01T00:00:00Z"}')


GOOD_TRADE: dict[str, object] = {
    "e": "aggTrade",
    "E": 1714557600123,
    "s": "BTCUSDT",
    "a": 7,
    "p": "60000.10",
    "q": "0.5",
    "T": 1714557600120,
    "m": True,
}
BROKEN_TRADES = [
    {},
    {"E": "1714557600123"},
    {"E": -1},
    {"T": True},
    {"T": None},
    {"p": "sixty"},
    {"p": "NaN"},
    {"p": 60000},  # a JSON number: read as the checked path reads it
    {"q": "Infinity"},
    {"m": "true"},
    {"a": "7"},
    {"T": 1714557600120123},  # µs
]


@pytest.mark.parametrize("known", [True, False])
@pytest.mark.parametrize("change", BROKEN_TRADES)
@pytest.mark.parametrize("missing", [None, "E", "T", "p", "q", "m", "a"])
def test_a_trade_frame_reads_as_the_field_by_field_check_reads_it(change: dict[str, object], missing: str | None, known: bool) -> None:
    """The fast path for well-formed trades gives what the checked path gives, events, bad lines and counts alike."""
    from marketdata.feeds import binance_ws

    data = {k: v for k, v in (GOOD_TRADE | change).items() if k != missing}

    def outcome(handler: object) -> tuple[object, datetime | None, dict[str, int]]:
        symbols, state = SymbolMap(instruments={"BTCUSDT"} if known else set()), BinanceFrameState(offsets=ClockOffsets())
        try:
            result: object = handler("BTCUSDT", "btcusdt@aggTrade", data, symbols, at(5), state)  # type: ignore[operator]
        except BadLine as problem:
            result = (problem.kind, problem.detail)
        return result, state.latest, dict(symbols.unknown)

    fast = outcome(binance_ws._HANDLERS["aggTrade"])
    checked = outcome(lambda *args: binance_ws._trade_checked("a", *args))
    assert fast == checked
