"""Pure: past figures in another currency at the rates of their own days. No I/O.

A portfolio's past figures (realised P&L, dividends, interest, fees, net
deposits) are sums of what each ledger entry added to them, in the base
currency, at the entry's own FX rate (`portfolio.ledger.book_apply`). The
combined view shows them in a currency the user picks. Converting the sums at
today's rate would make them move with every FX tick, though they are money
that was made, paid or moved on past days. So each entry's contribution is
converted at the rate of its day instead:

- `flow_days` replays the ledger once (the same fold as everywhere) and groups
  the contributions by day and entry currency. The books' loader calls it when
  the books load, and again when they reload after a ledger change. It never
  runs per tick.
- `past_flows` converts those groups into a target currency. Each group uses
  the daily FX close of its day (`portfolio.daily.CloseHistory.rate`, the
  latest close on or before the day and no older than a week). Where there is
  no close, it uses the entries' own FX rate if their currency is the target.
  Otherwise that part waits for today's rate: it is kept in the base currency
  (`PastFlows.live`), converted live, and named in a `Fallback`, never
  silently.

A day is the entry's UTC date, because FX closes are dated by UTC day (a close
dated d is the last price of the UTC day d).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, date
from decimal import Decimal, localcontext

from portfolio.daily import CloseHistory
from portfolio.ledger import Book, Entry, book_apply
from portfolio.valuation import EXACT, Flows, Pairs

ZERO = Decimal(0)
FIGURES = tuple(f.name for f in fields(Flows))  # realised, dividends, interest, fees, net_deposits


@dataclass(frozen=True, slots=True)
class FlowDay:
    """What the entries of one day in one currency added to the past figures."""

    day: date
    currency: str  # the entries' own currency
    base: Flows  # in the portfolio's base currency (as the ledger booked them)
    own: Flows  # in `currency`: each entry's contribution divided by its own FX rate


@dataclass(frozen=True, slots=True)
class Fallback:
    """Past figures of one portfolio that had no rate of their day: converted at today's rate."""

    base: str
    target: str
    first: date
    last: date
    days: int

    @property
    def pair(self) -> str:
        return f"{self.base}/{self.target}"

    @property
    def message(self) -> str:
        when = f"on {self.first}" if self.days == 1 else f"on {self.days} days from {self.first} to {self.last}"
        return f"converted at today's rate: no {self.pair} history {when}"


@dataclass(frozen=True, slots=True)
class PastFlows:
    """Past figures in the target currency: `fixed` at the rates of their days, plus `live` (base currency) at today's."""

    fixed: Flows
    live: Flows = field(default_factory=Flows)
    fallback: Fallback | None = None

    def at(self, rate: Decimal) -> Flows:
        """The figures with the `live` part converted at `rate` (base → target, today)."""
        if self.fallback is None:
            return self.fixed
        with localcontext(EXACT):
            exact = {name: getattr(self.fixed, name) + getattr(self.live, name) * rate for name in FIGURES}
        return Flows(**{name: +value for name, value in exact.items()})  # unary plus: rounded to the default context


def _totals(book: Book) -> tuple[Decimal, ...]:
    return book.realised, book.dividends, book.interest, book.fees, book.net_deposits


def flow_days(entries: Iterable[Entry]) -> tuple[FlowDay, ...]:
    """Replay `entries` (in execution order) and group what each adds to the past figures by (UTC day, currency).

    The differences are taken exactly, so the groups add up to the fold's own totals to the last digit.
    Raises portfolio.ledger.LedgerError if the ledger does not fold (it always does when written through the services).
    """
    book = Book()
    groups: dict[tuple[date, str], tuple[list[Decimal], list[Decimal]]] = {}
    for entry in entries:
        before = _totals(book)
        # The fold in the default context, as `portfolio_rebuild` ran it; a later setting change must not stop a replay.
        book_apply(book, entry, allow_negative_cash=True)
        after = _totals(book)
        if after == before:
            continue  # a buy or a split without a fee: nothing past to convert
        key = (entry.executed_at.astimezone(UTC).date(), entry.currency)
        base, own = groups.setdefault(key, ([ZERO] * len(FIGURES), [ZERO] * len(FIGURES)))
        with localcontext(EXACT):
            for i, (old, new) in enumerate(zip(before, after, strict=True)):
                delta = new - old
                base[i] += delta
                if delta:
                    own[i] += delta / entry.fx_rate if entry.fx_rate else ZERO
    return tuple(FlowDay(day, currency, Flows(*base), Flows(*own)) for (day, currency), (base, own) in sorted(groups.items()))


def past_flows(days: Iterable[FlowDay], *, base: str, target: str, rate_on: Callable[[date], Decimal | None]) -> PastFlows:
    """Convert a portfolio's `flow_days` from `base` into `target`: each day at `rate_on(day)` (units of target per
    unit of base, from the daily FX closes); without one, at the entries' own rate when their currency is `target`;
    else left in `live` for today's rate, and named in the fallback."""
    fixed = [ZERO] * len(FIGURES)
    live = [ZERO] * len(FIGURES)
    unrated: set[date] = set()
    rates: dict[date, Decimal | None] = {}
    for group in days:
        if group.day not in rates:
            rates[group.day] = rate_on(group.day)  # in the caller's context, as a live rate is worked out
        rate = rates[group.day]
        with localcontext(EXACT):
            for i, name in enumerate(FIGURES):
                amount = getattr(group.base, name)
                if rate is not None:
                    fixed[i] += amount * rate
                elif group.currency == target:
                    fixed[i] += getattr(group.own, name)
                else:
                    live[i] += amount
            if rate is None and group.currency != target and any(getattr(group.base, name) for name in FIGURES):
                unrated.add(group.day)
    fallback = Fallback(base, target, min(unrated), max(unrated), len(unrated)) if unrated else None
    # Rounded once to the default context: with one rate for every day, exactly what (total × rate) gives.
    return PastFlows(Flows(*(+v for v in fixed)), Flows(*(+v for v in live)), fallback)


@dataclass(frozen=True, slots=True)
class FxHistory:
    """The daily closes of the FX instruments, and the pairs they offer (inactive ones too: history outlives a feed)."""

    closes: CloseHistory
    pairs: Pairs

    def rate(self, source: str, target: str, day: date) -> Decimal | None:
        """Units of `target` per unit of `source` at the closes of `day` (direct, inverse or crossed); None without one."""
        return Decimal(1) if source == target else self.closes.rate(source, target, day, self.pairs)
