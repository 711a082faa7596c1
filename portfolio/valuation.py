"""Pure valuation: holdings, cash, latest prices and FX → values, P&L, day change, allocation.

No I/O. The live consumer calls these on every price change (only for the rows
a price touches), the worker once a minute for the history, the tests always.
Every figure is in the view's currency (a portfolio's base currency, or the
currency the combined view is shown in).

FX comes from FX instruments in the feed: `EUR/USD` (or `EURUSD`) quoted in USD
is the price of one EUR in USD. A conversion uses a direct pair, its inverse,
or a cross through one other currency. A row whose rate is not known is marked
`no_rate` and left out of the totals (named in `missing`): never a crash, never
a silent zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, localcontext
from typing import Any

ZERO = Decimal(0)
ONE = Decimal(1)
HUNDRED = Decimal(100)

OK, NO_PRICE, NO_RATE, NO_REFERENCE = "ok", "no_price", "no_rate", "no_reference"


@dataclass(frozen=True, slots=True)
class Line:
    """A holding: quantity and cost from the ledger."""

    symbol: str
    name: str
    asset_class: str
    currency: str  # the instrument's quote currency
    quantity: Decimal
    cost: Decimal  # instrument currency
    cost_base: Decimal  # the portfolio's base currency, at trade-date FX

    @property
    def key(self) -> str:
        return self.symbol


@dataclass(frozen=True, slots=True)
class Cash:
    currency: str
    amount: Decimal

    @property
    def key(self) -> str:
        return f"cash:{self.currency}"


@dataclass(frozen=True, slots=True)
class Flows:
    """Ledger totals in the base currency."""

    realised: Decimal = ZERO
    dividends: Decimal = ZERO
    interest: Decimal = ZERO
    fees: Decimal = ZERO
    net_deposits: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class Price:
    value: Decimal
    ts: datetime
    seq: int = 0
    epoch: str = ""
    reference: Decimal | None = None  # previous close, or the price 24 h ago
    replay: bool = False  # from a recorded session replayed by `replay_feed`


# ---------------------------------------------------------------- FX

Leg = tuple[str, bool]  # (FX symbol, invert)
Pairs = Mapping[tuple[str, str], str]  # (base, quote) → FX symbol


def fx_pair(symbol: str, quote_currency: str) -> tuple[str, str] | None:
    """(base, quote) of an FX instrument symbol such as EUR/USD, EURUSD or EUR-USD."""
    letters = "".join(c for c in symbol.upper() if c.isalpha())
    if len(letters) != 6 or letters[3:] != quote_currency:
        return None
    return letters[:3], letters[3:]


def fx_route(source: str, target: str, pairs: Pairs) -> tuple[Leg, ...] | None:
    """The FX symbols that turn `source` into `target`: none, one pair, or a cross through one currency."""
    if source == target:
        return ()

    def leg(a: str, b: str) -> Leg | None:
        if (a, b) in pairs:
            return pairs[a, b], False
        if (b, a) in pairs:
            return pairs[b, a], True
        return None

    direct = leg(source, target)
    if direct is not None:
        return (direct,)
    for via in sorted({c for pair in pairs for c in pair} - {source, target}):
        first, second = leg(source, via), leg(via, target)
        if first is not None and second is not None:
            return first, second
    return None


def route_rate(route: tuple[Leg, ...] | None, prices: Mapping[str, Price], *, reference: bool = False) -> Decimal | None:
    """Units of target per unit of source, now or at the reference time; None when a leg has no price."""
    if route is None:
        return None
    rate = ONE
    for symbol, invert in route:
        price = prices.get(symbol)
        value = None if price is None else (price.reference if reference else price.value)
        if not value:
            return None
        rate = rate / value if invert else rate * value
    return rate


# ---------------------------------------------------------------- rows


@dataclass(frozen=True, slots=True)
class RowValue:
    status: str
    rate: Decimal | None  # one unit of the row's currency in the view currency
    market_value: Decimal | None
    cost: Decimal | None  # None for cash
    pnl: Decimal | None
    day_change: Decimal | None

    @property
    def pnl_pct(self) -> Decimal | None:
        return percent(self.pnl, self.cost)

    @property
    def day_change_pct(self) -> Decimal | None:
        if self.day_change is None or self.market_value is None:
            return None
        return percent(self.day_change, self.market_value - self.day_change)


def percent(part: Decimal | None, whole: Decimal | None) -> Decimal | None:
    return None if part is None or not whole else part / whole * HUNDRED


def value_holding(line: Line, price: Price | None, rate: Decimal | None, reference_rate: Decimal | None) -> RowValue:
    """A holding at `price` (instrument currency), converted at `rate`; cost is the trade-date base cost."""
    if price is None:
        return RowValue(NO_PRICE, rate, None, line.cost_base, None, None)
    if rate is None:
        return RowValue(NO_RATE, None, None, line.cost_base, None, None)
    market_value = line.quantity * price.value * rate
    if price.reference is None or reference_rate is None:
        return RowValue(NO_REFERENCE, rate, market_value, line.cost_base, market_value - line.cost_base, None)
    day_change = market_value - line.quantity * price.reference * reference_rate
    return RowValue(OK, rate, market_value, line.cost_base, market_value - line.cost_base, day_change)


def value_cash(cash: Cash, rate: Decimal | None, reference_rate: Decimal | None) -> RowValue:
    """Cash in its currency, converted at `rate`; its day change is the FX move."""
    if rate is None:
        return RowValue(NO_RATE, None, None, None, None, None)
    market_value = cash.amount * rate
    if reference_rate is None:
        return RowValue(NO_REFERENCE, rate, market_value, None, None, None)
    return RowValue(OK, rate, market_value, None, None, market_value - cash.amount * reference_rate)


# ---------------------------------------------------------------- totals and allocation


@dataclass(frozen=True, slots=True)
class Totals:
    total_value: Decimal
    market_value: Decimal
    cash: Decimal
    cost: Decimal
    unrealised_pnl: Decimal
    realised_pnl: Decimal
    dividends: Decimal
    interest: Decimal
    fees: Decimal
    net_deposits: Decimal
    day_change: Decimal
    missing: tuple[tuple[str, str], ...]  # (row key, status) of rows left out of a total

    @property
    def unrealised_pnl_pct(self) -> Decimal | None:
        return percent(self.unrealised_pnl, self.cost)

    @property
    def day_change_pct(self) -> Decimal | None:
        return percent(self.day_change, self.total_value - self.day_change)


def totals(holdings: Iterable[tuple[str, RowValue]], cash: Iterable[tuple[str, RowValue]], flows: Flows) -> Totals:
    """Add up valued rows. A row without a value is left out of every total; one without a reference, of the day change."""
    with localcontext(EXACT):
        return _totals(holdings, cash, flows)


def _totals(holdings: Iterable[tuple[str, RowValue]], cash: Iterable[tuple[str, RowValue]], flows: Flows) -> Totals:
    market_value = cash_value = cost = day_change = ZERO
    missing: list[tuple[str, str]] = []
    for is_cash, (key, row) in [*((False, r) for r in holdings), *((True, r) for r in cash)]:
        if row.market_value is None:
            missing.append((key, row.status))
            continue
        if is_cash:
            cash_value += row.market_value
        else:
            market_value += row.market_value
            cost += row.cost or ZERO
        if row.day_change is None:
            missing.append((key, row.status))
        else:
            day_change += row.day_change
    return Totals(
        total_value=market_value + cash_value,
        market_value=market_value,
        cash=cash_value,
        cost=cost,
        unrealised_pnl=market_value - cost,
        realised_pnl=flows.realised,
        dividends=flows.dividends,
        interest=flows.interest,
        fees=flows.fees,
        net_deposits=flows.net_deposits,
        day_change=day_change,
        missing=tuple(missing),
    )


@dataclass(frozen=True, slots=True)
class Slice:
    key: str
    label: str
    value: Decimal
    weight: Decimal


@dataclass(frozen=True, slots=True)
class Tag:
    """Where a row's value counts in each allocation: (key, label) per dimension."""

    instrument: tuple[str, str]
    asset_class: tuple[str, str]
    currency: tuple[str, str]


