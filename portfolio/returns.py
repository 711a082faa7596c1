"""Pure return maths: time- and money-weighted return, drawdown, rebasing. No Django, no I/O.

Inputs are money (`Decimal`: values and external cash flows in one currency);
outputs are ratios as `float` (0.05 is 5 %). Why float for ratios: a return is
a dimensionless figure shown to a basis point or so, and it needs non-integer
powers (annualising, XIRR's discount factors) and an iterative root finder,
which `Decimal` does slowly and without gaining anything a reader could see:
a float carries ~16 significant digits, and linking ten thousand daily returns
loses fewer than 1e-12 of them. Money itself never passes through a float
except to become a ratio.

**External flows** are deposits, withdrawals and transfers in or out (cash or
shares, at their value): money the owner moves, not money the portfolio earns.
Dividends, interest and fees are not flows; they are part of the return.
A flow is positive into the portfolio, negative out of it.

**Time-weighted return** (the "daily valuation" method of the CFA Institute's
GIPS: sub-period returns, one per valuation, linked geometrically, so the size
and timing of flows do not count). Values are end-of-day values V_0..V_n; F_i is
the net flow of day i. Flow timing convention: **inflows at the start of the
day, outflows at the end of the day**:

    r_i = (V_i + O_i) / (V_{i-1} + I_i) - 1        I_i = inflows of day i (>= 0), O_i = outflows (>= 0)
    TWR = (1 + r_1)(1 + r_2)...(1 + r_n) - 1

so money that arrives on a day works for that whole day (a first deposit into
an empty portfolio has a return on its first day) and money that leaves on a
day worked for that whole day (a withdrawal of everything ends on a defined
return). When only a day's net flow is known, a positive net flow counts as an
inflow and a negative one as an outflow. A day whose denominator is not
positive (nothing invested: an empty portfolio, or one overdrawn) is skipped:
it has no return to link, and is counted in `Twr.skipped`.

**Money-weighted return** is the XIRR: the annual rate r at which the start value
(as money put in), the flows, and the end value (as money taken out) have a net
present value of zero, with times in years of 365 days (actual/365):

    sum_k c_k / (1 + r) ** ((t_k - t_0).days / 365) = 0

Cash flows from the owner's side: -V_start at t_0, -F for each flow, +V_end at
the end. The root is searched on x = ln(1 + r) over a grid (so r > -1), each
sign change bracketed and refined by bisection to 1e-12; with several roots
(flows changing sign more than once) the one closest to r = 0 is returned.
None when there is no root: all flows one sign, nothing invested, or no sign
change in the searched range.

**Max drawdown** is the largest fall from a running peak to a later trough,
as a fraction of the peak, in [0, 1]; applied to the TWR index (growth of 1)
it is free of flows, which a raw value series is not (a withdrawal is not a loss).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import TypeVar

ZERO = Decimal(0)
DAYS_PER_YEAR = 365
_TOLERANCE = 1e-12
# The largest exponent a discount factor may take (e ** 700 is near float's limit).
_MAX_EXPONENT = 700.0
# The grid the root is bracketed on, in x = ln(1 + r): from 1e-6 out to the limit, each cell 1.25 times the last.
_FIRST_STEP = 1e-6
_GROWTH = 1.25

When = TypeVar("When", date, datetime)


@dataclass(frozen=True, slots=True)
class Twr:
    """A time-weighted return with its index: `index[i]` is the growth of 1 from the first value to value i."""

    value: float
    index: tuple[float, ...]
    skipped: int  # sub-periods with nothing invested, left out of the linking


def twr(values: Sequence[Decimal], flows: Sequence[Decimal], *, inflows: Sequence[Decimal] | None = None) -> Twr:
    """TWR of end-of-period `values` with each period's net external `flows` (flows[0], the first period's, is not used:
    the first value is the start). `inflows`, when given, is each period's gross inflow (the rest of the net flow then
    counts as outflow), for days with money both in and out; by default a net flow is an inflow or an outflow.
    """
    if len(values) != len(flows) or (inflows is not None and len(inflows) != len(values)):
        raise ValueError("values, flows (and inflows) need one entry per period")
    if not values:
        return Twr(0.0, (), 0)
    growth, index, skipped = 1.0, [1.0], 0
    for i in range(1, len(values)):
        inflow = inflows[i] if inflows is not None else max(flows[i], ZERO)
        outflow = inflow - flows[i]  # what left: gross inflow minus net flow
        start = values[i - 1] + inflow
        if start <= 0:
            skipped += 1
        else:
            growth *= float((values[i] + outflow) / start)
        index.append(growth)
    return Twr(growth - 1.0, tuple(index), skipped)


def annualise(ratio: float, days: float) -> float:
    """A return over `days` as a rate per 365 days."""
    if days <= 0:
        raise ValueError("annualising needs a positive length")
    return (1.0 + ratio) ** (DAYS_PER_YEAR / days) - 1.0


def _years(start: When, at: When) -> float:
    delta = at - start
    return delta.total_seconds() / 86400 / DAYS_PER_YEAR


def xirr(cash_flows: Sequence[tuple[When, Decimal]]) -> float | None:
    """The annual rate (actual/365) at which `cash_flows` (when, amount; the owner's side: money put in is negative)
    have a net present value of zero; None when no rate does. Times may be dates or aware datetimes."""
    if not cash_flows:
        return None
    start = min(when for when, _ in cash_flows)
    flows = [(_years(start, when), float(amount)) for when, amount in cash_flows if amount]
    if not any(c > 0 for _, c in flows) or not any(c < 0 for _, c in flows):
        return None
    longest = max(t for t, _ in flows)
    limit = _MAX_EXPONENT if longest <= 1 else _MAX_EXPONENT / longest

    def npv(x: float) -> float:
        # Discounting by (1 + r) ** -t = e ** (-x t), summed with compensation (large flows of both signs cancel).
        return math.fsum(c * math.exp(-x * t) for t, c in flows)

    # Cells fine near r = 0 (where returns live) and growing outward, so the root closest to 0 is found first.
    steps = {0.0, limit, -limit}
    step = _FIRST_STEP
    while step < limit:
        steps.update((step, -step))
        step *= _GROWTH
    grid = sorted(steps)
    values = [npv(x) for x in grid]
    brackets = [(grid[k], grid[k]) for k in range(len(grid)) if values[k] == 0]
    brackets.extend((grid[k], grid[k + 1]) for k in range(len(grid) - 1) if values[k] * values[k + 1] < 0)
    if not brackets:
        return None
    low, high = min(brackets, key=lambda b: min(abs(b[0]), abs(b[1])))
    f_low = npv(low)
    while high - low > _TOLERANCE:
        middle = (low + high) / 2
        f_middle = npv(middle)
        if f_middle == 0:
            low = high = middle
            break
        if (f_middle < 0) == (f_low < 0):
            low, f_low = middle, f_middle
        else:
            high = middle
    return math.expm1((low + high) / 2)


def money_weighted(
    *, start: When, start_value: Decimal, flows: Sequence[tuple[When, Decimal]], end: When, end_value: Decimal
) -> float | None:
    """XIRR of a period: the start value put in at `start`, each flow (positive into the portfolio) put in
    when it happened, the end value taken out at `end`."""
    cash_flows: list[tuple[When, Decimal]] = [(start, -start_value)]
    cash_flows.extend((when, -amount) for when, amount in flows)
    cash_flows.append((end, end_value))
    return xirr(cash_flows)


def period_return(rate: float, *, start: When, end: When) -> float:
    """An annual rate as the return over [start, end] (GIPS: returns of periods under a year are not annualised)."""
    return (1.0 + rate) ** _years(start, end) - 1.0


@dataclass(frozen=True, slots=True)
class Drawdown:
    depth: float  # fraction of the peak lost, in [0, 1]
    peak: int  # index of the peak
    trough: int  # index of the trough (>= peak)


def max_drawdown(series: Sequence[float | Decimal]) -> Drawdown:
    """The largest peak-to-trough fall of a non-negative series; zero (at index 0) when it never falls."""
    best = Drawdown(0.0, 0, 0)
    peak_index, peak = 0, None
    for i, raw in enumerate(series):
        value = float(raw)
        if peak is None or value > peak:
            peak_index, peak = i, value
            continue
        if peak > 0:
            depth = (peak - value) / peak
            if depth > best.depth:
                best = Drawdown(min(depth, 1.0), peak_index, i)
    return best


def rebase(series: Sequence[Decimal], *, to: Decimal | float = 1) -> list[float]:
    """`series` scaled so that its first value is `to` (a benchmark's closes as a growth of 1 from the range start)."""
    if not series:
        return []
    first = series[0]
    if first <= 0:
        raise ValueError("a series rebases only from a positive first value")
    return [float(value / first) * float(to) for value in series]
