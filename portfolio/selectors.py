"""Reads of portfolios."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import groupby

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.utils import timezone

from marketdata.models import AssetClass, Instrument, Quote
from portfolio.alerts import Rule, portfolio_key, portfolio_series
from portfolio.daily import CloseHistory
from portfolio.ledger import Entry, LedgerError
from portfolio.models import Alert, CashBalance, Holding, Notification, Portfolio, PortfolioValue, Transaction, WatchlistItem
from portfolio.pastfx import FlowDay, FxHistory, flow_days
from portfolio.performance import close_history_load, fx_pairs_all
from portfolio.valuation import Cash, Flows, Line, Pairs, Price, fx_pair

log = logging.getLogger(__name__)

HISTORY_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class PortfolioBook:
    """One portfolio as valuation needs it: positions, cash and ledger totals (base currency)."""

    id: int
    name: str
    base_currency: str
    lines: tuple[Line, ...]
    cash: tuple[Cash, ...] = ()
    flows: Flows = field(default_factory=Flows)
    history: tuple[tuple[datetime, Decimal], ...] = ()
    # What each day's entries added to `flows`, for the combined view's past figures at past rates
    # (`portfolio.pastfx`); None when not loaded (a single portfolio needs no conversion).
    past: tuple[FlowDay, ...] | None = None


@dataclass(frozen=True)
class Market:
    """What valuation needs from market data: latest prices and the FX pairs on offer."""

    prices: dict[str, Price]
    pairs: Pairs
    asset_classes: dict[str, str]  # asset class key → label
    fx_history: FxHistory | None = None  # daily FX closes, for past figures at past rates


def portfolios_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Portfolio]:
    if not user.is_authenticated:
        return Portfolio.objects.none()
    return Portfolio.objects.filter(owner_id=user.pk).order_by("name")


def active_portfolios_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Portfolio]:
    """The user's portfolios that are not archived: the ones the dashboard and the live API show."""
    return portfolios_for_user(user=user).filter(archived_at__isnull=True)


def holdings_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Holding]:
    return Holding.objects.filter(portfolio__in=portfolios_for_user(user=user)).select_related("instrument")


def _line(h: Holding) -> Line:
    i = h.instrument
    return Line(i.symbol, i.name, i.asset_class, i.quote_currency, h.quantity, h.cost, h.cost_base)


def books_for_portfolios(portfolios: QuerySet[Portfolio], *, history_since: datetime | None = None) -> list[PortfolioBook]:
    """Books of the given portfolios in three queries (four with history since a time)."""
    portfolio_list = list(portfolios)
    ids = [p.pk for p in portfolio_list]
    lines: dict[int, list[Line]] = {pk: [] for pk in ids}
    for h in Holding.objects.filter(portfolio_id__in=ids).select_related("instrument").order_by("instrument__symbol"):
        lines[h.portfolio_id].append(_line(h))
    cash: dict[int, list[Cash]] = {pk: [] for pk in ids}
    for c in CashBalance.objects.filter(portfolio_id__in=ids).order_by("currency"):
        cash[c.portfolio_id].append(Cash(c.currency, c.amount))
    history: dict[int, list[tuple[datetime, Decimal]]] = {pk: [] for pk in ids}
    if history_since is not None:
        rows = PortfolioValue.objects.filter(portfolio_id__in=ids, minute__gte=history_since).order_by("minute")
        for pk, minute, value in rows.values_list("portfolio_id", "minute", "value"):
            history[pk].append((minute, value))
    return [
        PortfolioBook(
            id=p.pk,
            name=p.name,
            base_currency=p.base_currency,
            lines=tuple(lines[p.pk]),
            cash=tuple(cash[p.pk]),
            flows=Flows(p.realised_pnl, p.dividends, p.interest, p.fees, p.net_deposits),
            history=tuple(history[p.pk]),
        )
        for p in portfolio_list
    ]


def fx_pairs() -> Pairs:
    """(base, quote) → symbol of every active FX instrument whose symbol names its pair."""
    fx = Instrument.objects.filter(asset_class=AssetClass.FX, is_active=True).values_list("symbol", "quote_currency")
    return {pair: symbol for symbol, quote in fx if (pair := fx_pair(symbol, quote)) is not None}


def market_for(*, symbols: set[str]) -> Market:
    """Latest stored prices of `symbols` and of every FX instrument, with the pairs those offer; two queries."""
    pairs = fx_pairs()
    quotes = Quote.objects.filter(instrument__symbol__in=symbols | set(pairs.values())).select_related("instrument")
    prices = {q.instrument.symbol: Price(q.price, q.exchange_ts, q.seq, q.epoch, q.reference_price) for q in quotes}
    return Market(prices=prices, pairs=pairs, asset_classes=dict(AssetClass.choices))


