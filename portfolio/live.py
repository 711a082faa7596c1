"""A user's portfolios kept in memory and revalued as prices arrive.

`LiveBook` is what the portfolio consumer holds per connection: loaded once (and
again after a ledger change), then updated from price events with no database
access. Each portfolio is a `View` that knows which rows depend on which
symbol (the instrument itself, or an FX pair on the way to the base currency)
and revalues only those, with the functions of `portfolio.valuation`. The
combined view adds the portfolios' rows up in a currency the user picks; its
past figures are converted at the rates of their days once per build
(`portfolio.pastfx`), so a tick only converts what had no rate of its day.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import fields, replace
from decimal import Decimal
from functools import cached_property, partial

from marketdata.events import PriceUpdate, to_epoch_ms
from portfolio.ledger import plain
from portfolio.pastfx import Fallback, PastFlows, past_flows
from portfolio.selectors import Market, PortfolioBook
from portfolio.valuation import (
    NO_RATE,
    Cash,
    Flows,
    Line,
    Price,
    RowValue,
    RunningTotals,
    Slice,
    Tag,
    Totals,
    convert,
    fx_route,
    route_rate,
    value_cash,
    value_holding,
)

Frame = dict[str, object]
Item = Line | Cash
CENT = Decimal("0.01")
RATE_PLACES = Decimal("1e-8")
COMBINED = "combined"


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(CENT))


def _number(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


class View:
    """One portfolio in its base currency; rows are revalued only when a price they depend on moves."""

    def __init__(self, book: PortfolioBook, market: Market) -> None:
        self.book = book
        self.id: int | str = book.id
        self.name = book.name
        self.currency = book.base_currency
        self.market = market
        self.items: dict[str, Item] = {line.key: line for line in book.lines} | {cash.key: cash for cash in book.cash}
        self.routes = {item.currency: fx_route(item.currency, self.currency, market.pairs) for item in self.items.values()}
        self.depends: dict[str, set[str]] = {}
        for key, item in self.items.items():
            symbols = [leg[0] for leg in self.routes[item.currency] or ()]
            if isinstance(item, Line):
                symbols.append(item.symbol)
            for symbol in symbols:
                self.depends.setdefault(symbol, set()).add(key)
        self._recount()

    def _recount(self) -> None:
        """Value every row and sum them afresh (at the start, and with every snapshot, so rounding never drifts)."""
        cash = [key for key, item in self.items.items() if isinstance(item, Cash)]
        order = {key: i for i, key in enumerate([*(key for key in self.items if key not in cash), *cash])}
        self.running = RunningTotals(order=order, cash=cash, tags=self.tags)
        self.rows: dict[str, RowValue] = self.running.rows
        self.revalue(self.items)

    @property
    def symbols(self) -> set[str]:
        return set(self.depends)

    def revalue(self, keys: Iterable[str]) -> None:
        prices = self.market.prices
        for key in keys:
            item = self.items[key]
            route = self.routes[item.currency]
            rate, reference_rate = route_rate(route, prices), route_rate(route, prices, reference=True)
            if isinstance(item, Line):
                self.running.set(key, value_holding(item, prices.get(item.symbol), rate, reference_rate))
            else:
                self.running.set(key, value_cash(item, rate, reference_rate))

    def affected(self, symbols: set[str]) -> set[str]:
        return {key for symbol in symbols for key in self.depends.get(symbol, ())}

    def flows(self) -> Flows:
        return self.book.flows

    def totals(self) -> Totals:
        return self.running.totals(self.flows())

    @cached_property
    def tags(self) -> dict[str, Tag]:
        """Where each row counts in the allocation; fixed for the view's life, so worked out once."""
        labels = self.market.asset_classes
        tags = {}
        for key, item in self.items.items():
            if isinstance(item, Line):
                tags[key] = Tag(
                    (key, item.name or key),
                    (item.asset_class, labels.get(item.asset_class, item.asset_class)),
                    (item.currency, item.currency),
                )
            else:
                tags[key] = Tag((key, f"Cash {item.currency}"), ("cash", "Cash"), (item.currency, item.currency))
        return tags

    def allocation(self) -> dict[str, list[Slice]]:
        return self.running.allocation()

    def history(self) -> list[tuple[int, Decimal]]:
        return [(to_epoch_ms(minute), value) for minute, value in self.book.history]

    # ------------------------------------------------------------ frames

    def frame(self, keys: Iterable[str] | None = None) -> Frame:
        """The whole view (a snapshot, with history) or, given `keys`, those rows with fresh totals (an update)."""
        if keys is None:
            self._recount()
        frame: Frame = {
            "id": self.id,
            "totals": _totals(self.totals()),
            "allocation": {
                dimension: [{"key": s.key, "label": s.label, "value": _money(s.value), "weight": _money(s.weight)} for s in slices]
                for dimension, slices in self.allocation().items()
            },
            "rows": [self._row(key) for key in (self.items if keys is None else sorted(keys))],
        }
        if keys is None:
            frame.update(name=self.name, currency=self.currency, history=[[ms, _money(v)] for ms, v in self.history()])
        return frame

    def _row(self, key: str) -> Frame:
        item, row = self.items[key], self.rows[key]
        frame: Frame = {
            "key": key,
            "currency": item.currency,
            "fx_rate": None if row.rate is None else _number(row.rate.quantize(RATE_PLACES)),
            "market_value": _money(row.market_value),
            "day_change": _money(row.day_change),
            "day_change_pct": _money(row.day_change_pct),
            "status": row.status,
        }
        if isinstance(item, Cash):
            frame.update(kind="cash", symbol=item.currency, name=f"Cash {item.currency}", asset_class="cash", quantity=_money(item.amount))
            frame.update(average_cost=None, price=None, price_ts=None, price_seq=None, price_epoch=None, price_replay=False)
            frame.update(cost=None, unrealised_pnl=None, unrealised_pnl_pct=None)
            return frame
        price = self.market.prices.get(item.symbol)
        frame.update(
            kind="holding",
            symbol=item.symbol,
            name=item.name,
            asset_class=item.asset_class,
            quantity=_number(item.quantity),
            average_cost=_number(item.cost / item.quantity) if item.quantity else None,
            price=None if price is None else _number(price.value),
            price_ts=None if price is None else to_epoch_ms(price.ts),
            price_seq=None if price is None else price.seq,
            price_epoch=None if price is None else price.epoch,
            price_replay=price is not None and price.replay,
            cost=_money(row.cost),
            unrealised_pnl=_money(row.pnl),
            unrealised_pnl_pct=_money(row.pnl_pct),
        )
        return frame


