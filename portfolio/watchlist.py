"""A user's watchlist kept in memory and repriced as prices arrive: the `watchlist` rows of /ws/portfolio/ frames.

Loaded with the books (`portfolio.consumers`), on connect and after a change;
the dashboard follows the watched symbols' tickers on its process's hub beside
the held ones, so a watched price costs what a held one does: no database, a
row marked changed, sent with the next coalesced frame.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from marketdata.events import PriceUpdate, to_epoch_ms
from portfolio.ledger import plain
from portfolio.live import _newer, price_apply
from portfolio.valuation import Price

Row = dict[str, object]
HUNDREDTH = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Watched:
    instrument_id: int
    symbol: str
    name: str
    currency: str


class LiveWatchlist:
    def __init__(self, watched: Iterable[Watched], prices: dict[str, Price]) -> None:
        self.watched = {w.symbol: w for w in watched}
        self.prices = {symbol: price for symbol, price in prices.items() if symbol in self.watched}
        self._changed: set[str] = set()

    @classmethod
    def from_instruments(cls, instruments: Iterable[object], prices: dict[str, Price]) -> LiveWatchlist:
        return cls(
            (Watched(i.pk, i.symbol, i.name, i.quote_currency) for i in instruments),  # type: ignore[attr-defined]
            prices,
        )

    @property
    def symbols(self) -> set[str]:
        return set(self.watched)

    def apply(self, update: PriceUpdate) -> bool:
        """Take a watched symbol's price; False when not watched or not newer than the one held."""
        if update.symbol not in self.watched or not price_apply(self.prices, update):
            return False
        self._changed.add(update.symbol)
        return True

    def take_newer(self, prices: dict[str, Price]) -> None:
        """Hold the watched symbols' prices from `prices` where they are newer than the ones held."""
        for symbol, price in prices.items():
            current = self.prices.get(symbol)
            if symbol in self.watched and (current is None or _newer(price.epoch, price.seq, current)):
                self.prices[symbol] = price

    def row(self, symbol: str) -> Row:
        w = self.watched[symbol]
        price = self.prices.get(symbol)
        change = change_pct = None
        if price is not None and price.reference:
            change = price.value - price.reference
            change_pct = (change * 100 / price.reference).quantize(HUNDREDTH)
        return {
            "instrument_id": w.instrument_id,
            "symbol": symbol,
            "name": w.name,
            "currency": w.currency,
            "price": None if price is None else plain(price.value),
            "day_change": None if change is None else plain(change),
            "day_change_pct": None if change_pct is None else str(change_pct),
            "price_ts": None if price is None else to_epoch_ms(price.ts),
            "price_replay": price is not None and price.replay,
        }

    def snapshot(self) -> list[Row]:
        self._changed.clear()
        return [self.row(symbol) for symbol in self.watched]

    def take_changes(self) -> list[Row]:
        changed, self._changed = self._changed, set()
        return [self.row(symbol) for symbol in self.watched if symbol in changed]
