"""The pure limits of /ws/v1/market: token bucket, throttle and merge of channel messages, frame validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata.api.limits import FrameError, Request, Throttle, TokenBucket, merge, parse_request, peek_id


def msg(ch: str, seq: int, data: dict[str, Any], epoch: str = "e1", ts: int | None = None) -> dict[str, Any]:
    return {"ch": ch, "epoch": epoch, "seq": seq, "ts": ts if ts is not None else 1000 + seq, "data": data}


def tick(seq: int, last: str, epoch: str = "e1") -> dict[str, Any]:
    return msg(
        "ticker:BTC-USD",
        seq,
        {"last": last, "bid": None, "ask": None, "ref": None, "change": None, "change_pct": None, "replay": False},
        epoch,
    )


# ------------------------------------------------------------------ token bucket


def test_a_full_bucket_lets_a_burst_through_then_refuses() -> None:
    bucket = TokenBucket(rate=20, burst=40, now=0.0)
    assert [bucket.take(0.0) for _ in range(41)] == [True] * 40 + [False]


def test_the_bucket_refills_at_the_rate_and_never_above_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    for _ in range(5):
        assert bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)  # one token after 0.1 s at 10/s
    assert not bucket.take(0.1)
    # An hour idle refills to the burst, not to 36000.
    assert sum(bucket.take(3600.0) for _ in range(100)) == 5


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_no_window_ever_passes_more_than_burst_plus_rate_times_its_length(gaps: list[float]) -> None:
    bucket = TokenBucket(rate=20, burst=40, now=0.0)
    now, passed = 0.0, 0
    for gap in gaps:
        now += gap
        passed += bucket.take(now)
    assert passed <= 40 + 20 * now + 1e-9


def test_a_bucket_needs_a_positive_rate_and_burst() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0, burst=1, now=0)
    with pytest.raises(ValueError):
        TokenBucket(rate=1, burst=0, now=0)


# ------------------------------------------------------------------ merge


def test_a_merged_ticker_carries_the_latest_value_and_the_first_seq() -> None:
    merged = merge("ticker", merge("ticker", tick(5, "1"), tick(6, "2")), tick(7, "3"))
    assert (merged["first_seq"], merged["seq"], merged["ts"], merged["data"]["last"]) == (5, 7, 1007, "3")


def test_merged_trades_keep_every_trade_oldest_first() -> None:
    a = msg("trades:BTC-USD", 1, {"trades": [{"price": "1", "size": "1", "side": "buy", "ts": 1}]})
    b = msg(
        "trades:BTC-USD",
        2,
        {"trades": [{"price": "2", "size": "1", "side": None, "ts": 2}, {"price": "3", "size": "2", "side": "sell", "ts": 3}]},
    )
    merged = merge("trades", a, b)
    assert [t["price"] for t in merged["data"]["trades"]] == ["1", "2", "3"]
    assert (merged["first_seq"], merged["seq"]) == (1, 2)


def test_merged_book_changes_keep_absolute_quantities_the_later_winning_best_first() -> None:
    ch = "book:BTC-USD@depth=10"
    a = msg(ch, 3, {"bids": [["100", "1"], ["99", "2"]], "asks": [["101", "1"]], "checksum": 1})
    b = msg(ch, 4, {"bids": [["100", "0"], ["98.5", "4"]], "asks": [["102", "3"]], "checksum": 2})
    c = msg(ch, 5, {"bids": [["99", "7"]], "asks": [["101", "0"], ["100.5", "1"]], "checksum": 3})
    merged = merge("book", merge("book", a, b), c)
    assert merged["data"] == {
        "bids": [["100", "0"], ["99", "7"], ["98.5", "4"]],
        "asks": [["100.5", "1"], ["101", "0"], ["102", "3"]],
        "checksum": 3,  # describes the book after the last message
    }
    assert (merged["first_seq"], merged["seq"]) == (3, 5)


@given(
    st.lists(
        st.lists(st.tuples(st.integers(1, 20), st.integers(0, 5)), max_size=6),
        min_size=1,
        max_size=12,
    )
)
def test_applying_a_merged_book_update_equals_applying_each(changes: list[list[tuple[int, int]]]) -> None:
    def apply(book: dict[str, str], levels: list[list[str]]) -> None:
        for price, qty in levels:
            if qty == "0":
                book.pop(price, None)
            else:
                book[price] = qty

    messages = [
        msg("book:X@depth=10", i + 1, {"bids": [[str(p), str(q)] for p, q in dict(c).items()], "asks": [], "checksum": i})
        for i, c in enumerate(changes)
    ]
    one_by_one: dict[str, str] = {}
    for m in messages:
        apply(one_by_one, m["data"]["bids"])
    merged = messages[0]
    for m in messages[1:]:
        merged = merge("book", merged, m)
    at_once: dict[str, str] = {}
    apply(at_once, merged["data"]["bids"])
    assert at_once == one_by_one


# ------------------------------------------------------------------ throttle


def test_without_an_interval_everything_goes_at_once() -> None:
    throttle = Throttle("ticker", 0)
    assert throttle.push(tick(1, "1"), 0.0) == [tick(1, "1")]
    assert throttle.push(tick(2, "2"), 0.0) == [tick(2, "2")]
    assert throttle.due() is None


def test_the_first_update_goes_at_once_then_one_per_interval_with_the_latest() -> None:
    throttle = Throttle("ticker", 0.5)
    assert throttle.push(tick(1, "1"), 0.0) == [tick(1, "1")]
    assert throttle.push(tick(2, "2"), 0.1) == []
    assert throttle.push(tick(3, "3"), 0.2) == []
    assert throttle.due() == 0.5
    [out] = throttle.flush(0.5)
    assert (out["first_seq"], out["seq"], out["data"]["last"]) == (2, 3, "3")
    assert throttle.due() is None
    assert throttle.push(tick(4, "4"), 0.6) == []  # still inside the interval that began at 0.5
    assert throttle.due() == 1.0
    assert [m["seq"] for m in throttle.flush(1.0)] == [4]
    assert throttle.push(tick(5, "5"), 2.0) == [tick(5, "5")]  # a quiet interval: at once again


def test_a_closed_candle_is_never_merged_away() -> None:
    ch = "candles:BTC-USD@1m"

    def candle(seq: int, start: int, close: str, closed: bool) -> dict[str, Any]:
        return msg(ch, seq, {"candle": {"start": start, "close": close, "closed": closed}})

    throttle = Throttle("candles", 1.0)
    throttle.push(candle(1, 0, "1", False), 0.0)
    throttle.push(candle(2, 0, "2", False), 0.1)
    throttle.push(candle(3, 0, "3", True), 0.2)  # the minute closes
    throttle.push(candle(4, 60_000, "4", False), 0.3)
    throttle.push(candle(5, 60_000, "5", False), 0.4)
    out = throttle.flush(1.0)
    assert [(m.get("first_seq"), m["seq"], m["data"]["candle"]["closed"]) for m in out] == [(2, 3, True), (4, 5, False)]


def test_clear_forgets_what_was_held_back() -> None:
    throttle = Throttle("ticker", 1.0)
    throttle.push(tick(1, "1"), 0.0)
    throttle.push(tick(2, "2"), 0.1)
    throttle.clear()
    assert throttle.due() is None and throttle.flush(2.0) == []


def test_messages_of_another_epoch_are_not_merged() -> None:
    throttle = Throttle("ticker", 1.0)
    throttle.push(tick(1, "1"), 0.0)
    throttle.push(tick(2, "2"), 0.1)
    throttle.push(tick(1, "9", epoch="e2"), 0.2)
    assert [(m["epoch"], m["seq"]) for m in throttle.flush(1.0)] == [("e1", 2), ("e2", 1)]


# ------------------------------------------------------------------ frames


def error_of(text: str | None = None, data: bytes | None = None) -> tuple[str, int | str | None]:
    with pytest.raises(FrameError) as caught:
        parse_request(text, data)
    return caught.value.code, caught.value.request_id


def test_every_op_parses() -> None:
    assert parse_request('{"op": "ping", "id": 4}') == Request("ping", 4)
    assert parse_request('{"op": "auth", "id": "a", "token": "lf_x"}') == Request("auth", "a", token="lf_x")
    assert parse_request('{"op": "subscribe", "channels": ["ticker:X", "ticker:X", "trades:X"], "throttle_ms": 500}') == Request(
        "subscribe", None, channels=("ticker:X", "trades:X"), throttle_ms=500
    )
    assert parse_request('{"op": "unsubscribe", "id": 3, "channels": ["ticker:X"]}') == Request("unsubscribe", 3, channels=("ticker:X",))
    resume = parse_request('{"op": "resume", "id": 5, "channels": {"ticker:X": {"epoch": "e", "seq": 57}}}')
    assert (resume.op, resume.channels, resume.positions, resume.throttle_ms) == ("resume", ("ticker:X",), {"ticker:X": ("e", 57)}, 0)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("{not json", ("bad_json", None)),
        ("[1, 2]", ("bad_json", None)),
        ('"ping"', ("bad_json", None)),
        ("[" * 100_000, ("bad_json", None)),  # deeper than the parser goes
        ("{}", ("bad_request", None)),
        ('{"op": 7, "id": 1}', ("bad_request", 1)),
        ('{"op": "pong", "id": 1}', ("unknown_op", 1)),
        ('{"op": "ping", "id": [1]}', ("bad_request", None)),
        ('{"op": "ping", "id": true}', ("bad_request", None)),
        ('{"op": "ping", "id": -9223372036854775809}', ("bad_request", None)),  # past what a frame can echo
        ('{"op": "ping", "id": 9007199254740992}', ("bad_request", None)),  # 2**53: inexact in JavaScript
        ('{"op": "ping", "id": "' + "x" * 200 + '"}', ("bad_request", None)),
        ('{"op": "auth", "id": 2}', ("bad_request", 2)),
        ('{"op": "subscribe", "id": 2, "channels": "ticker:X"}', ("bad_request", 2)),
        ('{"op": "subscribe", "id": 2, "channels": []}', ("bad_request", 2)),
        ('{"op": "subscribe", "id": 2, "channels": ["ticker:X", 5]}', ("bad_request", 2)),
        ('{"op": "subscribe", "id": 2, "channels": ["ticker:X"], "throttle_ms": 60001}', ("bad_request", 2)),
        ('{"op": "subscribe", "id": 2, "channels": ["ticker:X"], "throttle_ms": -1}', ("bad_request", 2)),
        ('{"op": "subscribe", "id": 2, "channels": ["ticker:X"], "throttle_ms": 1.5}', ("bad_request", 2)),
        ('{"op": "subscribe", "id": 2, "channels": ["ticker:X"], "throttle_ms": "500"}', ("bad_request", 2)),
        ('{"op": "resume", "id": 5, "channels": ["ticker:X"]}', ("bad_request", 5)),
        ('{"op": "resume", "id": 5, "channels": {"ticker:X": {"epoch": 1, "seq": 2}}}', ("bad_request", 5)),
        ('{"op": "resume", "id": 5, "channels": {"ticker:X": {"epoch": "e", "seq": -1}}}', ("bad_request", 5)),
    ],
)
def test_bad_frames_get_their_error_code_and_keep_a_usable_id(frame: str, expected: tuple[str, Any]) -> None:
    assert error_of(frame) == expected


def test_a_binary_frame_is_bad_json() -> None:
    assert error_of(None, b'{"op": "ping"}') == ("bad_json", None)


def test_peek_id_never_raises() -> None:
    assert peek_id('{"op": "ping", "id": 9}') == 9
    assert peek_id("[" * 100_000) is None
    assert peek_id('{"id": {"x": 1}}') is None
    assert peek_id(None) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@given(
    st.one_of(
        st.text(max_size=300),
        JSON.map(json.dumps),
        st.fixed_dictionaries(
            {"op": st.sampled_from(["ping", "auth", "subscribe", "unsubscribe", "resume"])},
            optional={"id": JSON, "channels": JSON, "throttle_ms": JSON, "token": JSON},
        ).map(json.dumps),
    )
)
def test_parse_request_answers_anything_with_a_request_or_a_frame_error(text: str) -> None:
    try:
        parse_request(text)
    except FrameError as exc:
        assert exc.code in ("bad_json", "bad_request", "unknown_op")
