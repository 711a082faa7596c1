"""Performance over time: the daily value history (rebuilt here) and the figures of a range (read here).

Writes: `daily_values_rebuild` replays a portfolio's ledger over the daily closes
(`portfolio.daily`) and replaces its `DailyValue` rows. It runs after every
ledger change (on commit, from `portfolio.services.portfolio_rebuild`), once a
day from the feed worker (`daily_values_record`, a minute hook that fires when
a UTC day closes, after that day's closes are made), and on demand
(`manage.py rebuild_daily_values`). Never on the tick path.

Reads: `performance_for` gives a range's series, time- and money-weighted
return, max drawdown and a benchmark rebased to the range start
(`portfolio.returns` does the maths; docs/accounting.md, "Performance").
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction as db_transaction
from django.db.models import Q
from django.utils import timezone

from marketdata.models import AssetClass, DailyClose, Instrument
from marketdata.worker.days import DayWatch
from marketdata.worker.loop import ClosedMinutes
from portfolio import returns
from portfolio.daily import STALE_AFTER, CloseHistory, DayValue, daily_values, local_day
from portfolio.ledger import Entry, LedgerError, plain
from portfolio.models import DailyValue, Kind, Portfolio, PortfolioValue, Transaction
from portfolio.valuation import Pairs, fx_pair

log = logging.getLogger(__name__)

RANGES = ("1D", "1W", "1M", "YTD", "1Y", "MAX")
INTRADAY_WINDOW = timedelta(hours=24)


# ---------------------------------------------------------------- reads


def portfolio_timezone(portfolio: Portfolio) -> ZoneInfo:
    """The portfolio's own time zone (its days end at midnight there)."""
    return ZoneInfo(portfolio.time_zone or settings.TIME_ZONE)


def ledger_entries(*, portfolio: Portfolio) -> Generator[Entry, None, None]:
    """The portfolio's ledger in execution order, as the fold sees it, read in chunks (a million rows stay unloaded)."""
    rows = (
        Transaction.objects.filter(portfolio=portfolio)
        .order_by("executed_at", "id")
        .values_list("kind", "executed_at", "currency", "instrument__symbol", "quantity", "price", "fee", "fx_rate", "id")
    )
    chunks = rows.iterator(chunk_size=2000)
    try:
        for k, at, ccy, sym, q, p, f, fx, pk in chunks:
            yield Entry(k, at, ccy, sym or "", q, p, f, fx, ref=pk)
    finally:
        chunks.close()  # type: ignore[attr-defined]  # PostgreSQL's server-side cursor, now (see services._ledger_stream)


def fx_pairs_all() -> Pairs:
    """(base, quote) → symbol of every FX instrument, inactive ones too: history outlives a feed."""
    fx = Instrument.objects.filter(asset_class=AssetClass.FX).order_by("symbol").values_list("symbol", "quote_currency")
    return {pair: symbol for symbol, quote in fx if (pair := fx_pair(symbol, quote)) is not None}


def close_history_load(*, symbols: Iterable[str], since: date | None = None, until: date | None = None) -> CloseHistory:
    """The daily closes of `symbols` in one query; `since` reaches back STALE_AFTER more, for the close carried into it."""
    rows = DailyClose.objects.filter(instrument__symbol__in=list(symbols))
    if since is not None:
        rows = rows.filter(date__gte=since - STALE_AFTER)
    if until is not None:
        rows = rows.filter(date__lte=until)
    return CloseHistory(rows.values_list("instrument__symbol", "date", "close"))


def fx_rate_on(*, base: str, quote: str, day: date) -> Decimal | None:
    """Units of `quote` per unit of `base` on `day`: from the daily closes of FX instruments (EUR/USD quoted in USD is
    the price of one EUR in USD), the latest close on or before `day` and no older than a week; through the direct pair,
    its inverse (1 / close), or a cross through one other currency. None when no such close exists. Two queries."""
    if base == quote:
        return Decimal(1)
    pairs = fx_pairs_all()
    return close_history_load(symbols=set(pairs.values()), since=day, until=day).rate(base, quote, day, pairs)


