from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketdata.timeframes import TIMEFRAMES, Bar, aggregate, bucket_start

D = Decimal
T = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, on the hour
MINUTE = timedelta(minutes=1)


def minute(n: int, o: str, h: str, lo: str, c: str, v: str = "1", trades: int = 1) -> Bar:
    return Bar(T + n * MINUTE, D(o), D(h), D(lo), D(c), D(v), trades)


def test_five_minute_bars_take_the_first_open_the_extremes_the_last_close_and_the_sums() -> None:
    minutes = [
        minute(0, "10", "12", "9", "11", "2", 3),
        minute(1, "11", "15", "10", "14", "1.5", 2),
        minute(4, "14", "14", "7", "8", "0.5", 1),  # minutes 2 and 3 had no price
        minute(5, "8", "9", "8", "9", "4", 4),  # the next bucket
        minute(9, "9", "10", "6", "6.5", "1", 1),
    ]

    assert aggregate(minutes, TIMEFRAMES["5m"]) == [
        Bar(T, D("10"), D("15"), D("7"), D("8"), D("4.0"), 6),
        Bar(T + 5 * MINUTE, D("8"), D("10"), D("6"), D("6.5"), D("5"), 5),
    ]


def test_buckets_are_aligned_to_utc_not_to_the_first_minute() -> None:
    # 09:03 to 09:16: the 15m buckets are 09:00 and 09:15, never 09:03.
    minutes = [minute(n, "1", "1", "1", str(n)) for n in range(3, 17)]

    bars = aggregate(minutes, TIMEFRAMES["15m"])

    assert [(b.start, b.close, b.trades) for b in bars] == [(T, D(14), 12), (T + 15 * MINUTE, D(16), 2)]


def test_an_hour_and_a_day_start_on_the_utc_hour_and_midnight_whatever_the_offset_given() -> None:
    in_new_york = datetime(2026, 3, 2, 23, 30, tzinfo=timezone(timedelta(hours=-5)))  # 04:30 UTC on 3 March

    assert bucket_start(in_new_york, TIMEFRAMES["1h"]) == datetime(2026, 3, 3, 4, 0, tzinfo=UTC)
    assert bucket_start(in_new_york, TIMEFRAMES["1d"]) == datetime(2026, 3, 3, tzinfo=UTC)


def test_a_minute_bar_is_its_own_one_minute_bucket() -> None:
    minutes = [minute(0, "1", "2", "0.5", "1.5"), minute(2, "1.5", "1.5", "1", "1")]

    assert aggregate(minutes, TIMEFRAMES["1m"]) == minutes


def test_bars_out_of_order_or_naive_are_refused_with_the_times() -> None:
    with pytest.raises(ValueError, match=r"out of order: 2026-03-02T09:00:00\+00:00 after 2026-03-02T09:01:00\+00:00"):
        aggregate([minute(1, "1", "1", "1", "1"), minute(0, "1", "1", "1", "1")], TIMEFRAMES["5m"])
    with pytest.raises(ValueError, match="naive datetime 2026-03-02T09:00:00: candle times must be timezone-aware UTC"):
        aggregate([Bar(datetime(2026, 3, 2, 9, 0), D(1), D(1), D(1), D(1), D(0), 0)], TIMEFRAMES["5m"])


prices = st.decimals(min_value=D("0.01"), max_value=D("100000"), places=2)


@st.composite
def minute_candles(draw: st.DrawFn) -> list[Bar]:
    """A few days of one-minute candles with gaps, each one's high and low around its open and close."""
    offsets = sorted(draw(st.sets(st.integers(min_value=0, max_value=3 * 24 * 60), max_size=80)))
    start = draw(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1))).replace(tzinfo=UTC)
    start = bucket_start(start, MINUTE)
    out = []
    for offset in offsets:
        o, c, up, down = draw(prices), draw(prices), draw(prices), draw(prices)
        volume = draw(st.decimals(min_value=0, max_value=1000, places=3))
        out.append(Bar(start + offset * MINUTE, o, max(o, c) + up, max(D("0.01"), min(o, c) - down), c, volume, draw(st.integers(0, 50))))
    return out


@given(minute_candles(), st.sampled_from([("1m", "5m"), ("5m", "15m"), ("15m", "1h"), ("5m", "1h"), ("1h", "1d"), ("1m", "1d")]))
def test_aggregating_twice_equals_aggregating_once_to_the_coarser_timeframe(minutes: list[Bar], frames: tuple[str, str]) -> None:
    finer, coarser = (TIMEFRAMES[f] for f in frames)

    assert aggregate(aggregate(minutes, finer), coarser) == aggregate(minutes, coarser)


@given(minute_candles(), st.sampled_from(sorted(TIMEFRAMES)))
def test_bars_keep_the_totals_the_extremes_and_the_first_open_and_last_close(minutes: list[Bar], frame: str) -> None:
    bars = aggregate(minutes, TIMEFRAMES[frame])

    assert sum(b.volume for b in bars) == sum(m.volume for m in minutes)
    assert sum(b.trades for b in bars) == sum(m.trades for m in minutes)
    if minutes:
        assert max(b.high for b in bars) == max(m.high for m in minutes)
        assert min(b.low for b in bars) == min(m.low for m in minutes)
        assert (bars[0].open, bars[-1].close) == (minutes[0].open, minutes[-1].close)
    assert all(b.start == bucket_start(b.start, TIMEFRAMES[frame]) for b in bars)
    assert all(b.low <= min(b.open, b.close) and b.high >= max(b.open, b.close) for b in bars)
