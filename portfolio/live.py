"""A user's portfolios kept in memory and revalued as prices arrive.

`LiveBook` is what the portfolio consumer holds per connection: loaded once,
then updated from price events with no database access. It accumulates the
symbols that changed so the consumer can send one coalesced frame per window.
"""

from __future__ import annotations

from decimal import Decimal

from marketdata.events import PriceUpdate, to_epoch_ms
from portfolio.selectors import PortfolioBook
from portfolio.valuation import CENT, Line, Price, RowValue, Totals, totals, value_row

Frame = dict[str, object]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(CENT))


def _number(value: Decimal) -> str:
    return f"{value.normalize():f}"


class LiveBook:
    def __init__(self, books: list[PortfolioBook], prices: dict[str, Price]) -> None:
        self.books = books
        self.prices = dict(prices)
        self._changed: set[str] = set()

    @property
    def symbols(self) -> set[str]:
        return {line.symbol for book in self.books for line in book.lines}

    def replace(self, books: list[PortfolioBook], prices: dict[str, Price]) -> None:
        """After a ledger change: new holdings; keep whichever price is newer."""
        for symbol, price in prices.items():
            current = self.prices.get(symbol)
            if current is None or price.ts > current.ts:
                self.prices[symbol] = price
        self.books = books
        self._changed.clear()

    def apply(self, update: PriceUpdate) -> bool:
        """Take a price; False when it is not newer than the one held."""
        current = self.prices.get(update.symbol)
        if current is not None and current.epoch == update.epoch and update.seq <= current.seq:
            return False  # duplicate or out of order within one worker run
        if current is not None and update.ts < current.ts:
            return False
        self.prices[update.symbol] = Price(update.price, update.ts, update.seq, update.epoch)
        self._changed.add(update.symbol)
        return True

    def snapshot(self) -> Frame:
        return {"type": "snapshot", "portfolios": [self._portfolio(book, None) for book in self.books]}

    def take_changes(self) -> Frame | None:
        """Changed rows and new totals of every portfolio that holds a changed symbol."""
        changed, self._changed = self._changed, set()
        portfolios = [self._portfolio(book, changed) for book in self.books if any(line.symbol in changed for line in book.lines)]
        return {"type": "update", "portfolios": portfolios} if portfolios else None

    def _portfolio(self, book: PortfolioBook, only: set[str] | None) -> Frame:
        rows = []
        for line in book.lines:
            price = self.prices.get(line.symbol)
            rows.append((line, price, value_row(line, price)))
        book_totals = totals(((line, value) for line, _, value in rows), base_currency=book.base_currency)
        frame: Frame = {
            "id": book.id,
            "totals": self._totals(book_totals, book.base_currency),
            "rows": [self._row(line, price, value) for line, price, value in rows if only is None or line.symbol in only],
        }
        if only is None:
            frame.update(name=book.name, base_currency=book.base_currency)
        return frame

    @staticmethod
    def _row(line: Line, price: Price | None, value: RowValue) -> Frame:
        return {
            "symbol": line.symbol,
            "name": line.name,
            "currency": line.currency,
            "quantity": _number(line.quantity),
            "average_cost": _number(line.average_cost),
            "price": None if price is None else _number(price.value),
            "price_ts": None if price is None else to_epoch_ms(price.ts),
            "cost": _money(value.cost),
            "market_value": _money(value.market_value),
            "pnl": _money(value.pnl),
            "pnl_pct": _money(value.pnl_pct),
        }

    @staticmethod
    def _totals(t: Totals, currency: str) -> Frame:
        return {
            "currency": currency,
            "market_value": _money(t.market_value),
            "cost": _money(t.cost),
            "pnl": _money(t.pnl),
            "pnl_pct": _money(t.pnl_pct),
            "excluded": list(t.excluded),
        }