# ---------------------------------------------------------------- writes


@dataclass(frozen=True)
class Rebuilt:
    days: int  # rows written
    incomplete: int  # of which incomplete
    error: str = ""


def daily_values_compute(*, portfolio: Portfolio, today: date | None = None) -> list[DayValue]:
    """Every day's value of `portfolio` from its first entry to yesterday in its time zone (pure replay over loaded data)."""
    tz = portfolio_timezone(portfolio)
    ledger = Transaction.objects.filter(portfolio=portfolio)
    first_at = ledger.order_by("executed_at").values_list("executed_at", flat=True).first()
    if first_at is None:
        return []
    last = (today or timezone.now().astimezone(tz).date()) - timedelta(days=1)
    first = local_day(first_at, tz)
    symbols = set(ledger.exclude(instrument=None).values_list("instrument__symbol", flat=True).distinct())
    pairs = fx_pairs_all()
    closes = close_history_load(symbols=symbols | set(pairs.values()), since=first, until=last)
    currencies = dict(Instrument.objects.filter(symbol__in=symbols).values_list("symbol", "quote_currency"))
    with closing(ledger_entries(portfolio=portfolio)) as entries:
        return daily_values(entries, base=portfolio.base_currency, tz=tz, last=last, closes=closes, pairs=pairs, currencies=currencies)


def daily_values_rebuild(*, portfolio: Portfolio, since: date | None = None, today: date | None = None) -> Rebuilt:
    """Replace the portfolio's daily values from `since` (all, when None) up to yesterday; returns what was written.

    The whole ledger is replayed (the book at `since` depends on everything before it); only rows from `since`
    are rewritten, in one transaction, and rows outside the ledger's days go. A ledger that does not fold is
    logged and leaves the rows as they were."""
    # One rebuild of a portfolio at a time: two ledger changes committed together each rebuild after commit, and
    # their deletes and inserts must not interleave (on PostgreSQL the second insert hit the unique date).
    with db_transaction.atomic():
        Portfolio.objects.select_for_update().filter(pk=portfolio.pk).first()
        try:
            days = daily_values_compute(portfolio=portfolio, today=today)
        except LedgerError as exc:
            log.error("daily values of portfolio %s not rebuilt: %s", portfolio.pk, exc)
            return Rebuilt(0, 0, error=str(exc))
        kept = [d for d in days if since is None or d.day >= since]
        rows = [
            DailyValue(
                portfolio=portfolio,
                date=d.day,
                value=d.value,
                net_flow=d.net_flow,
                inflow=d.inflow,
                complete=d.complete,
                missing=" ".join(d.missing)[:200],
            )
            for d in kept
        ]
        stale = DailyValue.objects.filter(portfolio=portfolio)
        if since is not None and days:  # (an empty Q() ORed with a condition is just the condition: not "every row")
            stale = stale.filter(Q(date__gte=since) | Q(date__lt=days[0].day) | Q(date__gt=days[-1].day))
        elif since is not None:
            stale = stale.filter(date__gte=since)
        stale.delete()
        DailyValue.objects.bulk_create(rows, batch_size=1000)
    return Rebuilt(len(rows), sum(not d.complete for d in kept))


def daily_values_rebuild_on_commit(*, portfolio: Portfolio) -> None:
    """After the current transaction commits (a ledger change), rebuild the portfolio's daily values; a failure is logged."""
    pk = portfolio.pk

    def rebuild() -> None:
        current = Portfolio.objects.filter(pk=pk).first()
        if current is not None:  # deleted meanwhile
            daily_values_rebuild(portfolio=current)

    db_transaction.on_commit(rebuild, robust=True)


