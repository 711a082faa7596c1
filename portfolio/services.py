"""Writes to portfolios. Every ledger change goes through here.

`transaction_check` validates, `transaction_record` / `transaction_delete`
perform: they re-validate under a lock, rebuild the affected holding in the same
database transaction, and tell the owner's live connections after commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import transaction as db_transaction
from django.utils import timezone

from marketdata import streams
from marketdata.groups import PORTFOLIO_RELOAD_EVENT
from marketdata.models import Instrument
from portfolio.ledger import Entry, LedgerError, Position, position_from_ledger
from portfolio.models import Holding, Portfolio, Side, Transaction

# Clocks disagree a little; a trade stamped a minute ahead is still "now".
_FUTURE_TOLERANCE = timedelta(minutes=1)


def _entries(*, portfolio: Portfolio, instrument: Instrument, add: Entry | None = None, exclude_id: int | None = None) -> list[Entry]:
    rows = Transaction.objects.filter(portfolio=portfolio, instrument=instrument).order_by("executed_at", "id")
    if exclude_id is not None:
        rows = rows.exclude(id=exclude_id)
    entries = [Entry(t.side, t.quantity, t.price, t.fee, t.executed_at) for t in rows]
    if add is not None:
        # Same execution time as an existing entry: the new one comes after it, as its id would.
        entries.append(add)
        entries.sort(key=lambda e: e.executed_at)
    return entries


def _fold(*, entries: list[Entry], instrument: Instrument, field: str) -> Position:
    try:
        return position_from_ledger(entries, symbol=instrument.symbol)
    except LedgerError as exc:
        raise ValidationError({field: str(exc)}) from None


def transaction_check(
    *,
    portfolio: Portfolio,
    instrument: Instrument,
    side: str,
    quantity: Decimal,
    price: Decimal,
    fee: Decimal = Decimal(0),
    executed_at: datetime,
) -> Position:
    """Validate a new ledger entry; returns the resulting position or raises ValidationError."""
    errors: dict[str, str] = {}
    if side not in Side.values:
        errors["side"] = f"Side must be one of {', '.join(Side.values)}."
    if not quantity.is_finite() or quantity <= 0:
        errors["quantity"] = "Quantity must be greater than zero."
    if not price.is_finite() or price < 0:
        errors["price"] = "Price must not be negative."
    if not fee.is_finite() or fee < 0:
        errors["fee"] = "Fee must not be negative."
    if not instrument.is_active:
        errors["instrument"] = f"{instrument.symbol} is inactive: it takes no new transactions."
    if timezone.is_naive(executed_at):
        errors["executed_at"] = "Execution time must carry a timezone."
    elif executed_at > timezone.now() + _FUTURE_TOLERANCE:
        errors["executed_at"] = "Execution time is in the future."
    if errors:
        raise ValidationError(errors)
    entry = Entry(side, quantity, price, fee, executed_at)
    return _fold(entries=_entries(portfolio=portfolio, instrument=instrument, add=entry), instrument=instrument, field="quantity")


def transaction_record(
    *,
    portfolio: Portfolio,
    instrument: Instrument,
    side: str,
    quantity: Decimal,
    price: Decimal,
    fee: Decimal = Decimal(0),
    executed_at: datetime,
    note: str = "",
) -> Transaction:
    with db_transaction.atomic():
        # Serialise ledger writes per portfolio so two sells cannot both pass the check.
        portfolio = Portfolio.objects.select_for_update().get(pk=portfolio.pk)
        transaction_check(
            portfolio=portfolio, instrument=instrument, side=side, quantity=quantity, price=price, fee=fee, executed_at=executed_at
        )
        entry = Transaction.objects.create(
            portfolio=portfolio,
            instrument=instrument,
            side=side,
            quantity=quantity,
            price=price,
            fee=fee,
            executed_at=executed_at,
            note=note,
        )
        holding_rebuild(portfolio=portfolio, instrument=instrument)
        _announce(portfolio)
    return entry


def transaction_delete(*, transaction: Transaction) -> None:
    """Remove a ledger entry, unless a later sell depends on it."""
    with db_transaction.atomic():
        portfolio = Portfolio.objects.select_for_update().get(pk=transaction.portfolio_id)
        instrument = transaction.instrument
        entries = _entries(portfolio=portfolio, instrument=instrument, exclude_id=transaction.pk)
        try:
            position_from_ledger(entries, symbol=instrument.symbol)
        except LedgerError as exc:
            raise ValidationError(f"Deleting this entry would break a later one. {exc}") from None
        transaction.delete()
        holding_rebuild(portfolio=portfolio, instrument=instrument)
        _announce(portfolio)


def holding_rebuild(*, portfolio: Portfolio, instrument: Instrument) -> Holding | None:
    """Derive the holding from the whole ledger; a closed position has no row."""
    position = _fold(entries=_entries(portfolio=portfolio, instrument=instrument), instrument=instrument, field="quantity")
    if not position.quantity:
        Holding.objects.filter(portfolio=portfolio, instrument=instrument).delete()
        return None
    holding, _ = Holding.objects.update_or_create(
        portfolio=portfolio,
        instrument=instrument,
        defaults={"quantity": position.quantity, "average_cost": position.average_cost},
    )
    return holding


def _announce(portfolio: Portfolio) -> None:
    streams.notify_user_on_commit(portfolio.owner_id, {"type": PORTFOLIO_RELOAD_EVENT, "portfolio_id": portfolio.pk})


def portfolio_delete(*, portfolio: Portfolio) -> None:
    """Remove a portfolio with its ledger and holdings; the owner's live pages reload without it."""
    with db_transaction.atomic():
        _announce(portfolio)
        portfolio.delete()


def portfolio_create(*, owner_id: int, name: str, base_currency: str = "USD") -> Portfolio:
    portfolio = Portfolio(owner_id=owner_id, name=name, base_currency=base_currency)
    portfolio.full_clean()
    portfolio.save()
    return portfolio
