"""Pure ledger arithmetic: a portfolio's state from its transactions, in execution order.

The cost basis is the **average cost**: a buy adds its quantity at its price; a
sell or an outgoing transfer removes cost in proportion to the quantity it
takes, so the average of what is left does not move. Fees are never part of
the cost basis: every fee (of a trade, a dividend or a fee entry) goes to the
fees total. Cost is kept twice, in the instrument's currency and in the
portfolio's base currency at each entry's own FX rate (trade-date FX).

With these rules, in a single-currency portfolio, for any ledger:
    market value + cash − net deposits == realised + unrealised + dividends + interest − fees
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

ZERO = Decimal(0)
ONE = Decimal(1)

# Kinds that move shares of an instrument, and those that need one.
TRADES = frozenset({"buy", "sell"})
NEEDS_INSTRUMENT = frozenset({"buy", "sell", "split", "dividend"})


class LedgerError(ValueError):
    def __init__(self, message: str, ref: object = None) -> None:
        super().__init__(message)
        self.ref = ref  # the failing entry's `ref`: a transaction id, a CSV line number


@dataclass(frozen=True, slots=True)
class Entry:
    """One transaction, as the fold sees it.

    `quantity` is shares for trades and share transfers, the ratio for a split
    (2 for a 2-for-1), and for cash entries the amount is `quantity * price`
    (price defaults to 1). `fx_rate` is units of base currency per unit of
    `currency` at execution.
    """

    kind: str
    executed_at: datetime
    currency: str
    symbol: str = ""
    quantity: Decimal = ZERO
    price: Decimal = ONE
    fee: Decimal = ZERO
    fx_rate: Decimal = ONE
    ref: object = field(default=None, compare=False)

    @property
    def amount(self) -> Decimal:
        return self.quantity * self.price


@dataclass(slots=True)
class Position:
    quantity: Decimal = ZERO
    cost: Decimal = ZERO  # instrument currency
    cost_base: Decimal = ZERO  # base currency, at trade-date FX

    def take(self, quantity: Decimal) -> tuple[Decimal, Decimal]:
        """Remove `quantity` at average cost; returns the cost removed (instrument, base)."""
        if quantity == self.quantity:
            cost, cost_base = self.cost, self.cost_base
        else:
            cost, cost_base = self.cost * quantity / self.quantity, self.cost_base * quantity / self.quantity
        self.quantity -= quantity
        self.cost -= cost
        self.cost_base -= cost_base
        return cost, cost_base


@dataclass(slots=True)
class Book:
    """A portfolio's derived state. Money totals are in the base currency."""

    positions: dict[str, Position] = field(default_factory=dict)
    cash: dict[str, Decimal] = field(default_factory=dict)
    realised: Decimal = ZERO
    dividends: Decimal = ZERO
    interest: Decimal = ZERO
    fees: Decimal = ZERO
    net_deposits: Decimal = ZERO

    def open_positions(self) -> dict[str, Position]:
        return {symbol: p for symbol, p in self.positions.items() if p.quantity}

    def cash_balances(self) -> dict[str, Decimal]:
        return {currency: amount for currency, amount in self.cash.items() if amount}


def _when(entry: Entry) -> str:
    return f"{entry.executed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 150, 0.5, 1234.5678."""
    return f"{value.normalize():f}"


def book_apply(book: Book, entry: Entry, *, allow_negative_cash: bool = False) -> None:
    """Apply one entry in place; raises LedgerError (leaving `book` unusable) when it cannot apply."""
    kind, fx, ccy = entry.kind, entry.fx_rate, entry.currency
    cash = book.cash.get(ccy, ZERO) - entry.fee
    book.fees += entry.fee * fx
    position = book.positions.setdefault(entry.symbol, Position()) if entry.symbol else None

    if kind == "buy" and position is not None:
        position.quantity += entry.quantity
        position.cost += entry.amount
        position.cost_base += entry.amount * fx
        cash -= entry.amount
    elif kind in ("sell", "transfer_out") and position is not None:
        if entry.quantity > position.quantity:
            verb = "sell" if kind == "sell" else "transfer out"
            raise LedgerError(
                f"Cannot {verb} {plain(entry.quantity)} {entry.symbol} on {_when(entry)}: only {plain(position.quantity)} held at that time.",
                entry.ref,
            )
        _, cost_base = position.take(entry.quantity)
        if kind == "sell":
            book.realised += entry.amount * fx - cost_base
            cash += entry.amount
        else:
            book.net_deposits -= cost_base
    elif kind == "transfer_in" and position is not None:
        # Shares arrive at the cost they had where they came from (carried in `price`).
        position.quantity += entry.quantity
        position.cost += entry.amount
        position.cost_base += entry.amount * fx
        book.net_deposits += entry.amount * fx
    elif kind == "split" and position is not None:
        if entry.quantity <= 0:
            raise LedgerError(f"Split ratio must be greater than zero, not {plain(entry.quantity)}.", entry.ref)
        position.quantity *= entry.quantity  # cost is unchanged: the same money, more shares
    elif kind == "dividend":
        cash += entry.amount
        book.dividends += entry.amount * fx
    elif kind == "interest":
        cash += entry.amount
        book.interest += entry.amount * fx
    elif kind == "fee":
        cash -= entry.amount
        book.fees += entry.amount * fx
    elif kind in ("deposit", "transfer_in"):
        cash += entry.amount
        book.net_deposits += entry.amount * fx
    elif kind in ("withdrawal", "transfer_out"):
        cash -= entry.amount
        book.net_deposits -= entry.amount * fx
        if cash < 0 and not allow_negative_cash:
            held = book.cash.get(ccy, ZERO)
            fee = f" plus a {plain(entry.fee)} {ccy} fee" if entry.fee else ""
            raise LedgerError(
                f"Cannot withdraw {plain(entry.amount)} {ccy}{fee} on {_when(entry)}: only {plain(held)} {ccy} cash held at that time "
                "(the portfolio does not allow negative cash).",
                entry.ref,
            )
    else:
        raise LedgerError(f"A {kind} entry needs an instrument." if kind in NEEDS_INSTRUMENT else f"Unknown kind {kind!r}.", entry.ref)
    book.cash[ccy] = cash


def book_from_ledger(entries: Iterable[Entry], *, allow_negative_cash: bool = False) -> Book:
    """Fold entries (already in execution order) into a book; raises LedgerError at the first that cannot apply."""
    book = Book()
    for entry in entries:
        book_apply(book, entry, allow_negative_cash=allow_negative_cash)
    return book
