"""Pure: a portfolio's value at the end of each day, from its ledger and daily closes. No I/O.

The ledger is replayed day by day (`portfolio.ledger.book_apply`, the same fold
as everywhere): day d holds every entry executed before the end of d in the
portfolio's time zone. Its value, in the base currency, is each position at its
instrument's daily close dated d, converted at the FX instruments' closes dated
d (a direct pair, its inverse, or a cross through one currency, as live
valuation does), plus each cash balance converted the same way.

Instrument days are UTC days (a close dated d is the last price of the UTC day
d); a portfolio's day is a day of its own time zone. For a portfolio far from
UTC the two differ by hours; the value of its day d is its end-of-day holdings
at the closes dated d.

**A missing price** is not guessed. A close is the latest on or before d
(weekends and holidays carry the last session's close, as every vendor's daily
series does) but no older than `STALE_AFTER`; a held instrument or a currency
without such a close makes the day **incomplete**: its value is what could be
priced, flagged `complete=False`, and return figures skip it (its flows roll
into the next complete day).

**Net flow** of a day is the sum of its external flows in the base currency:
cash deposits and withdrawals, cash transfers (at the entry's own FX rate, as
the ledger books them) and share transfers (at the day's close, converted at the
day's rate: what the shares added to or took from the value). `inflow` is the
gross of the positive ones, for the time-weighted return's flow timing
(`portfolio.returns.twr`).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from portfolio.ledger import ZERO, Book, Entry, book_apply
from portfolio.valuation import Pairs, fx_route

STALE_AFTER = timedelta(days=7)
CASH_FLOWS = {"deposit": 1, "withdrawal": -1, "transfer_in": 1, "transfer_out": -1}


class CloseHistory:
    """Daily closes per symbol, looked up as "the latest on or before a day, if not stale"."""

    def __init__(self, closes: Iterable[tuple[str, date, Decimal]]) -> None:
        by_symbol: dict[str, list[tuple[date, Decimal]]] = {}
        for symbol, day, close in closes:
            by_symbol.setdefault(symbol, []).append((day, close))
        self._days: dict[str, list[date]] = {}
        self._closes: dict[str, list[Decimal]] = {}
        for symbol, rows in by_symbol.items():
            rows.sort()
            self._days[symbol] = [day for day, _ in rows]
            self._closes[symbol] = [close for _, close in rows]

    def on(self, symbol: str, day: date) -> Decimal | None:
        days = self._days.get(symbol)
        if not days:
            return None
        i = bisect_right(days, day) - 1
        if i < 0 or day - days[i] > STALE_AFTER:
            return None
        return self._closes[symbol][i]

    def series(self, symbol: str) -> list[tuple[date, Decimal]]:
        return list(zip(self._days.get(symbol, []), self._closes.get(symbol, []), strict=True))

    def rate(self, source: str, target: str, day: date, pairs: Pairs) -> Decimal | None:
        """Units of `target` per unit of `source` at the closes of `day`; None when a leg has no close."""
        route = fx_route(source, target, pairs)
        if route is None:
            return None
        rate = Decimal(1)
        for symbol, invert in route:
            close = self.on(symbol, day)
            if close is None:
                return None
            rate = rate / close if invert else rate * close
        return rate


@dataclass(frozen=True, slots=True)
class DayValue:
    day: date
    value: Decimal
    net_flow: Decimal
    inflow: Decimal
    complete: bool
    missing: tuple[str, ...] = ()  # what could not be priced: symbols and currencies


def day_end(day: date, tz: ZoneInfo) -> datetime:
    """The end of `day` in `tz` (the next local midnight), as aware UTC."""
    return datetime.combine(day + timedelta(days=1), time(), tzinfo=tz).astimezone(UTC)


def local_day(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


def daily_values(
    entries: Iterable[Entry],
    *,
    base: str,
    tz: ZoneInfo,
    last: date,
    closes: CloseHistory,
    pairs: Pairs,
    currencies: Mapping[str, str],
) -> list[DayValue]:
    """The value of each day from the first entry's day to `last` (inclusive); `currencies`: symbol → quote currency.

    `entries` in execution order, read once (a ledger of any length streams through: only the book is held).
    Raises portfolio.ledger.LedgerError if the ledger does not fold (it always does when written through the services).
    """
    pending = iter(entries)
    entry = next(pending, None)
    if entry is None:
        return []
    book = Book()
    out: list[DayValue] = []
    day = local_day(entry.executed_at, tz)
    while day <= last:
        end = day_end(day, tz)
        flow = inflow = ZERO
        missing: set[str] = set()
        while entry is not None and entry.executed_at < end:
            # The ledger was checked when it was written; a later setting change must not stop a replay.
            book_apply(book, entry, allow_negative_cash=True)
            if entry.kind in CASH_FLOWS:
                amount = _flow(entry, day, base=base, closes=closes, pairs=pairs, currencies=currencies, missing=missing)
                flow += amount
                inflow += max(amount, ZERO)
            entry = next(pending, None)
        value = ZERO
        for symbol, position in book.positions.items():
            if not position.quantity:
                continue
            price = _in_base(symbol, day, currencies.get(symbol, base), base=base, closes=closes, pairs=pairs, missing=missing)
            if price is not None:
                value += position.quantity * price
        for currency, amount in book.cash.items():
            if not amount:
                continue
            rate = closes.rate(currency, base, day, pairs) if currency != base else Decimal(1)
            if rate is None:
                missing.add(currency)
            else:
                value += amount * rate
        out.append(DayValue(day, value, flow, inflow, not missing, tuple(sorted(missing))))
        day += timedelta(days=1)
    return out


def _in_base(symbol: str, day: date, currency: str, *, base: str, closes: CloseHistory, pairs: Pairs, missing: set[str]) -> Decimal | None:
    close = closes.on(symbol, day)
    if close is None:
        missing.add(symbol)
        return None
    rate = closes.rate(currency, base, day, pairs) if currency != base else Decimal(1)
    if rate is None:
        missing.add(currency)
        return None
    return close * rate


def _flow(
    entry: Entry, day: date, *, base: str, closes: CloseHistory, pairs: Pairs, currencies: Mapping[str, str], missing: set[str]
) -> Decimal:
    sign = CASH_FLOWS[entry.kind]
    if not entry.symbol:
        return sign * entry.amount * entry.fx_rate
    price = _in_base(entry.symbol, day, currencies.get(entry.symbol, base), base=base, closes=closes, pairs=pairs, missing=missing)
    # Unpriced shares (the day is then incomplete anyway) count at the cost the ledger moved them at.
    return sign * entry.quantity * (price if price is not None else entry.price * entry.fx_rate)
