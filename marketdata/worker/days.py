"""Closed UTC days, seen from the worker's closed minutes: when to turn a day's candles into daily closes.

The minute hooks get each batch of closed minutes; a day has closed once a
minute of a later day closes. `DayWatch` remembers the last day it saw (per
worker process, nothing stored), so the check costs nothing per minute and the
database is touched once per closed day. On its first batch a worker also
closes the day before that batch's first minute: the worker may have been down
at midnight, and redoing a day gives the same closes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from channels.db import database_sync_to_async

from marketdata import services
from marketdata.worker.loop import ClosedMinutes

log = logging.getLogger(__name__)


class DayWatch:
    def __init__(self) -> None:
        self.last: date | None = None

    def closed(self, minutes: Sequence[datetime]) -> list[date]:
        """The UTC days that ended with this batch of closed minutes (oldest first)."""
        if not minutes:
            return []
        days = sorted({minute.astimezone(UTC).date() for minute in minutes})
        first = days[0] - timedelta(days=1) if self.last is None else self.last
        newest = days[-1]
        self.last = max(newest, self.last or newest)
        out, day = [], first
        while day < newest:
            out.append(day)
            day += timedelta(days=1)
        return out


_watch = DayWatch()


def _closes_for(days: Sequence[date]) -> int:
    return sum(services.daily_closes_from_candles(day=day) for day in days)


async def daily_closes_record(minutes: ClosedMinutes) -> None:
    """Minute hook (settings.MARKETDATA_MINUTE_HOOKS): once a UTC day has closed, its candles' last closes become daily closes.

    Runs after the batch's candles are stored (`Worker._record`), off the tick path."""
    days = _watch.closed([minute for minute, _ in minutes])
    if days:
        rows = await database_sync_to_async(_closes_for)(days)
        log.info("daily closes of %s: %d rows from candles", ", ".join(str(day) for day in days), rows)
