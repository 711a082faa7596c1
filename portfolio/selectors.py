"""Reads of portfolios."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from marketdata.selectors import quotes_for_instruments
from portfolio.models import Holding, Portfolio
from portfolio.valuation import Line, Price


@dataclass(frozen=True)
class PortfolioBook:
    id: int
    name: str
    base_currency: str
    lines: tuple[Line, ...]


def portfolios_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Portfolio]:
    if not user.is_authenticated:
        return Portfolio.objects.none()
    return Portfolio.objects.filter(owner_id=user.pk).order_by("name")


def holdings_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Holding]:
    return Holding.objects.filter(portfolio__in=portfolios_for_user(user=user)).select_related("instrument")


def live_books_for_user(*, user: AbstractBaseUser | AnonymousUser) -> tuple[list[PortfolioBook], dict[str, Price]]:
    """Everything the live portfolio stream needs, in three queries: books and latest prices."""
    portfolios = list(portfolios_for_user(user=user))
    holdings = list(holdings_for_user(user=user).order_by("instrument__symbol"))
    quotes = quotes_for_instruments(instrument_ids={h.instrument_id for h in holdings})
    books = [
        PortfolioBook(
            id=p.pk,
            name=p.name,
            base_currency=p.base_currency,
            lines=tuple(
                Line(h.instrument.symbol, h.instrument.name, h.instrument.quote_currency, h.quantity, h.average_cost)
                for h in holdings
                if h.portfolio_id == p.pk
            ),
        )
        for p in portfolios
    ]
    symbols = {h.instrument_id: h.instrument.symbol for h in holdings}
    prices = {symbols[i]: Price(q.price, q.exchange_ts, q.seq, q.epoch) for i, q in quotes.items()}
    return books, prices
