"""Template filters for ledger pages."""

from __future__ import annotations

from decimal import Decimal

from django import template

from portfolio.ledger import plain as plain_decimal

register = template.Library()


@register.filter
def plain(value: Decimal | None) -> str:
    """150, 0.5, 1000 (never 1E+3), as the ledger's own messages spell numbers."""
    return "" if value is None else plain_decimal(value)