def _totals(t: Totals) -> Frame:
    frame: Frame = {
        name: _money(getattr(t, name))
        for name in (
            "total_value",
            "market_value",
            "cash",
            "cost",
            "unrealised_pnl",
            "unrealised_pnl_pct",
            "realised_pnl",
            "dividends",
            "interest",
            "fees",
            "net_deposits",
            "day_change",
            "day_change_pct",
        )
    }
    frame["missing"] = [{"key": key, "reason": reason} for key, reason in t.missing]
    return frame


class CombinedView(View):
    """All portfolios added up in one currency: each portfolio's rows converted at the current rate, merged by key;
    its past figures (realised P&L, dividends, interest, fees, net deposits) at the rates of their days."""

    def __init__(self, views: list[View], currency: str, market: Market) -> None:
        self.views = views
        self.id = COMBINED
        self.name = "All portfolios"
        self.currency = currency
        self.market = market
        self.routes = {view.currency: fx_route(view.currency, currency, market.pairs) for view in views}
        self.past = self._past()
        self.items = {}
        for view in views:
            for key, item in view.items.items():
                self.items[key] = _merge(self.items.get(key), item)
        self.depends = {}
        for view in views:
            for symbol, keys in view.depends.items():
                self.depends.setdefault(symbol, set()).update(keys)
            for symbol, _ in self.routes[view.currency] or ():
                self.depends.setdefault(symbol, set()).update(view.items)
        self._recount()

    def revalue(self, keys: Iterable[str]) -> None:
        # A move of any pair on a portfolio's route marks all its rows, so the rates are fresh after every revalue.
        prices = self.market.prices
        self.rates = {
            view.id: (route_rate(route, prices), route_rate(route, prices, reference=True))
            for view in self.views
            for route in [self.routes[view.currency]]
        }
        for key in keys:
            self.running.set(key, convert((view.rows[key], *self.rates[view.id]) for view in self.views if key in view.rows))

    def _past(self) -> dict[int | str, PastFlows]:
        """Each foreign portfolio's past figures in this view's currency at the rates of their days (on build: when
        the books load or reload, or the currency changes; never per tick)."""
        history = self.market.fx_history
        past: dict[int | str, PastFlows] = {}
        for view in self.views:
            days = view.book.past
            if view.currency == self.currency or days is None or history is None:
                continue  # the same currency needs no rate; without the days (not loaded), today's rate as before
            rate_on = partial(history.rate, view.currency, self.currency)
            past[view.id] = past_flows(days, base=view.currency, target=self.currency, rate_on=rate_on)
        return past

    def flows(self) -> Flows:
        total = {f.name: Decimal(0) for f in fields(Flows)}
        for view in self.views:
            rate = self.rates[view.id][0]
            if rate is None:
                continue  # the portfolio is missing as a whole (`totals`)
            past = self.past.get(view.id)
            if past is None:
                for name in total:
                    total[name] += getattr(view.book.flows, name) * rate
            else:  # fixed since the build, but for what had no rate of its day
                converted = past.at(rate)
                for name in total:
                    total[name] += getattr(converted, name)
        return Flows(**total)

    def frame(self, keys: Iterable[str] | None = None) -> Frame:
        frame = super().frame(keys)
        if keys is None:
            # Past figures that had no FX close of their day, converted at today's rate: named, never silent.
            frame["past_fx"] = [
                {
                    "portfolio": view.id,
                    "name": view.name,
                    "pair": f.pair,
                    "from": f.first.isoformat(),
                    "to": f.last.isoformat(),
                    "days": f.days,
                    "message": f.message,
                }
                for view in self.views
                if (f := self._fallback(view)) is not None
            ]
        return frame

    def _fallback(self, view: View) -> Fallback | None:
        past = self.past.get(view.id)
        return None if past is None else past.fallback

    def totals(self) -> Totals:
        # A portfolio that cannot be converted is missing as a whole, ledger totals included.
        unconverted = tuple((f"portfolio:{view.id}", NO_RATE) for view in self.views if self.rates[view.id][0] is None)
        view_totals = super().totals()
        return replace(view_totals, missing=view_totals.missing + unconverted) if unconverted else view_totals

    def history(self) -> list[tuple[int, Decimal]]:
        summed: dict[int, Decimal] = {}
        for view in self.views:
            rate = self.rates[view.id][0]
            if rate is not None:
                for ms, value in view.history():
                    summed[ms] = summed.get(ms, Decimal(0)) + value * rate
        return sorted(summed.items())


