"""In-worker market state per symbol: sequence, latest price, the open minute's candle, order book, conflation.

Pure and synchronous: the worker feeds events in with `apply` and takes one
`PriceUpdate` per changed symbol out with `drain` at the end of each window,
and the candles of the minute that just closed with `take_minute`.

The published price is the last trade; a market that only quotes (FX) is
valued at its mid until a trade is seen. Depth data keeps an order book per
symbol (`marketdata.book`); while it is in sync its best levels are the bid
and ask, and a change of them is a tick like a quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from marketdata.book import OrderBook
from marketdata.events import BookDelta, BookSnapshot, Candle, Level, MarketEvent, PriceUpdate, Quote, Trade
from marketdata.references import References

ZERO = Decimal(0)


@dataclass(slots=True)
class SymbolState:
    seq: int = 0
    price: Decimal | None = None
    bid: Decimal | None = None
    ask: Decimal | None = None
    ts: datetime | None = None
    source: str = ""
    pending_ticks: int = 0
    traded: bool = False
    # The open minute's candle; `open` is None until the minute has a price.
    open: Decimal | None = None
    high: Decimal = ZERO
    low: Decimal = ZERO
    volume: Decimal = ZERO
    trades: int = 0


class Hub:
    def __init__(self, *, epoch: str, references: References | None = None, replay: bool = False) -> None:
        self.epoch = epoch
        self.references = references
        self.replay = replay
        self.symbols: dict[str, SymbolState] = {}
        self.books: dict[str, OrderBook] = {}
        self._dirty: set[str] = set()
        self._in_minute: set[str] = set()

    def apply(self, event: MarketEvent) -> None:
        symbol = event.symbol
        state = self.symbols.get(symbol)
        if state is None:
            state = self.symbols[symbol] = SymbolState()
        if isinstance(event, Trade):
            state.price = event.price
            state.traded = True
            state.volume += event.size
            state.trades += 1
        elif isinstance(event, Quote):
            self._quote(state, event.bid, event.ask)
        elif not self._book(state, event):
            return
        price = state.price
        if price is not None:
            if state.open is None:
                state.open = state.high = state.low = price
            elif price > state.high:
                state.high = price
            elif price < state.low:
                state.low = price
        state.ts = event.ts
        state.source = event.source
        state.pending_ticks += 1
        self._dirty.add(symbol)
        self._in_minute.add(symbol)

    @staticmethod
    def _quote(state: SymbolState, bid: Decimal, ask: Decimal) -> None:
        state.bid, state.ask = bid, ask
        if not state.traded:
            state.price = (bid + ask) / 2

    def _book(self, state: SymbolState, event: BookSnapshot | BookDelta) -> bool:
        """Apply depth; True when it moved the best bid or ask of a book in sync."""
        book = self.books.get(event.symbol)
        if book is None:
            book = self.books[event.symbol] = OrderBook(event.symbol)
        if not book.apply(event):
            return False
        if not book.synced:
            # Its levels are no longer known: withdraw them rather than publish them with later ticks.
            state.bid = state.ask = None
            return False
        bid, ask = book.best()
        if bid is None or ask is None or (bid == state.bid and ask == state.ask):
            return False
        self._quote(state, bid, ask)
        return True

    def book_top(self, symbol: str, depth: int) -> tuple[list[Level], list[Level]] | None:
        """The best `depth` levels each side, best first; None while the book is not in sync."""
        book = self.books.get(symbol)
        if book is None or not book.synced:
            return None
        return book.top(depth)

    def drain(self) -> list[PriceUpdate]:
        """Close the window: one update per symbol that changed, seq +1 each."""
        updates = []
        for symbol in sorted(self._dirty):
            state = self.symbols[symbol]
            if state.price is None or state.ts is None:
                continue  # nothing priceable yet (a quote side alone is not a price)
            state.seq += 1
            updates.append(
                PriceUpdate(
                    symbol=symbol,
                    seq=state.seq,
                    epoch=self.epoch,
                    price=state.price,
                    bid=state.bid,
                    ask=state.ask,
                    ts=state.ts,
                    source=state.source,
                    ticks=state.pending_ticks,
                    reference=None if self.references is None else self.references.reference(symbol, state.ts),
                    replay=self.replay,
                )
            )
            state.pending_ticks = 0
        self._dirty.clear()
        return updates

    def take_minute(self, start: datetime) -> list[Candle]:
        """Close the minute beginning at `start`: the candle of every symbol priced in it, and open the next."""
        candles = []
        for symbol in sorted(self._in_minute):
            state = self.symbols[symbol]
            if state.open is not None and state.price is not None:
                candles.append(Candle(symbol, start, state.open, state.high, state.low, state.price, state.volume, state.trades))
            state.open, state.volume, state.trades = None, ZERO, 0
        self._in_minute.clear()
        return candles