DIMENSIONS = ("instrument", "asset_class", "currency")
# Sums of row values are exact. In the default 28-digit context every addition may round, so a total
# kept up row by row and the same total summed afresh could land on either side of a half cent.
# 100 digits hold any sum of 28-digit values whose exponents lie within 70 places of each other.
EXACT = Context(prec=100)


def allocation(rows: Iterable[tuple[Tag, Decimal | None]]) -> dict[str, list[Slice]]:
    """Positive values by instrument, asset class and currency, largest first; weights are percent of their sum.

    Rows without a value, and negative balances (cash overdrawn), have no share to show.
    """
    sums: dict[str, dict[tuple[str, str], Decimal]] = {dimension: {} for dimension in DIMENSIONS}
    with localcontext(EXACT):
        for tag, value in rows:
            if value is None or value <= 0:
                continue
            for dimension, slot in zip(DIMENSIONS, (tag.instrument, tag.asset_class, tag.currency), strict=True):
                sums[dimension][slot] = sums[dimension].get(slot, ZERO) + value
    return {dimension: _slices(values) for dimension, values in sums.items()}


def _slices(values: Mapping[tuple[str, str], Decimal]) -> list[Slice]:
    with localcontext(EXACT):
        whole = sum(values.values(), ZERO)
    ordered = sorted(values.items(), key=lambda item: (-item[1], item[0][0]))
    return [Slice(key, label, value, value / whole * HUNDRED) for (key, label), value in ordered]


