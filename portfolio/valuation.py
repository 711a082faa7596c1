"""Pure valuation: holdings + latest prices → row values and portfolio totals.

No I/O. The live consumer calls these on every price change, so they stay cheap.
Only rows quoted in the portfolio's base currency enter the totals; any other
row is reported as excluded ("no FX rate") rather than silently added or zeroed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

ZERO = Decimal(0)
CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Line:
    symbol: str
    name: str
    currency: str
    quantity: Decimal
    average_cost: Decimal


@dataclass(frozen=True, slots=True)
class Price:
    value: Decimal
    ts: datetime
    seq: int = 0
    epoch: str = ""


@dataclass(frozen=True, slots=True)
class RowValue:
    cost: Decimal
    market_value: Decimal | None
    pnl: Decimal | None
    pnl_pct: Decimal | None


@dataclass(frozen=True, slots=True)
class Totals:
    market_value: Decimal
    cost: Decimal
    pnl: Decimal
    pnl_pct: Decimal | None
    excluded: tuple[str, ...]  # symbols left out: no price yet, or not in the base currency


def percent(part: Decimal, whole: Decimal) -> Decimal | None:
    return None if not whole else part / whole * 100


def value_row(line: Line, price: Price | None) -> RowValue:
    cost = line.quantity * line.average_cost
    if price is None:
        return RowValue(cost, None, None, None)
    market_value = line.quantity * price.value
    pnl = market_value - cost
    return RowValue(cost, market_value, pnl, percent(pnl, cost))


def totals(rows: Iterable[tuple[Line, RowValue]], *, base_currency: str) -> Totals:
    market_value = cost = ZERO
    excluded = []
    for line, value in rows:
        if value.market_value is None or line.currency != base_currency:
            excluded.append(line.symbol)
            continue
        market_value += value.market_value
        cost += value.cost
    pnl = market_value - cost
    return Totals(market_value, cost, pnl, percent(pnl, cost), tuple(excluded))