def daily_values_rebuild_all(*, since: date | None = None) -> Rebuilt:
    days = incomplete = 0
    for portfolio in Portfolio.objects.order_by("pk").iterator():
        done = daily_values_rebuild(portfolio=portfolio, since=since)
        days, incomplete = days + done.days, incomplete + done.incomplete
    return Rebuilt(days, incomplete)


_watch = DayWatch()


async def daily_values_record(minutes: ClosedMinutes) -> None:
    """Minute hook (after `marketdata.worker.days.daily_closes_record`): when a UTC day closes, every portfolio's values
    are rebuilt from two days before it, so a day first valued at a carried close gets the day's own close."""
    days = _watch.closed([minute for minute, _ in minutes])
    if days:
        done = await database_sync_to_async(daily_values_rebuild_all)(since=days[0] - timedelta(days=2))
        log.info("daily values rebuilt since %s: %d rows (%d incomplete)", days[0] - timedelta(days=2), done.days, done.incomplete)


# ---------------------------------------------------------------- the figures of a range


class UnknownRange(ValueError):
    pass


class UnknownBenchmark(ValueError):
    pass


def range_start(name: str, today: date) -> date | None:
    """The first day of a daily range ending today; None for MAX."""
    if name == "1W":
        return today - timedelta(days=7)
    if name == "1M":
        month, year = (today.month - 2) % 12 + 1, today.year - (today.month == 1)
        return _clamped(year, month, today.day)
    if name == "YTD":
        return date(today.year, 1, 1)
    if name == "1Y":
        return _clamped(today.year - 1, today.month, today.day)
    if name == "MAX":
        return None
    raise UnknownRange(f"Unknown range {name!r}: use one of {', '.join(RANGES)}.")


def _clamped(year: int, month: int, day: int) -> date:
    while True:
        try:
            return date(year, month, day)
        except ValueError:
            day -= 1  # 31 March → 28/29 February


@dataclass(frozen=True)
class Point:
    at: date | datetime
    value: Decimal
    flow: Decimal
    inflow: Decimal


def _points_daily(portfolio: Portfolio, start: date | None) -> tuple[list[Point], int]:
    """Complete days from the range's anchor (the last day before `start`, or a zero before the first day) on;
    an incomplete day's flows roll into the next complete day. Returns (points, incomplete days in the range)."""
    rows = list(DailyValue.objects.filter(portfolio=portfolio).order_by("date"))
    if not rows:
        return [], 0
    before = [r for r in rows if start is not None and r.date < start and r.complete]
    if before:
        anchor = before[-1]
        points = [Point(anchor.date, anchor.value, Decimal(0), Decimal(0))]
    else:  # the range reaches back past the first day: start from nothing, the day before it
        anchor = DailyValue(date=rows[0].date - timedelta(days=1), value=Decimal(0))
        points = [Point(anchor.date, Decimal(0), Decimal(0), Decimal(0))]
    inside = [r for r in rows if r.date > anchor.date]
    carried = carried_in = Decimal(0)
    incomplete = 0
    for row in inside:
        if not row.complete:
            incomplete += 1
            carried, carried_in = carried + row.net_flow, carried_in + row.inflow
            continue
        points.append(Point(row.date, row.value, row.net_flow + carried, row.inflow + carried_in))
        carried = carried_in = Decimal(0)
    return points, incomplete


