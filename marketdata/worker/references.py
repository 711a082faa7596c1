"""Day-change reference prices, from per-minute price marks. Pure: no I/O.

A market that never closes (crypto, FX) is measured against its price 24 hours
earlier; anything with sessions against its previous close, which is the last
price before local midnight in the exchange's time zone (on a Monday, Friday's
last price).

Marks are the last price of a symbol in a UTC minute, stamped with the start of
that minute. Only what the rule can still need is kept, for any `now` no older
than the newest mark minus `MARGIN`: for a session market the last mark before
each local day that covers, plus the newest (at most three); for an always-open
market the marks of the last 24 hours plus the margin.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

LOOKBACK = timedelta(hours=24)
# Slack for a `now` slightly older than the newest mark (other symbols' clocks, a late tick).
MARGIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Mark:
    symbol: str
    minute: datetime  # start of the minute, aware UTC
    price: Decimal


@dataclass(frozen=True, slots=True)
class MarketHours:
    always_open: bool
    timezone: str = "UTC"  # IANA name; only used when not always open


# A symbol nobody described (not in the database) gets a trading day in UTC.
UNKNOWN = MarketHours(always_open=False)


def minute_of(ts: datetime) -> datetime:
    """Start of the UTC minute holding `ts`."""
    if ts.tzinfo is None:
        raise ValueError("naive datetime: market timestamps must be timezone-aware UTC")
    return ts.astimezone(UTC).replace(second=0, microsecond=0)


def local_midnight(ts: datetime, zone: ZoneInfo) -> datetime:
    """Start of `ts`'s calendar day in `zone`, as a UTC instant."""
    # fold=0 maps a midnight skipped by a DST jump onto the jump itself, which is when that day starts.
    return datetime.combine(ts.astimezone(zone).date(), time(0), tzinfo=zone).astimezone(UTC)


class _Series:
    """One symbol's marks, ascending by minute, in two parallel lists so lookups can bisect."""

    __slots__ = ("always_open", "day", "minutes", "prices", "zone")

    def __init__(self, hours: MarketHours) -> None:
        self.always_open = hours.always_open
        self.zone = ZoneInfo(hours.timezone)
        self.minutes: list[datetime] = []
        self.prices: list[Decimal] = []
        self.day: tuple[datetime, datetime] | None = None  # the last day asked about: [its start, the next day's start)

    def add(self, minute: datetime, price: Decimal) -> None:
        i = bisect_left(self.minutes, minute)
        if i < len(self.minutes) and self.minutes[i] == minute:
            self.prices[i] = price
        else:
            self.minutes.insert(i, minute)
            self.prices.insert(i, price)
        self._trim()

    def _trim(self) -> None:
        newest = self.minutes[-1]
        if self.always_open:
            # Keep the last mark at or before the oldest instant a lookup may ask for, and all after it.
            first = bisect_right(self.minutes, newest - LOOKBACK - MARGIN) - 1
            if first > 0:
                del self.minutes[:first]
                del self.prices[:first]
        else:
            # The last mark before each day a lookup may fall on, and the newest (tomorrow's reference).
            keep = {len(self.minutes) - 1}
            for edge in (newest - MARGIN, newest):
                day_start = bisect_left(self.minutes, local_midnight(edge, self.zone))
                if day_start > 0:
                    keep.add(day_start - 1)
            self.minutes = [self.minutes[i] for i in sorted(keep)]
            self.prices = [self.prices[i] for i in sorted(keep)]

    def reference(self, now: datetime) -> Decimal | None:
        if self.always_open:
            i = bisect_right(self.minutes, now - LOOKBACK)
        else:
            i = bisect_left(self.minutes, self._day_start(now))
        return self.prices[i - 1] if i > 0 else None

    def _day_start(self, now: datetime) -> datetime:
        """`local_midnight(now, zone)`, remembered for the day: every window of a replay asks, mostly about the same day."""
        day = self.day
        if day is None or not day[0] <= now < day[1]:
            date = now.astimezone(self.zone).date()
            start = datetime.combine(date, time(0), tzinfo=self.zone).astimezone(UTC)
            day = self.day = (start, datetime.combine(date + timedelta(days=1), time(0), tzinfo=self.zone).astimezone(UTC))
        return day[0]


class References:
    """Reference price per symbol, kept current by `observe`-ing each minute's marks.

    Marks may be observed in any order. Answers are exact for a `now` no older
    than the symbol's newest mark minus `MARGIN`; what earlier lookups would
    need has been dropped.
    """

    def __init__(self, markets: Mapping[str, MarketHours] | None = None, marks: Iterable[Mark] = ()) -> None:
        self.markets = dict(markets or {})
        self._series: dict[str, _Series] = {}
        for mark in marks:
            self.observe(mark.symbol, mark.minute, mark.price)

    def observe(self, symbol: str, minute: datetime, price: Decimal) -> None:
        series = self._series.get(symbol)
        if series is None:
            series = self._series[symbol] = _Series(self.markets.get(symbol, UNKNOWN))
        series.add(minute, price)

    def reference(self, symbol: str, now: datetime) -> Decimal | None:
        series = self._series.get(symbol)
        return None if series is None else series.reference(now)

    def __len__(self) -> int:
        """Marks held, across symbols (memory stays bounded by the trimming rules)."""
        return sum(len(s.minutes) for s in self._series.values())