class RunningTotals:
    """`totals` and `allocation` of a set of rows, kept up to date one changed row at a time.

    A price moves a few rows; summing every row again for each frame is what made a
    dashboard's frame cost grow with its size. Here each changed row takes its old
    value out and puts its new one in. Both add in the EXACT context, so they give
    the same sums to the last digit, whatever the order.
    `order`: each row's place in `totals`' list of missing rows (holdings first, then cash).
    """

    def __init__(self, *, order: Mapping[str, int], cash: Iterable[str], tags: Mapping[str, Tag]) -> None:
        self.order = order
        self.cash_keys = frozenset(cash)
        self.tags = tags
        self.rows: dict[str, RowValue] = {}
        self.market_value = self.cash = self.cost = self.day_change = ZERO
        self.missing: dict[str, str] = {}
        self.slots: dict[str, dict[tuple[str, str], list[Any]]] = {dimension: {} for dimension in DIMENSIONS}  # slot → [sum, rows]

    def set(self, key: str, row: RowValue) -> None:
        old = self.rows.get(key)
        with localcontext(EXACT):
            if old is not None:
                self._count(key, old, -1)
            self.rows[key] = row
            self._count(key, row, 1)

    def _count(self, key: str, row: RowValue, sign: int) -> None:
        value = row.market_value
        if value is None:
            self._miss(key, row.status, sign)
            return
        if key in self.cash_keys:
            self.cash += sign * value
        else:
            self.market_value += sign * value
            self.cost += sign * (row.cost or ZERO)
        if row.day_change is None:
            self._miss(key, row.status, sign)
        else:
            self.day_change += sign * row.day_change
        if value > 0:
            tag = self.tags[key]
            for dimension, slot in zip(DIMENSIONS, (tag.instrument, tag.asset_class, tag.currency), strict=True):
                sums = self.slots[dimension]
                entry = sums.setdefault(slot, [ZERO, 0])
                entry[0] += sign * value
                entry[1] += sign
                if not entry[1]:
                    del sums[slot]

    def _miss(self, key: str, status: str, sign: int) -> None:
        if sign > 0:
            self.missing[key] = status
        else:
            self.missing.pop(key, None)

    def totals(self, flows: Flows) -> Totals:
        with localcontext(EXACT):
            total_value, unrealised_pnl = self.market_value + self.cash, self.market_value - self.cost
        return Totals(
            total_value=total_value,
            market_value=self.market_value,
            cash=self.cash,
            cost=self.cost,
            unrealised_pnl=unrealised_pnl,
            realised_pnl=flows.realised,
            dividends=flows.dividends,
            interest=flows.interest,
            fees=flows.fees,
            net_deposits=flows.net_deposits,
            day_change=self.day_change,
            missing=tuple(sorted(self.missing.items(), key=lambda item: self.order[item[0]])),
        )

    def allocation(self) -> dict[str, list[Slice]]:
        return {dimension: _slices({slot: entry[0] for slot, entry in sums.items()}) for dimension, sums in self.slots.items()}


def convert(parts: Iterable[tuple[RowValue, Decimal | None, Decimal | None]]) -> RowValue:
    """One row made of several rows (a symbol held in several portfolios), each converted at (rate, reference rate)
    from its own view currency into a common one. Cost converts at the current rate."""
    market_value = cost = day_change = ZERO
    has_cost = has_day_change = True
    rate: Decimal | None = None
    for row, to_view, reference_to_view in parts:
        if to_view is None:
            return RowValue(NO_RATE, None, None, None, None, None)
        if row.market_value is None or row.rate is None:
            return RowValue(row.status, None, None, None if row.cost is None else row.cost * to_view, None, None)
        rate = row.rate * to_view
        market_value += row.market_value * to_view
        if row.cost is None:
            has_cost = False
        else:
            cost += row.cost * to_view
        if row.day_change is None or reference_to_view is None:
            has_day_change = False
        else:
            day_change += row.market_value * to_view - (row.market_value - row.day_change) * reference_to_view
    return RowValue(
        OK if has_day_change else NO_REFERENCE,
        rate,
        market_value,
        cost if has_cost else None,
        market_value - cost if has_cost else None,
        day_change if has_day_change else None,
    )