def _points_intraday(portfolio: Portfolio, now: datetime) -> list[Point]:
    """The minute values of the last 24 hours, each with the flows booked since the minute before it."""
    since = now - INTRADAY_WINDOW
    values = list(PortfolioValue.objects.filter(portfolio=portfolio, minute__gte=since).order_by("minute").values_list("minute", "value"))
    flows = list(
        Transaction.objects.filter(
            portfolio=portfolio, kind__in=[Kind.DEPOSIT, Kind.WITHDRAWAL, Kind.TRANSFER_IN, Kind.TRANSFER_OUT], executed_at__gte=since
        )
        .order_by("executed_at")
        .values_list("executed_at", "kind", "quantity", "price", "fx_rate")
    )
    points: list[Point] = []
    i = 0
    for minute, value in values:
        flow = inflow = Decimal(0)
        # A minute's value is its end: flows booked before the end of the minute are in it.
        while i < len(flows) and flows[i][0] < minute + timedelta(minutes=1):
            _, kind, quantity, price, fx_rate = flows[i]
            amount = quantity * price * fx_rate * (1 if kind in (Kind.DEPOSIT, Kind.TRANSFER_IN) else -1)
            flow, inflow = flow + amount, inflow + max(amount, Decimal(0))
            i += 1
        if points:
            points.append(Point(minute, value, flow, inflow))
        else:
            points.append(Point(minute, value, Decimal(0), Decimal(0)))  # the start: flows before it are in its value
    return points


def _benchmark(symbol: str, points: Sequence[Point]) -> dict[str, Any]:
    instrument = Instrument.objects.filter(symbol=symbol).first()
    if instrument is None:
        raise UnknownBenchmark(f"No instrument {symbol!r} to compare with.")
    days = [p.at if isinstance(p.at, date) and not isinstance(p.at, datetime) else p.at.date() for p in points]
    history = close_history_load(symbols=[symbol], since=days[0] if days else None, until=days[-1] if days else None)
    closes = [(day, history.on(symbol, day)) for day in days]
    priced = [(day, close) for day, close in closes if close is not None]
    series: list[dict[str, Any]] = []
    if priced:
        first = priced[0][1]
        series = [{"t": day.isoformat(), "close": plain(close), "index": float(close / first)} for day, close in priced]
    return {
        "symbol": instrument.symbol,
        "currency": instrument.quote_currency,
        "return": series[-1]["index"] - 1.0 if series else None,
        "series": series,
    }


def performance_for(*, portfolio: Portfolio, range_name: str, benchmark: str = "", now: datetime | None = None) -> dict[str, Any]:
    """A range's figures as the JSON endpoint sends them (money as strings, ratios as numbers; docs/accounting.md)."""
    now = now or timezone.now()
    if range_name == "1D":
        points, incomplete = _points_intraday(portfolio, now), 0
    else:
        today = now.astimezone(portfolio_timezone(portfolio)).date()
        points, incomplete = _points_daily(portfolio, range_start(range_name, today))
    result: dict[str, Any] = {
        "portfolio": portfolio.pk,
        "range": range_name,
        "currency": portfolio.base_currency,
        "series": [],
        "twr": None,
        "mwr": None,
        "mwr_annualised": None,
        "max_drawdown": None,
        "incomplete_days": incomplete,
        "skipped_periods": 0,
        "benchmark": None,
    }
    if points:
        twr = returns.twr([p.value for p in points], [p.flow for p in points], inflows=[p.inflow for p in points])
        result["series"] = [
            {"t": p.at.isoformat(), "value": plain(p.value), "flow": plain(p.flow), "index": index}
            for p, index in zip(points, twr.index, strict=True)
        ]
        result["skipped_periods"] = twr.skipped
        if len(points) > 1:
            first, last = points[0], points[-1]
            result["twr"] = twr.value
            rate = returns.money_weighted(
                start=first.at,
                start_value=first.value,
                flows=[(p.at, p.flow) for p in points[1:] if p.flow],
                end=last.at,
                end_value=last.value,
            )
            result["mwr_annualised"] = rate
            result["mwr"] = None if rate is None else returns.period_return(rate, start=first.at, end=last.at)
            drawdown = returns.max_drawdown(twr.index)
            result["max_drawdown"] = {
                "depth": drawdown.depth,
                "peak": points[drawdown.peak].at.isoformat(),
                "trough": points[drawdown.trough].at.isoformat(),
            }
    if benchmark:
        result["benchmark"] = _benchmark(benchmark, points)
    return result
