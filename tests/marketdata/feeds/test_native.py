"""Native JSONL: what record_feed writes decodes to the same events, and encodes back to the same line."""

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from marketdata.events import BookDelta, BookSnapshot, Quote, Trade
from marketdata.feeds import native
from marketdata.feeds.files import BadLine
from marketdata.symbols import SymbolMap

D = Decimal
TS = datetime(2026, 1, 1, 0, 0, 0, 39409, tzinfo=UTC)
EVENTS = [
    Trade("BTC-USD", TS, D("87648.21000000"), D("0.08185000"), "binance", "sell"),
    Trade("AAPL", TS.replace(microsecond=0), D("271.5"), D("10"), "synthetic"),
    Quote("EUR/USD", TS, D("1.10410"), D("1.10420"), "histdata"),
    BookSnapshot("BTC-USD", TS, ((D("87648.2"), D("1.5")),), ((D("87648.3"), D("0.2")),), "binance", 160),
    BookDelta("BTC-USD", TS, ((D("87648.2"), D("0")),), (), "binance", 161, 162),
    BookDelta("ETH-USD", TS, (), ((D("2975.01"), D("3.00")),), "coinbase"),
]


def parser(**map_options: object) -> native.NativeJsonl:
    symbols = SymbolMap(instruments=["BTC-USD", "AAPL", "EUR/USD", "ETH-USD"], **map_options)  # type: ignore[arg-type]
    return native.NativeJsonl(path=Path("x.jsonl"), symbols=symbols, options={})


def test_every_event_kind_survives_encode_then_decode_and_encodes_to_the_same_line() -> None:
    fmt = parser()
    for event in EVENTS:
        line = native.encode(event)
        [decoded] = fmt.parse(line)
        assert decoded == event
        assert native.encode(decoded) == line


def test_a_trade_line_reads_as_documented() -> None:
    assert native.encode(EVENTS[0]) == (
        '{"type":"trade","ts":"2026-01-01T00:00:00.039409Z","symbol":"BTC-USD","price":"87648.21000000",'
        '"size":"0.08185000","side":"sell","source":"binance"}'
    )
    assert native.NativeJsonl.sniff(Path("x"), native.encode(EVENTS[0]))
    assert not native.NativeJsonl.sniff(Path("x"), '{"stream":"btcusdt@trade","data":{}}')


@pytest.mark.parametrize(
    ("line", "kind", "detail"),
    [
        ('{"type":"trade","ts":"2026-01-01T00:00:00Z","symbol":"AAPL"', "bad json", ""),
        ("[1, 2]", "bad json", "a line must be a JSON object"),
        ('{"type":"trade","ts":"2026-01-01T00:00:00Z","symbol":"AAPL","size":"1","source":"s"}', "missing field", "no 'price'"),
        ('{"type":"trade","ts":"2026-01-01T00:00:00Z","symbol":"AAPL","price":"1e","size":"1","source":"s"}', "bad number", "price '1e'"),
        ('{"type":"trade","ts":"2026-01-01T00:00:00Z","symbol":"AAPL","price":1.5,"size":"1","source":"s"}', "bad number", "price 1.5"),
        ('{"type":"quote","ts":"yesterday","symbol":"AAPL","bid":"1","ask":"2","source":"s"}', "bad time", "'yesterday'"),
        ('{"type":"quote","ts":"2026-01-01T00:00:00","symbol":"AAPL","bid":"1","ask":"2","source":"s"}', "bad time", "not UTC"),
        ('{"type":"book","ts":"2026-01-01T00:00:00Z","symbol":"AAPL","bids":[["1"]],"asks":[],"source":"s"}', "bad number", "bids"),
        ('{"type":"candle","ts":"2026-01-01T00:00:00Z","symbol":"AAPL","source":"s"}', "unsupported event", "'candle'"),
    ],
)
def test_broken_lines_say_what_is_wrong(line: str, kind: str, detail: str) -> None:
    with pytest.raises(BadLine) as caught:
        parser().parse(line)
    assert caught.value.kind == kind
    assert detail in caught.value.detail


def test_symbols_outside_the_wanted_set_are_dropped_and_counted() -> None:
    fmt = parser(wanted={"AAPL"})
    assert list(fmt.parse(native.encode(EVENTS[0]))) == []
    assert list(fmt.parse(native.encode(EVENTS[1]))) == [EVENTS[1]]
    assert fmt.symbols.filtered == 1
