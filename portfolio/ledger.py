"""Pure ledger arithmetic: a position from its transactions, in execution order.

Average cost is the cost basis: a buy adds its quantity at price plus fee; a
sell reduces the quantity and leaves the average unchanged; a position sold to
zero starts afresh.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

ZERO = Decimal(0)


class LedgerError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Entry:
    side: str  # "buy" | "sell"
    quantity: Decimal
    price: Decimal
    fee: Decimal
    executed_at: datetime


@dataclass(frozen=True, slots=True)
class Position:
    quantity: Decimal = ZERO
    average_cost: Decimal = ZERO


def position_apply(position: Position, entry: Entry, *, symbol: str = "") -> Position:
    if entry.side == "buy":
        quantity = position.quantity + entry.quantity
        cost = position.quantity * position.average_cost + entry.quantity * entry.price + entry.fee
        return Position(quantity, cost / quantity)
    if entry.side == "sell":
        if entry.quantity > position.quantity:
            raise LedgerError(
                f"Cannot sell {entry.quantity.normalize():f} {symbol} on "
                f"{entry.executed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC: only {position.quantity.normalize():f} held at that time."
            )
        quantity = position.quantity - entry.quantity
        return Position(quantity, position.average_cost if quantity else ZERO)
    raise LedgerError(f"Unknown side {entry.side!r}.")


def position_from_ledger(entries: Iterable[Entry], *, symbol: str = "") -> Position:
    """Fold entries (already in execution order) into a position; raises LedgerError."""
    position = Position()
    for entry in entries:
        position = position_apply(position, entry, symbol=symbol)
    return position