def _merge(a: Item | None, b: Item) -> Item:
    if a is None:
        return b
    if isinstance(a, Line) and isinstance(b, Line):
        return Line(a.symbol, a.name, a.asset_class, a.currency, a.quantity + b.quantity, a.cost + b.cost, a.cost_base + b.cost_base)
    assert isinstance(a, Cash) and isinstance(b, Cash)
    return Cash(a.currency, a.amount + b.amount)


def _epoch_order(epoch: str) -> tuple[int, int, str]:
    """Epochs are the millisecond a symbol's stream started (`marketdata.worker.loop`): numbers, compared as such."""
    try:
        return (1, int(epoch), "")
    except ValueError:
        return (0, 0, epoch)


def _newer(epoch: str, seq: int, current: Price) -> bool:
    """Whether a price (`epoch`, `seq`) supersedes `current`. Within one stream (same epoch): by seq. Across
    streams: the newer epoch wins, even with an older timestamp (a restarted worker, a replay starting over, a
    standby taking over all start a new epoch, which is newer than the stream they replace); a price of an older
    epoch is a replaced producer's and is dropped."""
    if epoch == current.epoch:
        return seq > current.seq
    return _epoch_order(epoch) > _epoch_order(current.epoch)


def price_apply(prices: dict[str, Price], update: PriceUpdate) -> bool:
    """Hold `update` as its symbol's price unless the one held is as new (`_newer`); a price without a reference keeps
    the one held. Shared by everything that keeps prices live: books, the watchlist, the worker's portfolio alerts."""
    current = prices.get(update.symbol)
    if current is not None and not _newer(update.epoch, update.seq, current):
        return False
    reference = update.reference if update.reference is not None else (current.reference if current else None)
    prices[update.symbol] = Price(update.price, update.ts, update.seq, update.epoch, reference, update.replay)
    return True


