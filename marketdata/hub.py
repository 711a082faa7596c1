"""In-worker market state per symbol: sequence, latest price, conflation.

Pure and synchronous: the worker feeds events in with `apply` and takes one
`PriceUpdate` per changed symbol out with `drain` at the end of each window,
and the last price of each symbol that moved in a minute with `take_minute`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from marketdata.events import MarketEvent, PriceUpdate, Quote, Trade
from marketdata.references import References


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


class Hub:
    def __init__(self, *, epoch: str, references: References | None = None) -> None:
        self.epoch = epoch
        self.references = references
        self.symbols: dict[str, SymbolState] = {}
        self._dirty: set[str] = set()
        self._in_minute: set[str] = set()

    def apply(self, event: MarketEvent) -> None:
        state = self.symbols.get(event.symbol)
        if state is None:
            state = self.symbols[event.symbol] = SymbolState()
        if isinstance(event, Trade):
            state.price = event.price
            state.traded = True
        elif isinstance(event, Quote):
            state.bid, state.ask = event.bid, event.ask
            # A quote-only market (FX) is valued at its mid; once trades are
            # seen, the last trade is the price and quotes only move bid/ask.
            if not state.traded:
                state.price = (event.bid + event.ask) / 2
        state.ts = event.ts
        state.source = event.source
        state.pending_ticks += 1
        self._dirty.add(event.symbol)
        self._in_minute.add(event.symbol)

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
                )
            )
            state.pending_ticks = 0
        self._dirty.clear()
        return updates

    def take_minute(self) -> dict[str, Decimal]:
        """Current price of every symbol with an event since the last call (the minute's last price)."""
        prices = {s: p for s in sorted(self._in_minute) if (p := self.symbols[s].price) is not None}
        self._in_minute.clear()
        return prices
