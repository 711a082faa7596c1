"""Candle timeframes: the stored one-minute candles added up into UTC-aligned buckets (pure; selectors read, this adds).

A bucket of `interval` starts at a multiple of it since the Unix epoch, so 5m bars start at :00, :05, …,
1h bars on the UTC hour and 1d bars at UTC midnight, whoever asks and from wherever. A bar is the
bucket's first open, highest high, lowest low, last close, and the sum of its volume and trades.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# What the instrument page offers; every one a whole number of minutes, each dividing the next.
TIMEFRAMES: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
}


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of OHLCV; `start` is the UTC start of its bucket."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int


def bucket_start(ts: datetime, interval: timedelta) -> datetime:
    """The start of the UTC-aligned bucket of `interval` that `ts` falls in."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts.isoformat()}: candle times must be timezone-aware UTC")
    return EPOCH + ((ts - EPOCH) // interval) * interval


def aggregate(bars: Iterable[Bar], interval: timedelta) -> list[Bar]:
    """`bars` (oldest first, each inside one bucket: a one-minute candle, or a bar of a timeframe dividing `interval`)
    folded into bars of `interval`, oldest first. Buckets without a bar are left out, not filled."""
    out: list[Bar] = []
    previous: datetime | None = None
    for bar in bars:
        if previous is not None and bar.start <= previous:
            raise ValueError(f"bars out of order: {bar.start.isoformat()} after {previous.isoformat()}")
        previous = bar.start
        start = bucket_start(bar.start, interval)
        if out and out[-1].start == start:
            last = out[-1]
            out[-1] = Bar(
                start,
                last.open,
                max(last.high, bar.high),
                min(last.low, bar.low),
                bar.close,
                last.volume + bar.volume,
                last.trades + bar.trades,
            )
        else:
            out.append(Bar(start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades))
    return out