class LiveBook:
    """Every view of one user's portfolios, with the prices they need."""

    def __init__(self, books: list[PortfolioBook], market: Market, *, currency: str | None = None) -> None:
        self._changed: set[str] = set()
        self._build(books, market, currency)

    def _build(self, books: list[PortfolioBook], market: Market, currency: str | None) -> None:
        self.market = market
        self.views = [View(book, market) for book in books]
        self.currency = currency or (self.views[0].currency if self.views else "USD")
        self.combined = CombinedView(self.views, self.currency, market) if len(self.views) > 1 else None

    @property
    def all_views(self) -> list[View]:
        return [*self.views, *([self.combined] if self.combined else [])]

    @property
    def symbols(self) -> set[str]:
        """What to subscribe to: held instruments and the FX pairs the views convert through."""
        return {symbol for view in self.all_views for symbol in view.symbols}

    @property
    def currencies(self) -> list[str]:
        """Currencies the combined view can be shown in."""
        offered = {c for pair in self.market.pairs for c in pair} | {view.currency for view in self.views}
        return sorted(offered)

    def replace(self, books: list[PortfolioBook], market: Market) -> None:
        """After a ledger change: new books; keep whichever price is newer."""
        prices = dict(self.market.prices)
        for symbol, price in market.prices.items():
            current = prices.get(symbol)
            if current is None or _newer(price.epoch, price.seq, current):
                prices[symbol] = price
        self._build(books, replace(market, prices=prices), self.currency)

    def set_currency(self, currency: str) -> None:
        self.currency = currency
        self.combined = CombinedView(self.views, currency, self.market) if len(self.views) > 1 else None

    def apply(self, update: PriceUpdate) -> bool:
        """Take a price; False when it is not newer than the one held."""
        if not price_apply(self.market.prices, update):
            return False
        self._changed.add(update.symbol)
        return True

    def snapshot(self) -> Frame:
        self._changed.clear()
        return {
            "type": "snapshot",
            "view_currencies": self.currencies,
            "combined_currency": self.currency,
            "portfolios": [view.frame() for view in self.views],
            "combined": self.combined.frame() if self.combined else None,
        }

    def take_changes(self) -> Frame | None:
        """Revalue the rows the changed prices touch; a frame with them and the fresh totals of their views."""
        changed, self._changed = self._changed, set()
        frames: dict[int | str, Frame] = {}
        for view in self.all_views:
            keys = view.affected(changed)
            if keys:
                view.revalue(keys)
                frames[view.id] = view.frame(keys)
        if not frames:
            return None
        frame: Frame = {"type": "update", "portfolios": [f for vid, f in frames.items() if vid != COMBINED]}
        if COMBINED in frames:
            frame["combined"] = frames[COMBINED]
        return frame
