"""Times written as "since midnight" of one trading day on an exchange's wall clock, as aware UTC.

Per-day exchange files (Lean/AlgoSeek equity ticks, LOBSTER) give each event's time as
milliseconds or seconds after midnight, in the exchange's zone (America/New_York for US
equities), with the day in the file name. The time is read on the wall clock, as those
vendors mean it (Lean adds it to the day's date; LOBSTER's 34200 is the 09:30 open), so the
UTC offset is the one in force at that moment: EST in winter, EDT in summer.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marketdata.feeds.files import FeedError

NEW_YORK = "America/New_York"


def zone_named(name: str, *, option: str = "tz") -> tzinfo:
    """The IANA zone `name`; FeedError naming the option when there is none."""
    if name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise FeedError(f"option {option} {name!r} is not an IANA time zone (e.g. {NEW_YORK})") from None


class DayClock:
    """One day's wall clock in one zone: microseconds since local midnight → aware UTC."""

    __slots__ = ("_fixed", "day", "midnight")

    def __init__(self, day: date, zone: tzinfo) -> None:
        self.day = day
        self.midnight = datetime.combine(day, time(), tzinfo=zone)
        following = datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)
        # On a day without a daylight-saving change one offset holds all day: add to UTC midnight
        # directly. On the two change days each time is converted on its own.
        self._fixed = self.midnight.astimezone(UTC) if self.midnight.utcoffset() == following.utcoffset() else None

    def utc(self, microseconds: int) -> datetime:
        if self._fixed is not None:
            return self._fixed + timedelta(microseconds=microseconds)
        # Aware + timedelta is wall-clock arithmetic in Python; astimezone then applies that moment's offset.
        return (self.midnight + timedelta(microseconds=microseconds)).astimezone(UTC)