def past_for_portfolios(ids: Iterable[int]) -> dict[int, tuple[FlowDay, ...] | None]:
    """Each portfolio's past figures by day and currency (`portfolio.pastfx.flow_days`): its ledger replayed, in one
    query streamed in chunks. A ledger that does not fold is logged and gets None (its past figures then convert at
    today's rate)."""
    ids = list(ids)
    past: dict[int, tuple[FlowDay, ...] | None] = dict.fromkeys(ids, ())
    rows = (
        Transaction.objects.filter(portfolio_id__in=ids)
        .order_by("portfolio_id", "executed_at", "id")
        .values_list("portfolio_id", "kind", "executed_at", "currency", "instrument__symbol", "quantity", "price", "fee", "fx_rate", "id")
    )
    for pk, group in groupby(rows.iterator(chunk_size=2000), key=lambda row: row[0]):
        entries = (Entry(k, at, ccy, sym or "", q, p, f, fx, ref=ref) for _, k, at, ccy, sym, q, p, f, fx, ref in group)
        try:
            past[pk] = flow_days(entries)
        except LedgerError as exc:
            log.error("portfolio %s: its ledger does not fold (%s); its past figures convert at today's rate", pk, exc)
            past[pk] = None
    return past


def fx_history_for(*, since: date | None) -> FxHistory:
    """The daily closes of every FX instrument from `since` (a week more, for the close carried into it); two queries."""
    pairs = fx_pairs_all()
    if since is None:
        return FxHistory(CloseHistory(()), pairs)
    return FxHistory(close_history_load(symbols=set(pairs.values()), since=since), pairs)


def live_books_for_user(*, user: AbstractBaseUser | AnonymousUser, portfolio_id: int | None = None) -> tuple[list[PortfolioBook], Market]:
    """Everything the live portfolio stream needs: the user's books (or the one with `portfolio_id`) with 24 h of
    history, and the market.

    With two portfolios or more (a combined view), also each one's past figures by day and the daily FX history,
    so the combined view converts them at the rates of their days (three more queries, whatever the books hold)."""
    portfolios = active_portfolios_for_user(user=user)
    if portfolio_id is not None:
        portfolios = portfolios.filter(pk=portfolio_id)
    books = books_for_portfolios(portfolios, history_since=timezone.now() - HISTORY_WINDOW)
    market = market_for(symbols={line.symbol for book in books for line in book.lines})
    if len(books) < 2:
        return books, market
    past = past_for_portfolios(book.id for book in books)
    first = min((days[0].day for days in past.values() if days), default=None)
    books = [replace(book, past=past[book.id]) for book in books]
    return books, replace(market, fx_history=fx_history_for(since=first))


# ---------------------------------------------------------------- watchlist and alerts


def watchlist_for_user(*, user: AbstractBaseUser | AnonymousUser) -> list[Instrument]:
    """The instruments on the user's watchlist, in the order added."""
    if not user.is_authenticated:
        return []
    return [item.instrument for item in WatchlistItem.objects.filter(user_id=user.pk).select_related("instrument")]


def alerts_for_user(*, user: AbstractBaseUser | AnonymousUser) -> QuerySet[Alert]:
    if not user.is_authenticated:
        return Alert.objects.none()
    return Alert.objects.filter(user_id=user.pk).select_related("instrument", "portfolio").order_by("id")


def notifications_recent(*, user: AbstractBaseUser | AnonymousUser, limit: int = 20) -> list[Notification]:
    if not user.is_authenticated:
        return []
    return list(Notification.objects.filter(user_id=user.pk).select_related("alert").order_by("-fired_at", "-id")[:limit])


def alert_rules_active() -> list[Rule]:
    """Every active alert as the feed worker's index holds it (`portfolio.alerts`); one query. A portfolio alert's
    "symbol" is its portfolio's series (`portfolio.alerts.portfolio_key`)."""
    rows = Alert.objects.filter(active=True).values_list(
        "id", "instrument__symbol", "portfolio_id", "kind", "threshold", "hysteresis", "window_minutes", "armed"
    )
    return [
        Rule(
            pk,
            symbol if portfolio is None else portfolio_key(portfolio, portfolio_series(kind)),
            kind,
            threshold,
            hysteresis,
            window,
            armed,
        )
        for pk, symbol, portfolio, kind, threshold, hysteresis, window, armed in rows
    ]


def portfolio_views_load(*, portfolio_ids: Iterable[int]) -> tuple[list[PortfolioBook], Market]:
    """The books of these portfolios and the market they need (latest stored prices), for the feed worker's portfolio
    alerts (`portfolio.alert_watch`): a fixed number of queries, whatever they hold."""
    books = books_for_portfolios(Portfolio.objects.filter(pk__in=list(portfolio_ids)).order_by("pk"))
    return books, market_for(symbols={line.symbol for book in books for line in book.lines})


def watchlist_live_load(*, user: AbstractBaseUser | AnonymousUser) -> tuple[list[Instrument], dict[str, Price]]:
    """The watchlist's instruments with their latest stored prices, for `portfolio.watchlist.LiveWatchlist`; two queries."""
    instruments = watchlist_for_user(user=user)
    quotes = Quote.objects.filter(instrument__in=instruments).select_related("instrument")
    prices = {q.instrument.symbol: Price(q.price, q.exchange_ts, q.seq, q.epoch, q.reference_price) for q in quotes}
    return instruments, prices
