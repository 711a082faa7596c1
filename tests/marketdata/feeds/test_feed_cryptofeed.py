"""cryptofeed raw captures: Coinbase messages with receive times, non-market records passed over, the trade snapshot as backfill."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from marketdata.events import MarketEvent, Quote, Trade
from marketdata.feeds.coinbase import CoinbaseCapture
from marketdata.feeds.cryptofeed_raw import CryptofeedCapture
from marketdata.feeds.files import BadLine, FileSource, Problems
from marketdata.feeds.registry import format_detect
from marketdata.symbols import SymbolMap

T0 = datetime(2024, 5, 1, 10, tzinfo=UTC)
EPOCH_S = 1714557600  # T0


class RecordingProblems(Problems):
    def __init__(self) -> None:
        super().__init__()
        self.reported: list[tuple[str, str]] = []

    def report(self, where: str, problem: BadLine) -> None:
        self.reported.append((where, problem.kind))
        super().report(where, problem)


def iso(ms: float) -> str:
    return (T0 + timedelta(milliseconds=ms)).isoformat().replace("+00:00", "Z")


def envelope(kind: str, seconds: float, data: Any = None) -> str:
    body: dict[str, Any] = {"type": kind, "timestamp": EPOCH_S + seconds}
    if data is not None:
        body["data"] = data if isinstance(data, str) else json.dumps(data)
    return json.dumps(body)


def snapshot(product: str, count: int, newest_ms: float, first_id: int) -> dict[str, Any]:
    # Sent newest first: one trade a second back from `newest_ms`.
    trades = [
        {
            "trade_id": str(first_id + count - 1 - n),
            "product_id": product,
            "price": "100",
            "size": "1",
            "side": "BUY",
            "time": iso(newest_ms - 1000 * n),
        }
        for n in range(count)
    ]
    return {
        "channel": "market_trades",
        "client_id": "",
        "timestamp": iso(newest_ms + 50),
        "sequence_num": 0,
        "events": [{"type": "snapshot", "trades": trades}],
    }


def ticker(ms: float, sequence: int) -> dict[str, Any]:
    item = {"type": "ticker", "product_id": "BTC-USD", "price": "100", "best_bid": "99", "best_ask": "101"}
    return {
        "channel": "ticker",
        "client_id": "",
        "timestamp": iso(ms),
        "sequence_num": sequence,
        "events": [{"type": "update", "tickers": [item]}],
    }


def capture_lines() -> list[str]:
    """A session as a cryptofeed-style recorder writes it: 5 non-market records, then market data.

    The old coinbase-ws reading made 5 "missing field" reports of the records, and 88 "time goes
    backwards" of the ETH trade snapshot (88 trades over 88 s, arriving after BTC's snapshot had
    released trades up to 2 s before its newest)."""
    return [
        envelope("connect", 0.0),
        envelope("http", 0.01, {"products": [{"product_id": "BTC-USD"}]}),
        envelope("http", 0.02, {"products": [{"product_id": "ETH-USD"}]}),
        envelope("send", 0.03, {"type": "subscribe", "channel": "market_trades", "product_ids": ["BTC-USD", "ETH-USD"]}),
        envelope("send", 0.04, {"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD"]}),
        envelope("ws", 1.3, snapshot("BTC-USD", 10, 0, 1000)),
        envelope("ws", 1.4, snapshot("ETH-USD", 88, -2500, 5000)),
        envelope("ws", 1.5, ticker(200, 1)),
    ]


def read(
    path: Path, fmt: type[CryptofeedCapture] | type[CoinbaseCapture] = CryptofeedCapture, **options: str
) -> tuple[list[MarketEvent], RecordingProblems, Any]:
    capture = fmt(path=path, symbols=SymbolMap(instruments=["BTC-USD", "ETH-USD"]), options=options)
    problems = RecordingProblems()
    return list(FileSource(path=path, format=capture, problems=problems)), problems, capture


def test_the_old_coinbase_reading_of_such_a_capture_gave_5_missing_fields_and_88_times_going_backwards(tmp_path: Path) -> None:
    path = tmp_path / "COINBASE.ws.1.0"
    path.write_text("\n".join(capture_lines()) + "\n")
    _, problems, _ = read(path)
    # Now: no bad line at all; the records are passed over by type, the snapshot trades are backfill.
    assert problems.reported == []
    assert problems.passed_over == {"connect": 1, "http": 2, "send": 2}
    assert problems.skipped == {}


def test_the_trade_snapshot_comes_through_as_backfill_with_its_ids_and_the_rest_as_live(tmp_path: Path) -> None:
    path = tmp_path / "COINBASE.ws.1.0"
    path.write_text("\n".join(capture_lines()) + "\n")
    events, _, capture = read(path)
    trades = [e for e in events if isinstance(e, Trade)]
    assert len(trades) == 98
    assert all(t.backfill for t in trades)
    assert sorted(t.trade_id for t in trades if t.symbol == "ETH-USD") == list(range(5000, 5088))  # type: ignore[type-var]
    assert [e for e in events if isinstance(e, Quote)] == [Quote("BTC-USD", T0 + timedelta(milliseconds=200), 99, 101, "coinbase")]  # type: ignore[arg-type]
    # receive − the message timestamp: BTC's snapshot 1.25 s, ETH's 3.85 s, the ticker 1.3 s.
    assert capture.offsets.ms == {1250: 1, 3850: 1, 1300: 1}


def test_on_the_receive_clock_every_event_is_at_its_record_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "COINBASE.ws.1.0"
    path.write_text("\n".join(capture_lines()) + "\n")
    events, problems, _ = read(path, clock="receive")
    assert problems.reported == []
    assert sorted({e.ts for e in events}) == [T0 + timedelta(seconds=s) for s in (1.3, 1.4, 1.5)]


def test_cryptofeed_text_lines_read_like_the_json_envelopes(tmp_path: Path) -> None:
    message = json.dumps(ticker(200, 1))
    lines = [
        'configuration: {"COINBASE": {"ticker": ["BTC-USD"]}}',
        f"wss://advanced-trade-ws.coinbase.com <-> {EPOCH_S}.0",
        f'wss://advanced-trade-ws.coinbase.com <- {EPOCH_S}.01: {{"type": "subscribe"}}',
        f"https://api.coinbase.com/api/v3/brokerage/market/products -> {EPOCH_S}.02: {{}}",
        f"{EPOCH_S}.5: {message}",
        "garbage",
    ]
    path = tmp_path / "COINBASE.ws.1.0"
    path.write_text("\n".join(lines) + "\n")
    events, problems, capture = read(path)
    assert events == [Quote("BTC-USD", T0 + timedelta(milliseconds=200), 99, 101, "coinbase")]  # type: ignore[arg-type]
    assert problems.passed_over == {"configuration": 1, "connect": 1, "sent": 1, "http": 1}
    assert problems.reported == [(f"{path}:6", "not a frame")]
    assert capture.offsets.ms == {300: 1}


def test_a_cryptofeed_capture_is_detected_from_its_first_line(tmp_path: Path) -> None:
    for first in (envelope("connect", 0.0), f"{EPOCH_S}.5: {json.dumps(ticker(0, 1))}", "configuration: {}"):
        path = tmp_path / "capture"
        path.write_text(first + "\n")
        assert format_detect(path) is CryptofeedCapture
    # coinbase-ws's own envelope stays coinbase-ws
    path.write_text(json.dumps({"ts": 1714557600000, "data": json.dumps(ticker(0, 1))}) + "\n")
    assert format_detect(path) is CoinbaseCapture


def test_read_as_coinbase_ws_the_same_market_lines_give_backfill_and_no_time_going_backwards(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    path.write_text("\n".join(capture_lines()[5:]) + "\n")
    events, problems, _ = read(path, CoinbaseCapture)
    assert problems.reported == []  # 88 "time goes backwards" before backfill trades passed as they are
    assert sum(1 for e in events if isinstance(e, Trade) and e.backfill) == 98
